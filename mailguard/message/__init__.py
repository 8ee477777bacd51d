"""The message as scorers see it: SMTP envelope plus raw bytes, parsed once into bounded, lazy
views (`context`), and the parsers behind those views: charsets and encoded words
(`textdecode`), HTML to text (`html`), URLs and registered domains (`urls`), words
(`words`), addresses (`addresses`), Received hops and the client they name (`relay`), and
the bounds on all of it (`limits`). Nothing here imports the rest of mailguard but `errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use (see mailguard/__init__.py): the parsers pull in numpy, lxml and the
# charset detector, which importing one small module of this package should not cost.
_EXPORTS = {"Limits": "limits", **{name: "context" for name in ("Attachment", "Envelope", "MessageContext", "PartInfo", "ReceivedHop", "TextPart")}}

if TYPE_CHECKING:
    from .context import Attachment, Envelope, MessageContext, PartInfo, ReceivedHop, TextPart
    from .limits import Limits


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

__all__ = ["Attachment", "Envelope", "Limits", "MessageContext", "PartInfo", "ReceivedHop", "TextPart"]
