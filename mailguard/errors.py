"""The one exception tree of mailguard.

    Exception
    └── MailguardError          anything mailguard raises on purpose
        ├── ConfigError         bad configuration, found at start-up
        ├── ModelError          a model artifact is missing, tampered with or of the wrong schema
        ├── ScorerError         a scorer failed (recorded in the result; never escapes a scan)
        ├── StoreError          the store could not be read or written
        ├── VirusScanError      the virus scanner could not answer
        └── MilterError         the milter daemon could not start or talk to the MTA

Callers can catch ``MailguardError`` for every failure that is ours.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "MailguardError",
    "MilterError",
    "ModelError",
    "ScorerError",
    "StoreError",
    "VirusScanError",
]


class MailguardError(Exception):
    """Base of every error mailguard raises on purpose."""


class ConfigError(MailguardError):
    """The configuration is invalid; raised at start-up, never mid-scan."""


class ModelError(MailguardError):
    """A model artifact is missing, does not match its manifest, or has the wrong schema."""


class ScorerError(MailguardError):
    """A scorer could not produce its hits."""


class StoreError(MailguardError):
    """The store could not be read or written."""


class VirusScanError(MailguardError):
    """The virus scanner could not give an answer."""


class MilterError(MailguardError):
    """The milter daemon could not start or talk to the MTA."""
