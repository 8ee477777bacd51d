"""The message as scorers see it: SMTP envelope plus raw bytes, parsed once into bounded, lazy
views (`context`), and the parsers behind those views: charsets and encoded words
(`textdecode`), HTML to text (`html`), URLs and registered domains (`urls`), words
(`words`), addresses (`addresses`), Received hops and the client they name (`relay`), and
the bounds on all of it (`limits`). Nothing here imports the rest of mailguard but `errors`.
"""

from __future__ import annotations

from .context import Attachment, Envelope, MessageContext, PartInfo, ReceivedHop, TextPart
from .limits import Limits

__all__ = ["Attachment", "Envelope", "Limits", "MessageContext", "PartInfo", "ReceivedHop", "TextPart"]
