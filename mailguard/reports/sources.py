"""Reading user reports: single messages, Maildir folders, mbox files and ARF feedback reports.

`iter_messages` turns whatever a user or a mail server hands to ``mailguard report``
into raw messages, one `ReportInput` each. It never raises for bad input: an unreadable
file, a message over the size bound or an ARF report without its original becomes an
item with ``error`` set, and the rest is still read.

`report_digest` is the identity a report is deduplicated by. Copies of one message
differ in how they travelled (Received lines, the filter's own headers, mbox escaping,
CRLF or LF), so the digest is taken over the message with those differences removed:

* line endings: CRLF and lone CR become LF;
* a leading mbox envelope line (``From sender date``) is dropped;
* headers are unfolded, their names lower-cased, runs of whitespace in their values
  collapsed to one space, and these dropped: Received, Return-Path, Delivered-To,
  X-Original-To, Received-SPF, Authentication-Results, ARC-*, and the headers a mail
  store or a filter writes after delivery (`mailguard.message.local_headers`: Status,
  X-Keywords, X-Spam*, X-Mailguard-*, ...); every other header (DKIM-Signature included)
  counts, in order;
* in the body, trailing whitespace of every line and trailing empty lines are ignored,
  and a line's ``>`` quotes before ``From `` are dropped (mbox writers quote such lines in
  incompatible ways: mboxo, mboxrd or not at all).
"""

from __future__ import annotations

import dataclasses
import email
import email.message
import email.parser
import email.policy
import hashlib
import io
import mailbox
import os
import re
import stat
import sys
from collections.abc import Iterator
from email.generator import BytesGenerator
from pathlib import Path
from typing import BinaryIO

from ..config import Limits
from ..message.context import SafeMessage
from ..message.local_headers import is_local_header
from ..scorer import Label

__all__ = ["ReportInput", "arf_label", "iter_messages", "report_digest", "unwrap_arf"]

DEFAULT_MAX_BYTES = Limits().max_parse_bytes  # a larger message is skipped with an error line
DEFAULT_MAX_MESSAGES = 100_000  # per call; past it one error line and the rest is not read

_TRAVEL = frozenset(b"received return-path delivered-to x-original-to received-spf authentication-results".split())
_MBOXRD_FROM = re.compile(rb"^>(>*From )", re.M)
_MBOX_QUOTED = re.compile(rb"^>+From ", re.M)
_MAX_FIELD = 256  # characters kept of an ARF field (feedback type, original recipient)
# RFC 5965 feedback types (and RFC 6430's not-spam) to the label they mean
_ARF_LABELS: dict[str, Label] = {"abuse": "spam", "fraud": "spam", "virus": "spam", "not-spam": "ham"}


@dataclasses.dataclass(frozen=True)
class ReportInput:
    """One message read from a report input, or why it could not be read."""

    where: str  # file, file#N in an mbox, "-" for standard input
    raw: bytes | None = None  # the message (for an ARF report: the original it carries)
    error: str | None = None
    arf: bool = False  # taken out of an RFC 5965 feedback report
    feedback_type: str | None = None  # the report's Feedback-Type (abuse, not-spam, ...)
    original_rcpt: str | None = None  # the report's Original-Rcpt-To, if it has one
    headers_only: bool = False  # the report carried only the original's headers (text/rfc822-headers)


