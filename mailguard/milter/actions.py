"""Verdicts to milter replies: the one place an action becomes something the MTA does.

`apply_verdicts` takes one `Verdict` per envelope recipient and drives the milter calls
(add/change headers, remove recipients, quarantine, set the SMTP reply); `apply_error`
does the same for a message that could not be scanned. Both talk to a `MilterCalls`
object (pymilter's ``Milter.Base`` in the daemon, a recorder in unit tests), so this
module needs no libmilter to import or to test.

| action     | what the MTA is told                                                       |
|------------|----------------------------------------------------------------------------|
| accept     | accept, with the X-Spam-* / X-Mailguard-* / scorer headers added           |
| tag        | as accept; the Subject is rewritten when ``[policy] subject_tag`` is set   |
| junk       | as tag, plus ``X-Mailguard-Action: junk`` for the delivery agent's Sieve   |
| quarantine | as tag, and the message goes to Postfix's hold queue (smfi_quarantine)     |
| tempfail   | ``451 4.7.1`` for the whole message                                        |
| reject     | ``550 5.7.1`` with a short reason; for some recipients only: they are removed |
"""

from __future__ import annotations

import dataclasses
import email.header
import re
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from ..result import Action, Verdict

__all__ = ["MilterCalls", "Outcome", "apply_error", "apply_verdicts", "fold_header"]

Reply = Literal["accept", "reject", "tempfail"]
_SEVERITY = list(Action)  # mildest first


class MilterCalls(Protocol):
    """The subset of pymilter's ``Milter.Base`` end-of-message actions used here."""

    def addheader(self, field: str, value: str, idx: int = -1) -> Any: ...
    def chgheader(self, field: str, idx: int, value: str) -> Any: ...
    def delrcpt(self, rcpt: str) -> Any: ...
    def quarantine(self, reason: str) -> Any: ...
    def setreply(self, rcode: str, xcode: str | None = None, msg: str | None = None, *ml: str) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What was done, for the log line and the metrics."""

    reply: Reply  # the milter return code to give: accept (with changes), reject or tempfail
    action: str  # the action the delivered copy got, or reject/tempfail for the whole message
    delivered: tuple[str, ...]  # recipients still on the message
    removed: tuple[str, ...]  # recipients removed because their own verdict rejects
    reason: str


def apply_verdicts(calls: MilterCalls, verdicts: Mapping[str, Verdict], *, has_subject: bool) -> Outcome:
    """Carry out per-recipient verdicts (keys are the RCPT TO values as the MTA gave them).

    Every recipient rejects -> 550 for the message. Any recipient tempfails -> 451 for the
    whole message (a milter cannot defer one recipient at end of message, and deferring
    all of them loses nothing: the client retries). Otherwise the rejecting recipients are
    removed and the one delivered copy gets the headers of one remaining recipient's verdict.
    """
    if not verdicts:
        raise ValueError("apply_verdicts needs at least one recipient")
    rejecting = [r for r, v in verdicts.items() if v.action is Action.REJECT]
    if len(rejecting) == len(verdicts):
        first = verdicts[rejecting[0]]
        code, xcode, text = first.smtp_reply or ("550", "5.7.1", "Message rejected")
        calls.setreply(code, xcode, _reply_text(text))
        return Outcome("reject", "reject", (), tuple(rejecting), first.reason)
    deferred = [v for v in verdicts.values() if v.action is Action.TEMPFAIL]
    if deferred:
        code, xcode, text = deferred[0].smtp_reply or ("451", "4.7.1", "Try again later")
        calls.setreply(code, xcode, _reply_text(text))
        return Outcome("tempfail", "tempfail", (), (), deferred[0].reason)
    for rcpt in rejecting:
        calls.delrcpt(rcpt)
    delivered = tuple(r for r in verdicts if r not in rejecting)
    # One copy goes to every remaining recipient, so it can carry only one verdict's headers.
    # Take the most severe one (ties: the highest score): the score is the same message's
    # for everyone, and a stricter recipient's junk/quarantine must not be hidden by a
    # lenient one's accept; a lenient user's Sieve can still read X-Spam-Score itself.
    chosen = max((verdicts[r] for r in delivered), key=lambda v: (_SEVERITY.index(v.action), v.score))
    for name, value in chosen.headers:
        calls.addheader(name, fold_header(name, value))
    calls.addheader("X-Mailguard-Action", str(chosen.action))
    if chosen.subject is not None:
        subject = _encode_header("Subject", chosen.subject)
        if has_subject:
            calls.chgheader("Subject", 1, subject)
        else:
            calls.addheader("Subject", subject)
    if chosen.action is Action.QUARANTINE:
        calls.quarantine(_reply_text(chosen.reason))
    return Outcome("accept", str(chosen.action), delivered, tuple(rejecting), chosen.reason)


def apply_error(calls: MilterCalls, on_error: str, why: str) -> Outcome:
    """A message that could not be scanned (exception, deadline, shutdown): by default
    451 so the client retries and nothing is lost; ``on_error = "accept"`` lets it through
    with a header saying it was not scanned."""
    if on_error == "accept":
        calls.addheader("X-Mailguard-Action", "unscanned")
        calls.addheader("X-Mailguard-Report", fold_header("X-Mailguard-Report", f"not scanned: {why}"))
        return Outcome("accept", "unscanned", (), (), why)
    calls.setreply("451", "4.7.1", "Message could not be scanned, try again later")
    return Outcome("tempfail", "tempfail", (), (), why)


_UNSAFE = re.compile(r"[^\x20-\x7e]")


def _reply_text(text: str, limit: int = 200) -> str:
    """SMTP reply text: printable ASCII, short, and without '%' (libmilter drops a reply
    with a lone '%', and doubling it shows '%%' to the client)."""
    text = _UNSAFE.sub("?", text).replace("%", " pct")
    return text[:limit]


def _encode_header(name: str, value: str) -> str:
    """A header value as the milter may send it: ASCII that fits one line as it is, a long one
    folded at spaces, and anything else (non-ASCII, or a word too long for a line, as a rewritten
    spam Subject can hold: found by benchmarks/fuzz.py) as RFC 2047 words folded short."""
    room = 998 - len(name) - 2
    if value.isascii():
        if len(value) <= room:
            return value
        folded = fold_header(name, value)
        if all(len(line) <= room for line in folded.split("\n")):
            return folded
    return email.header.Header(value, "utf-8", header_name=name).encode()


def fold_header(name: str, value: str, width: int = 78) -> str:
    """Fold a long value at spaces into continuation lines (``\\n\\t``), so no header line
    passes the 998-octet limit; a single word longer than the line stays whole."""
    value = " ".join(value.split())
    lines: list[str] = []
    current = ""
    room = width - len(name) - 2
    for word in value.split(" "):
        if current and len(current) + 1 + len(word) > room:
            lines.append(current)
            current, room = word, width - 1
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\n\t".join(lines)
