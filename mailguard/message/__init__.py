"""The message as scorers see it: SMTP envelope plus raw bytes, parsed once into bounded, lazy
views (`context`), and the parsers behind those views: charsets and encoded words
(`textdecode`), HTML to text (`html`), URLs and registered domains (`urls`), words
(`words`), addresses (`addresses`), Received hops and the client they name (`relay`), the
headers a mail store or a filter adds after delivery and the Return-Path delivery will
write (`local_headers`), and the bounds on all of it (`limits`). Nothing here imports the
rest of mailguard but `errors` and `lazy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

# Imported on first use (mailguard/lazy.py): the parsers pull in numpy, lxml and the charset
# detector, which importing one small module of this package (addresses, limits) should not cost.
_EXPORTS = {"Limits": "limits", **{name: "context" for name in ("Attachment", "Envelope", "MessageContext", "PartInfo", "ReceivedHop", "TextPart")}}

if TYPE_CHECKING:
    from .context import Attachment, Envelope, MessageContext, PartInfo, ReceivedHop, TextPart
    from .limits import Limits

__getattr__ = lazy_attributes(__name__, _EXPORTS)

__all__ = ["Attachment", "Envelope", "Limits", "MessageContext", "PartInfo", "ReceivedHop", "TextPart"]
