"""mailguard: spam and virus filtering for mail servers.

    from mailguard import Scanner, Envelope
    with Scanner() as scanner:                       # shipped model, SQLite store
        result = scanner.scan_sync(raw_bytes, Envelope(rcpt_to=("bob@example.org",)))
        result.verdict.action, result.score, result.contributions

From asyncio code, ``await scanner.scan(raw_bytes, envelope)``.
"""

from .config import Config, load_config
from .errors import ConfigError, MailguardError, MilterError, ModelError, ScorerError, StoreError, VirusScanError
from .message.context import Envelope, MessageContext
from .model import ModelBundle, load_model
from .policy import Thresholds
from .result import Action, Contribution, Hit, ScanResult, ScorerFailure, Verdict
from .scanner import Scanner
from .scorer import Scorer, ScorerInfo, Services

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
