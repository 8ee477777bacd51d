"""mailguard: spam and virus filtering for mail servers.

    from mailguard import Scanner, Envelope
    with Scanner() as scanner:                       # shipped model, SQLite store
        result = scanner.scan_sync(raw_bytes, Envelope(rcpt_to=("bob@example.org",)))
        result.verdict.action, result.score, result.contributions

From asyncio code, ``await scanner.scan(raw_bytes, envelope)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_attributes

# What ``from mailguard import X`` gives, and the module it lives in, imported on first use
# (mailguard/lazy.py says why).
_EXPORTS = {
    "Action": "result", "Contribution": "result", "Hit": "result", "ScanResult": "result",
    "ScorerFailure": "result", "Verdict": "result",
    "Config": "config", "load_config": "config",
    "ConfigError": "errors", "MailguardError": "errors", "MilterError": "errors", "ModelError": "errors",
    "ScorerError": "errors", "StoreError": "errors", "VirusScanError": "errors",
    "Envelope": "message.context", "MessageContext": "message.context",
    "ModelBundle": "model", "load_model": "model",
    "Thresholds": "policy",
    "Scanner": "scanner",
    "Scorer": "scorer", "ScorerInfo": "scorer", "Services": "scorer",
}

if TYPE_CHECKING:
    from .config import Config, load_config
    from .errors import ConfigError, MailguardError, MilterError, ModelError, ScorerError, StoreError, VirusScanError
    from .message.context import Envelope, MessageContext
    from .model import ModelBundle, load_model
    from .policy import Thresholds
    from .result import Action, Contribution, Hit, ScanResult, ScorerFailure, Verdict
    from .scanner import Scanner
    from .scorer import Scorer, ScorerInfo, Services


__getattr__ = lazy_attributes(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__version__ = "0.1.0"

__all__ = [
    "Action",
    "Config",
    "ConfigError",
    "Contribution",
    "Envelope",
    "Hit",
    "MailguardError",
    "MessageContext",
    "MilterError",
    "ModelBundle",
    "ModelError",
    "ScanResult",
    "Scanner",
    "Scorer",
    "ScorerError",
    "ScorerFailure",
    "ScorerInfo",
    "Services",
    "StoreError",
    "Thresholds",
    "Verdict",
    "VirusScanError",
    "load_config",
    "load_model",
]