def report_digest(raw: bytes) -> str:
    """sha256 (hex) of ``raw`` normalised as the module docstring says, so that copies of one
    message that travelled differently (two recipients, two nodes, mbox vs Maildir) agree."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text.startswith(b"From "):  # mbox envelope line: sender and delivery date, not the message
        text = text.partition(b"\n")[2]
    if text.startswith(b"\n"):
        head, body = b"", text[1:]
    else:
        head, _, body = text.partition(b"\n\n")
    digest = hashlib.sha256()
    for name, value in _unfold(head):
        key = name.strip().lower()
        if key in _TRAVEL or key.startswith(b"arc-") or is_local_header(key.decode("latin-1")):
            continue
        digest.update(key + b":" + b" ".join(value.split()) + b"\n")
    digest.update(b"\n")
    lines = [line.rstrip() for line in _MBOX_QUOTED.sub(b"From ", body).split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    digest.update(b"\n".join(lines))
    return digest.hexdigest()


def _unfold(head: bytes) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line)
        elif line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields


def arf_label(feedback_type: str | None) -> Label | None:
    """What an ARF Feedback-Type says the message is: abuse/fraud/virus spam, not-spam ham, else None."""
    return _ARF_LABELS.get((feedback_type or "").strip().lower())


def iter_messages(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    stdin: BinaryIO | None = None,
) -> Iterator[ReportInput]:
    """Every message in ``path``: a message file, an mbox file (it starts with a ``From ``
    line), a Maildir (its cur/ and new/), a directory of such files (walked in sorted
    order, Maildir tmp/ and dot files skipped), or ``-`` for standard input. ARF reports
    yield the original message they carry. At most ``max_messages`` items are yielded (one
    more says the rest was skipped); a message over ``max_bytes`` is an error item."""
    count = 0
    for item in _iter_all(str(path), max_bytes, stdin):
        if count >= max_messages:
            yield ReportInput(_shown(path), error=f"more than {max_messages} messages; the rest was not read")
            return
        count += 1
        yield unwrap_arf(item) if item.raw is not None else item


def _iter_all(name: str, max_bytes: int, stdin: BinaryIO | None) -> Iterator[ReportInput]:
    if name == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        try:
            raw = stream.read(max_bytes + 1)
        except OSError as exc:
            yield ReportInput("-", error=f"cannot read standard input: {exc.strerror or exc}")
            return
        yield _bounded("-", raw, max_bytes)
        return
    path = Path(name)
    try:
        info = path.stat()
    except OSError as exc:
        yield ReportInput(_shown(name), error=exc.strerror or str(exc))
        return
    if stat.S_ISDIR(info.st_mode):
        yield from _iter_dir(path, max_bytes)
    else:
        yield from _iter_file(path, max_bytes)


def _shown(path: str | os.PathLike[str]) -> str:
    """A path fit to print: undecodable file-name bytes become U+FFFD instead of an error later."""
    return os.fsencode(path).decode("utf-8", "replace")


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _iter_dir(root: Path, max_bytes: int) -> Iterator[ReportInput]:
    if _is_maildir(root):  # the folder itself: its messages, not its Maildir++ subfolders
        for sub in ("new", "cur"):
            try:
                names = sorted(os.listdir(root / sub))
            except OSError as exc:
                yield ReportInput(_shown(root / sub), error=exc.strerror or str(exc))
                continue
            for file in names:
                if not file.startswith("."):
                    yield from _iter_file(root / sub / file, max_bytes, mbox=False)
        return
    problems: list[OSError] = []  # folders that cannot be listed: error lines, not silent gaps
    for current, dirs, files in os.walk(root, onerror=problems.append):
        yield from _walk_errors(problems)
        here = Path(current)
        if _is_maildir(here):
            dirs[:] = [d for d in dirs if d != "tmp"]  # deliveries still being written
        dirs.sort()
        for file in sorted(files):
            if not file.startswith("."):
                yield from _iter_file(here / file, max_bytes)
    yield from _walk_errors(problems)


def _walk_errors(problems: list[OSError]) -> Iterator[ReportInput]:
    while problems:
        problem = problems.pop(0)
        yield ReportInput(_shown(problem.filename or "?"), error=problem.strerror or str(problem))


def _iter_file(path: Path, max_bytes: int, *, mbox: bool = True) -> Iterator[ReportInput]:
    where = _shown(path)
    try:
        # O_NONBLOCK: opening a FIFO or device must not hang the run; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                yield ReportInput(where, error="not a regular file")
                return
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        yield ReportInput(where, error=exc.strerror or str(exc))
        return
    if mbox and raw.startswith(b"From "):
        yield from _iter_mbox(path, max_bytes)
    else:
        yield _bounded(where, raw, max_bytes)


def _iter_mbox(path: Path, max_bytes: int) -> Iterator[ReportInput]:
    """Messages of an mbox file, From_ line removed and mboxrd quoting (``>From``) undone."""
    try:
        box = mailbox.mbox(path, create=False)
        keys = box.keys()  # reads the table of contents: offsets only, not the messages
    except (OSError, mailbox.Error) as exc:
        yield ReportInput(_shown(path), error=f"cannot read mbox: {exc}")
        return
    try:
        for n, key in enumerate(keys, 1):
            where = f"{_shown(path)}#{n}"
            try:
                with box.get_file(key) as fh:
                    raw = fh.read(max_bytes + 1)
            except (OSError, KeyError, mailbox.Error) as exc:
                yield ReportInput(where, error=f"cannot read: {exc}")
                continue
            item = _bounded(where, raw, max_bytes)
            if item.raw is not None:
                item = dataclasses.replace(item, raw=_MBOXRD_FROM.sub(rb"\1", item.raw))
            yield item
    finally:
        box.close()


def _bounded(where: str, raw: bytes, max_bytes: int) -> ReportInput:
    if len(raw) > max_bytes:
        return ReportInput(where, error=f"larger than {max_bytes} bytes; skipped")
    if not raw.strip():
        return ReportInput(where, error="empty message")
    return ReportInput(where, raw=raw)


def unwrap_arf(item: ReportInput) -> ReportInput:
    """If ``item`` is an RFC 5965 feedback report (multipart/report; report-type=
    feedback-report), the original message it carries, with the report's feedback type and
    original recipient; any other message unchanged. Never raises."""
    raw = item.raw
    if raw is None:
        return item
    try:
        head = email.parser.BytesHeaderParser(SafeMessage, policy=email.policy.compat32).parsebytes(raw[:256 * 1024])
        if head.get_content_type() != "multipart/report" or str(head.get_param("report-type", "")).lower() != "feedback-report":
            return item
        report = email.message_from_bytes(raw, _class=SafeMessage, policy=email.policy.compat32)
        return _from_report(item, report, raw)
    except Exception as exc:  # the stdlib parser on hostile input: one error line, never a crash
        return ReportInput(item.where, error=f"unreadable feedback report ({type(exc).__name__})", arf=True)


def _from_report(item: ReportInput, report: email.message.Message, raw: bytes) -> ReportInput:
    parts = report.get_payload()
    if not isinstance(parts, list):
        return ReportInput(item.where, error="feedback report that is not multipart", arf=True)
    fields: email.message.Message | None = None
    original: bytes | None = None
    headers_only = False
    bodies = _part_bodies(raw, report.get_boundary() or "", len(parts))
    for index, part in enumerate(parts[:10]):  # RFC 5965: text, machine-readable report, original (3 parts)
        ctype = part.get_content_type()
        if ctype == "message/feedback-report":
            fields = _feedback_fields(part)
        elif ctype == "message/rfc822" and original is None:
            inner = part.get_payload()
            cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
            if bodies is not None and cte in ("7bit", "8bit", "binary"):
                original = bodies[index]  # the bytes as sent: the digest and later retraining see them
            elif isinstance(inner, list) and inner:
                original = _flatten(inner[0])
        elif ctype == "text/rfc822-headers" and original is None:
            data = part.get_payload(decode=True) or b""
            original = data.rstrip(b"\r\n") + b"\n\n"
            headers_only = True
    feedback_type = _field(fields, "Feedback-Type")
    rcpt = _field(fields, "Original-Rcpt-To")
    if original is None or not original.strip():
        return ReportInput(item.where, error="feedback report without the original message", arf=True, feedback_type=feedback_type)
    return ReportInput(
        item.where, raw=original, arf=True, feedback_type=feedback_type, original_rcpt=rcpt, headers_only=headers_only
    )


def _feedback_fields(part: email.message.Message) -> email.message.Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload:  # the parser reads message/* bodies as headers
        return payload[0]
    text = payload if isinstance(payload, str) else ""
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text[:64 * 1024], headersonly=True)


def _field(fields: email.message.Message | None, name: str) -> str | None:
    if fields is None:
        return None
    value = fields.get(name)
    if value is None:
        return None
    text = " ".join(str(value).split())[:_MAX_FIELD]
    return text or None


def _part_bodies(raw: bytes, boundary: str, count: int) -> list[bytes] | None:
    """The raw body bytes of each top-level part of a multipart message, or None when the
    delimiters do not match what the parser found (then the parsed part is re-serialised).

    The stdlib parser keeps no byte offsets, and re-serialising a parsed message changes
    what it repairs (a missing closing boundary, say), so the digest of an original taken
    from a report would differ from the digest of the same message reported directly."""
    if not boundary or len(boundary) > 200:
        return None
    delimiter = re.compile(rb"^--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*\r?$", re.M)
    marks = list(delimiter.finditer(raw))
    bodies = []
    for mark, following in zip(marks, marks[1:]):
        if mark.group(1):
            break
        chunk = raw[mark.end() : following.start()]
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:]  # the delimiter line's own line break
        chunk = chunk[:-2] if chunk.endswith(b"\r\n") else chunk[:-1] if chunk.endswith(b"\n") else chunk  # belongs to the next delimiter
        head_end = re.match(rb"\r?\n", chunk) or re.search(rb"\r?\n\r?\n", chunk)  # no headers, or after them
        bodies.append(chunk[head_end.end() :] if head_end else b"")
    return bodies if len(bodies) == count else None


def _flatten(msg: email.message.Message) -> bytes:
    """The original re-serialised from the parsed part (no header refolding, no From_ quoting)."""
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0).flatten(msg)
    return out.getvalue()
