"""Headers a mail store or a filter writes once the sender is done: not the message's evidence.

A mailbox marks mail read, answered or labelled (Status, X-Status, X-Keywords, X-UID,
Lines, Content-Length), and filters stamp their verdicts on it (X-Spam-*, X-Mailguard-*,
X-Virus-*, ours among them). A filter at the MTA never sees the first kind on fresh mail,
and the second is somebody's opinion. Learned, they teach the classifier how a corpus was
collected (the SpamAssassin corpus has X-Keywords on 585 spam and 25 hard ham, on no easy
ham) and, from a user's report, its own verdict. SpamAssassin's Bayes ignores the same
headers.
"""

from __future__ import annotations

import re

__all__ = ["is_local_header", "without_local_headers"]

_MAILBOX = frozenset({"status", "x-status", "x-keywords", "x-uid", "x-uidl", "x-imapbase", "content-length", "lines"})
_FILTER_PREFIXES = ("x-spam", "x-mailguard", "x-virus")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def is_local_header(name: str) -> bool:
    """Whether a header (its lower-case name) is a mail store's or a filter's, not the sender's."""
    return name in _MAILBOX or name.startswith(_FILTER_PREFIXES)


def without_local_headers(raw: bytes) -> bytes:
    """``raw`` without the lines (continuations included) of its local headers."""
    end = _HEADER_END.search(raw)
    head, rest = (raw[: end.start()], raw[end.start() :]) if end else (raw, b"")
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a continuation belongs to the field before it
            if not dropping:
                kept.append(line)
            continue
        dropping = is_local_header(line.split(b":", 1)[0].strip().decode("latin-1").lower())
        if not dropping:
            kept.append(line)
    return b"".join(kept) + rest
