"""Headers a mail store or a filter writes once the sender is done: not the message's evidence.

A mailbox marks mail read, answered or labelled (Status, X-Status, X-Keywords, X-UID,
Lines, Content-Length), and filters stamp their verdicts on it (X-Spam-*, X-Mailguard-*,
X-Virus-*, ours among them). A filter at the MTA never sees the first kind on fresh mail,
and the second is somebody's opinion. Learned, they teach the classifier how a corpus was
collected (the SpamAssassin corpus has X-Keywords on 585 spam and 25 hard ham, on no easy
ham) and, from a user's report, its own verdict. SpamAssassin's Bayes ignores these too,
among others (its ``IGNORED_HDRS``).

One header the delivery writes is the sender's: Return-Path, the envelope sender. Stored mail
has it and mail scanned before delivery does not yet, so `delivered_return_path` supplies it
from the envelope, and both read alike.
"""

from __future__ import annotations

from .context import MessageContext

__all__ = ["delivered_return_path", "is_local_header", "without_local_headers"]

_MAILBOX = frozenset({"status", "x-status", "x-keywords", "x-uid", "x-uidl", "x-imapbase", "content-length", "lines"})
_FILTER_PREFIXES = ("x-spam", "x-mailguard", "x-virus")
_MAX_LINES = 2000  # header lines looked at; past them the message is kept as it is
_MAX_PATH = 998  # characters of an envelope sender written as a Return-Path (RFC 5322's line limit)


def is_local_header(name: str) -> bool:
    """Whether a header (its lower-case name) is a mail store's or a filter's, not the sender's."""
    return name in _MAILBOX or name.startswith(_FILTER_PREFIXES)


def without_local_headers(raw: bytes, limit: int | None = None) -> bytes:
    """``raw`` without the lines (continuations included) of its local headers; with a
    ``limit``, only its first ``limit`` bytes (read no further than it takes)."""
    kept = bytearray()
    dropping = False
    pos = 0
    for _ in range(_MAX_LINES):
        if pos >= len(raw):
            break
        newline = raw.find(b"\n", pos)
        stop = len(raw) if newline < 0 else newline + 1
        line = raw[pos:stop]
        if line in (b"\n", b"\r\n"):  # the blank line: the body follows
            break
        if line[:1] not in (b" ", b"\t"):  # a continuation belongs to the field before it
            dropping = is_local_header(line.split(b":", 1)[0].strip().decode("latin-1").lower())
        if not dropping:
            kept += line
        pos = stop
        if limit is not None and len(kept) >= limit:
            return bytes(kept[:limit])
    kept += raw[pos:] if limit is None else raw[pos : pos + limit - len(kept)]
    return bytes(kept)


def delivered_return_path(ctx: MessageContext) -> str | None:
    """The Return-Path the delivery agent will write, ``<envelope sender>``, for a message
    scanned before delivery (the milter's: the envelope names the sender, the header is not
    there yet); None when the message carries one already or no envelope sender is known.

    The one header written at delivery that is the sender's evidence: the mail the classifier
    learns from (a corpus, a user's report out of a mailbox) carries it, so a scan before
    delivery reads it too, or the model's Return-Path features (a mailing list's bounce
    address, a bulk sender's) would never count on the mail it guards."""
    sender = ctx.envelope.mail_from
    if sender is None or ctx.header_all("return-path"):
        return None
    return f"<{sender[:_MAX_PATH]}>"
