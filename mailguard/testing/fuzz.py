"""Hostile messages for fuzzing the parsing entry points, and the checks run on each.

Structure-aware: `hostile_message` builds MIME trees (deep, unclosed, message/rfc822 inside
message/rfc822), RFC 2047 encoded words in bad or unknown charsets, huge and repeated
headers, base64 and quoted-printable garbage, zip attachments (nested, a compression bomb,
a central directory that lies), NUL bytes and truncation, or mutates a seed message (a real
corpus message, say) with the same kinds of damage. Everything is drawn from one
``random.Random``-like ``rng``: a seeded ``random.Random`` in ``benchmarks/fuzz.py``,
hypothesis' ``st.randoms()`` in ``tests/fuzz`` (so hypothesis can shrink the choices).

`FuzzTargets` runs one input through every entry point that reads message bytes and raises
`FuzzFailure` for what the filter must never do (an exception escaping a parser, a scorer
failing on the input, a header or SMTP reply the MTA would refuse).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import os
import quopri
import random
import re
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["FuzzFailure", "FuzzTargets", "Rng", "big_message", "hostile_message", "mutate"]


class Rng(Protocol):
    """The subset of ``random.Random`` the generators use."""

    def random(self) -> float: ...
    def randint(self, a: int, b: int) -> int: ...
    def choice(self, seq: Sequence[Any]) -> Any: ...


class FuzzFailure(AssertionError):
    """An input made the filter do what it must never do; ``target`` says which entry point."""

    def __init__(self, target: str, detail: str) -> None:
        super().__init__(f"{target}: {detail}")
        self.target = target
        self.detail = detail


# -- pieces -------------------------------------------------------------------------------

CHARSETS = (
    "utf-8", "us-ascii", "iso-8859-1", "windows-1252", "gb2312", "gbk", "big5", "shift_jis", "iso-2022-jp",
    "euc-kr", "koi8-r", "utf-16", "utf-16le", "utf-32", "utf-7", "x-unknown", "unknown-8bit", "", "\"utf-8\"",
    "base64", "rot13", "zlib", "hex", "idna", "punycode", "utf-8*en", "x-mac-roman", "cp65001", "ISO-8859-99",
    "utf8\x00", "latin1 ", "charset=utf-8", "\u00e9t\u00e9", "a" * 300,
)
CTYPES = (
    "text/plain", "text/html", "multipart/mixed", "multipart/alternative", "multipart/related",
    "multipart/report", "message/rfc822", "message/feedback-report", "text/rfc822-headers",
    "application/octet-stream", "application/zip", "image/png", "application/pdf", "text/x-unknown",
    "multipart/", "/", "text", "", "multipart/mixed/extra",
)
ENCODINGS = ("7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "BASE64 ", "bogus", "")
HEADER_NAMES = (
    "From", "To", "Cc", "Subject", "Date", "Message-ID", "Received", "Return-Path", "Reply-To", "Sender",
    "List-Unsubscribe", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "MIME-Version",
    "DKIM-Signature", "ARC-Seal", "Authentication-Results", "X-Mailer", "Feedback-Type", "X-Spam-Flag", "X-Keywords", "Status",
    "Received-SPF", "In-Reply-To", "References", "X-\x00Weird", "Bad Name", ":", "X" * 200,
)
WORDS = (
    "hello", "viagra", "meeting", "FREE", "http://evil.example/x?a=1", "https://[::1]:99999/",
    "http://xn--e1afmkfd.xn--p1ai/", "www.", "mailto:a@b", "user@example.com", "<a@b>", "\u4e2d\u6587",
    "\u0440\u0443\u0441", "\ud55c\uad6d", "=?", "?=", "==", "=3D", "\t", " ", "\u202e", "\ufeff", "<html>",
    "<a href='http://x.example'>", "</a>", "<img src=cid:1>", "&#x10FFFF;", "&amp", "%00", "[192.0.2.1]",
)
_RAW_NOISE = (b"\x00", b"\r", b"\n", b"\r\n", b"\xff", b"\xc3", b"\xe4\xb8", b"=", b"?", b"--", b";", b"\"", b"\\", b"\x1b$B")


def _bulk(rng: Rng) -> random.Random:
    """A generator seeded from ``rng`` for bulk content: one choice for hypothesis to shrink
    instead of thousands (which would overrun its example size)."""
    return random.Random(rng.randint(0, 2**32))


def _bytes(rng: Rng, n: int) -> bytes:
    return _bulk(rng).randbytes(n)


def _text(rng: Rng, words: int) -> str:
    bulk = _bulk(rng)
    return " ".join(bulk.choice(WORDS) for _ in range(words))


def encoded_word(rng: Rng) -> str:
    """An RFC 2047 encoded word, often broken: bad charset, bad base64, bad Q, missing end."""
    charset = rng.choice(CHARSETS)
    payload = _text(rng, rng.randint(0, 4)).encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:
        payload = _bytes(rng, rng.randint(0, 20))
    if rng.random() < 0.5:
        data = base64.b64encode(payload).decode()
        data = data[: rng.randint(0, len(data))] if rng.random() < 0.3 else data  # lost padding
        word = f"=?{charset}?{rng.choice('Bbx')}?{data}?="
    else:
        data = quopri.encodestring(payload, header=True).decode("latin-1")
        word = f"=?{charset}?{rng.choice('Qq')}?{data}{rng.choice(['?=', '', '?', '=?'])}"
    return word


def header_value(rng: Rng) -> str:
    parts: list[str] = []
    for _ in range(rng.randint(0, 6)):
        roll = rng.random()
        if roll < 0.3:
            parts.append(encoded_word(rng))
        elif roll < 0.4:
            parts.append(_bytes(rng, rng.randint(1, 12)).decode("latin-1"))
        elif roll < 0.5:
            parts.append("\r\n " if rng.random() < 0.5 else "\n\t")
        else:
            parts.append(rng.choice(WORDS))
    return " ".join(parts)


def header_block(rng: Rng, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    lines = [f"{name}: {value}" for name, value in extra]
    for _ in range(rng.randint(0, 12)):
        lines.append(f"{rng.choice(HEADER_NAMES)}: {header_value(rng)}")
    roll = rng.random()
    if roll < 0.03:  # repeated headers, past max_headers and max_received
        name = rng.choice(("Received", "X-Dup", "To"))
        lines += [f"{name}: from h{i}.example ([10.0.{i % 256}.{i // 256 % 256}]) by mx; Tue, 1 Jan 2002 00:00:{i % 60:02d} +0000"
                  for i in range(rng.randint(100, 3000))]
    elif roll < 0.06:  # one huge header, folded or not
        sep, bulk = rng.choice((" ", "\r\n ", "", "=?utf-8?B?")), _bulk(rng)
        lines.append(f"{rng.choice(HEADER_NAMES)}: " + sep.join(bulk.choice(WORDS) for _ in range(rng.randint(1000, 30000))))
    order = list(range(len(lines)))
    if rng.random() < 0.2:
        _bulk(rng).shuffle(order)
    eol = rng.choice(("\r\n", "\n", "\r\n", "\r"))
    return eol.join(lines[i] for i in order).encode("utf-8", "surrogateescape") + eol.encode()


def _body_bytes(rng: Rng, cte: str, payload: bytes) -> bytes:
    cte = cte.strip().lower()
    if cte == "base64":
        data = base64.encodebytes(payload)
        if rng.random() < 0.3:  # garbage: wrong alphabet, lost padding, line noise
            data = data.replace(b"=", b"").replace(b"A", rng.choice((b"*", b"=", b"\x00", b" ")))
        return data
    if cte == "quoted-printable":
        data = quopri.encodestring(payload)
        if rng.random() < 0.3:
            data += rng.choice((b"=", b"=Z", b"=\r", b"=4", b"=\n=\n", b"=FF=FE=00"))
        return data
    return payload


@functools.lru_cache(maxsize=1)
def _zip_bomb() -> bytes:
    """A zip of 64 MiB of zeros (about 64 KiB): must never be inflated."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("zeros.bin", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(64):
                member.write(chunk)
    return out.getvalue()


def zip_archive(rng: Rng, depth: int = 0) -> bytes:
    """A zip attachment: members with odd names, a nested zip, a bomb, or a lying directory."""
    roll = rng.random()
    if roll < 0.1:
        return _zip_bomb()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))) as z:
        for i in range(rng.randint(0, 8)):
            name = rng.choice(("a.txt", "../../etc/passwd", "invoice.pdf.exe", "\u4e2d.doc", "x" * 400, "", "dir/"))
            data = zip_archive(rng, depth + 1) if depth < 3 and rng.random() < 0.3 else _bytes(rng, rng.randint(0, 64))
            z.writestr(f"{i}-{name}", data)
    data = out.getvalue()
    if roll < 0.2 and len(data) >= 22:  # the end-of-central-directory record claims 65535 members
        eocd = data.rfind(b"PK\x05\x06")
        data = data[: eocd + 8] + b"\xff\xff\xff\xff" + data[eocd + 12 :]
    elif roll < 0.3:
        data = data[: rng.randint(0, len(data))]
    elif roll < 0.35:
        data = b"PK\x05\x06" + _bytes(rng, rng.randint(0, 30))
    return data


def _leaf(rng: Rng) -> tuple[str, bytes]:
    ctype = rng.choice(CTYPES)
    roll = rng.random()
    if roll < 0.15:
        ctype, payload = rng.choice(("application/zip", "application/octet-stream", "application/x-zip")), zip_archive(rng)
    elif roll < 0.4:
        payload = _bytes(rng, rng.randint(0, 300))
    elif roll < 0.5:
        bulk = _bulk(rng)
        payload = ("<html><body>" + "".join(f"<a href='{bulk.choice(WORDS)}'>{bulk.choice(WORDS)}</a><div>" for _ in range(bulk.randint(0, 50)))).encode()
    else:
        payload = _text(rng, rng.randint(0, 80)).encode(rng.choice(("utf-8", "utf-16", "gb18030", "latin-1")), "replace")
    return ctype, payload


def mime_part(rng: Rng, depth: int, budget: list[int]) -> bytes:
    """One MIME entity: a multipart with children, a message/rfc822, or a leaf."""
    budget[0] -= 1
    eol = rng.choice((b"\r\n", b"\n"))
    roll = rng.random()
    if budget[0] > 0 and depth < 60 and roll < 0.35:
        boundary = rng.choice(("b", "==_x", "a" * 80, "", " sp ace", "\"q\"", "--", "\u00e9")) + str(depth)
        params = f'boundary="{boundary}"' if rng.random() < 0.9 else "boundary="
        if rng.random() < 0.3:
            params += f"; report-type={rng.choice(('feedback-report', 'x'))}"
        head = header_block(rng, [("Content-Type", f"{rng.choice(('multipart/mixed', 'multipart/alternative', 'multipart/report', 'multipart/x'))}; {params}")])
        delim = b"--" + boundary.encode("utf-8", "surrogateescape")
        children = [mime_part(rng, depth + 1, budget) for _ in range(rng.randint(0, 4))]
        body = b"".join(delim + eol + child + eol for child in children)
        if rng.random() < 0.8:
            body += delim + b"--" + eol
        return head + eol + body
    if budget[0] > 0 and depth < 60 and roll < 0.45:
        head = header_block(rng, [("Content-Type", "message/rfc822")])
        return head + eol + hostile_tree(rng, depth + 1, budget)
    ctype, payload = _leaf(rng)
    cte = rng.choice(ENCODINGS)
    extra = [("Content-Type", f"{ctype}; charset={rng.choice(CHARSETS)}"), ("Content-Transfer-Encoding", cte)]
    if rng.random() < 0.4:
        name = rng.choice(("a.zip", "x.exe", "=?utf-8?B?w6kuemlw?=", "\u00e9.pdf", "", "a" * 300))
        extra.append(("Content-Disposition", rng.choice((f'attachment; filename="{name}"', f"inline; filename*=utf-8''{name}",
                                                        f"attachment; filename*0*={rng.choice(CHARSETS)}''%FF%00; filename*1=x"))))
    return header_block(rng, extra) + eol + _body_bytes(rng, cte, payload)


def hostile_tree(rng: Rng, depth: int = 0, budget: list[int] | None = None) -> bytes:
    """A whole message: top-level headers plus a MIME body."""
    budget = budget if budget is not None else [rng.randint(1, 40)]
    if rng.random() < 0.05:  # a deep chain of nested multiparts
        levels = rng.randint(20, 400)
        opens = b"".join(b"Content-Type: multipart/mixed; boundary=\"d%d\"\n\n--d%d\n" % (i, i) for i in range(levels))
        return header_block(rng) + opens + b"Content-Type: text/plain\n\ndeep\n"
    top = header_block(rng, [("From", header_value(rng)), ("Subject", header_value(rng))])
    part = mime_part(rng, depth, budget)
    return top.rstrip(b"\r\n") + b"\n" + part if rng.random() < 0.5 else top + b"\n" + part


def big_message(rng: Rng) -> bytes:
    """A message of 7 to 8.9 MB, around the 8 MiB parse bound: one huge attachment, text or
    HTML part, thousands of small parts, or thousands of headers, next to a hostile part."""
    size = rng.randint(7_000_000, 8_900_000)
    kind = rng.choice(("attachment", "text", "html", "parts", "headers"))
    bulk = _bulk(rng)
    if kind == "attachment":
        head = "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=big.bin\n"
        body = base64.encodebytes(bulk.randbytes(size * 3 // 4))
    elif kind in ("text", "html"):
        unit = (" ".join(bulk.choice(WORDS) for _ in range(200)) + "\n").encode("utf-8", "surrogateescape")
        if kind == "html":
            unit = b"<p><a href='http://x.example/" + unit[:40] + b"'>" + unit + b"</a>"
        head = f"Content-Type: text/{kind}; charset={rng.choice(CHARSETS)}\n"
        body = unit * (size // len(unit))
    elif kind == "parts":
        one = b"--BIG\nContent-Type: text/plain\n\n" + _text(rng, 100).encode("utf-8", "surrogateescape") + b"\n"
        head, body = "Content-Type: multipart/mixed; boundary=BIG\n", one * (size // len(one)) + b"--BIG--\n"
    else:
        line = b"X-Filler: " + _text(rng, 10).encode("utf-8", "surrogateescape") + b"\n"
        return line * (size // len(line)) + b"\n" + hostile_tree(rng)
    first = mime_part(rng, 1, [3])
    parts = b"--OUTER\n" + first + b"\n--OUTER\n" + head.encode() + b"\n" + body
    closing = b"\n--OUTER--\n" if rng.random() < 0.7 else b""
    return header_block(rng, [("Content-Type", "multipart/mixed; boundary=OUTER")]) + b"\n" + parts + closing


# -- mutation -----------------------------------------------------------------------------


def mutate(rng: Rng, data: bytes, others: Sequence[bytes] = ()) -> bytes:
    """A few random damages: flips, inserts of special bytes, duplicated or deleted regions,
    a splice with another message, changed charset or boundary, truncation."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        roll = rng.random()
        pos = rng.randint(0, len(buf))
        if roll < 0.15 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randint(0, 255)
        elif roll < 0.35:
            buf[pos:pos] = rng.choice(_RAW_NOISE) * rng.randint(1, 4)
        elif roll < 0.45:
            end = min(len(buf), pos + rng.randint(1, 2000))
            buf[pos:pos] = buf[pos:end] * rng.randint(1, 20)
        elif roll < 0.55:
            del buf[pos : pos + rng.randint(1, 500)]
        elif roll < 0.62 and others:
            other = rng.choice(others)
            at = rng.randint(0, len(other))
            buf[pos:] = other[at:]
        elif roll < 0.72:
            buf[pos:pos] = encoded_word(rng).encode("utf-8", "surrogateescape")
        elif roll < 0.8:
            buf = bytearray(re.sub(rb"charset=\"?[\w-]*\"?", ("charset=" + rng.choice(CHARSETS)).encode("utf-8", "surrogateescape"), bytes(buf), count=1))
        elif roll < 0.86:
            buf = bytearray(re.sub(rb"boundary=\"?([^\"\s;]*)", b"boundary=" + rng.choice((b"", b"x", b"--", b"\"")), bytes(buf), count=1))
        elif roll < 0.92:
            buf[pos:pos] = mime_part(rng, 0, [rng.randint(1, 5)])
        else:
            del buf[pos:]  # truncated
    return bytes(buf)


def hostile_message(rng: Rng, seeds: Sequence[bytes] = (), *, big: float = 0.0) -> bytes:
    """One input: a generated message, a mutated seed, or a generated one mutated.
    With probability ``big`` it is `big_message`, near the 8 MiB parse bound."""
    if rng.random() < big:
        return big_message(rng)
    roll = rng.random()
    if seeds and roll < 0.45:
        return mutate(rng, rng.choice(seeds), seeds)
    data = hostile_tree(rng)
    return mutate(rng, data, seeds) if roll < 0.6 else data


# -- the checks ---------------------------------------------------------------------------


_PART_LOST = re.compile(r"part \d+ skipped: \w+")


class _Recorder:
    """Stands in for libmilter's end-of-message calls and checks what they are given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def _header(self, field: str, value: str) -> None:
        if not re.fullmatch(r"[!-9;-~]+", field):
            raise FuzzFailure("milter", f"bad header name {field!r}")
        if "\r" in value or "\0" in value:
            raise FuzzFailure("milter", f"CR or NUL in header {field}: {value[:200]!r}")
        lines = value.split("\n")  # folds: LF then a space or tab, then something (else a blank line ends the header)
        if any(not re.match(r"[ \t]+\S", line) for line in lines[1:]):
            raise FuzzFailure("milter", f"line break that is not a fold in header {field}: {value[:200]!r}")
        if any(len(line.encode("utf-8", "surrogateescape")) > 998 - len(field) - 2 for line in lines):
            raise FuzzFailure("milter", f"header {field} has a line over 998 octets")

    def addheader(self, field: str, value: str, idx: int = -1) -> None:
        self._header(field, value)
        self.calls.append(("addheader", field, value))

    def chgheader(self, field: str, idx: int, value: str) -> None:
        self._header(field, value)
        self.calls.append(("chgheader", field, idx, value))

    def delrcpt(self, rcpt: str) -> None:
        self.calls.append(("delrcpt", rcpt))

    def quarantine(self, reason: str) -> None:
        if not re.fullmatch(r"[ -~]*", reason):
            raise FuzzFailure("milter", f"quarantine reason not printable ASCII: {reason!r}")
        self.calls.append(("quarantine", reason))

    def setreply(self, rcode: str, xcode: str | None = None, msg: str | None = None, *ml: str) -> None:
        if not re.fullmatch(r"[45]\d\d", rcode) or (msg is not None and (not re.fullmatch(r"[ -~]*", msg) or "%" in msg)):
            raise FuzzFailure("milter", f"SMTP reply libmilter would refuse: {rcode} {xcode} {msg!r}")
        self.calls.append(("setreply", rcode, xcode, msg))


class FuzzTargets:
    """Every entry point that reads message bytes, run on one input by `check`.

    ``scanner`` scans with the network off (its own store: memory or a temporary SQLite
    file); ``workdir`` is where the report readers get their files, Maildir and mbox."""

    def __init__(self, scanner: Any, workdir: str | os.PathLike[str]) -> None:
        self.scanner = scanner
        self.workdir = Path(workdir)

    def check(self, raw: bytes, *, report: bool = False) -> dict[str, Any]:
        """Run every target on ``raw``; raise `FuzzFailure` for the first thing that went wrong.
        ``report``: also record it as a user report (slower: it re-scans and learns).
        ``out["scan_seconds"]`` is how long the scan took (benchmarks/fuzz.py's slowest scan)."""
        out: dict[str, Any] = {}
        for name, target in (("context", self.context), ("scan", self.scan), ("reports", self.reports), ("milter", self.milter)):
            try:
                began = time.perf_counter()
                out[name] = target(raw) if name != "milter" else target(raw, out["scan"])
                if name == "scan":
                    out["scan_seconds"] = time.perf_counter() - began
            except FuzzFailure:
                raise
            except Exception as exc:
                raise FuzzFailure(name, f"{type(exc).__name__}: {exc}") from exc
        if report:
            try:
                out["report"] = self.scanner.report_sync(raw, "spam", user="fuzz@example.org", source="fuzz")
            except Exception as exc:
                raise FuzzFailure("report", f"{type(exc).__name__}: {exc}") from exc
        return out

    def context(self, raw: bytes) -> Any:
        """MessageContext and every lazy view, plus the parsers scorers call on it."""
        from ..classifier.features import named_tokens, text_features
        from ..classifier.tokens import message_tokens
        from ..message.context import MessageContext
        from ..message.relay import client_relay

        ctx = MessageContext(raw, limits=self.scanner.config.limits)
        views = (ctx.headers, ctx.subject, ctx.text_parts, ctx.text, ctx.html_links, ctx.image_count, ctx.attachments,
                 ctx.parts, ctx.part_count, ctx.urls, ctx.url_domains, ctx.received, ctx.digest)
        for hop in ctx.received:
            hop.date  # noqa: B018 (a lazy view)
        for name in ("from", "to", "reply-to", "date", "message-id", "content-type"):
            ctx.header(name)
            ctx.header_all(name)
        client_relay(ctx, ())
        message_tokens(ctx)
        named_tokens(ctx)
        text_features(ctx)
        if not all(isinstance(text, str) for text in (ctx.text, ctx.subject, *(v for _, v in ctx.headers))):
            raise FuzzFailure("context", "a text view is not str")
        lost = [p for p in ctx.problems if _PART_LOST.match(p)]
        if lost:  # the parser's safety net caught an exception: a part was not read at all
            raise FuzzFailure("context", lost[0])
        return views

    def scan(self, raw: bytes) -> Any:
        from ..message.context import Envelope

        envelope = Envelope(client_ip="192.0.2.1", helo="fuzz.example", mail_from="a@example.org", rcpt_to=("bob@example.net",))
        result = self.scanner.scan_sync(raw, envelope)
        broken = [f for f in result.failures if f.kind == "error"]
        if broken:
            raise FuzzFailure("scan", "scorer failed on the input: " + "; ".join(f"{f.scorer}: {f.detail}" for f in broken))
        return result

    def reports(self, raw: bytes) -> Any:
        """The report readers on the input as a file, in a Maildir, in an mbox, and as ARF."""
        from ..reports.sources import ReportInput, iter_messages, report_digest, unwrap_arf

        report_digest(raw)
        unwrap_arf(ReportInput("x", raw=raw))
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            root = Path(tmp)
            (root / "one.eml").write_bytes(raw)
            for sub in ("cur", "new", "tmp"):
                (root / "Maildir" / sub).mkdir(parents=True)
            (root / "Maildir" / "cur" / "1.host:2,S").write_bytes(raw)
            (root / "box.mbox").write_bytes(b"From fuzz@example.org Mon Jan  1 00:00:00 2024\n" + raw + b"\n\nFrom x Tue\n" + raw[: len(raw) // 2])
            items = [list(iter_messages(root / name, max_bytes=len(raw) + 10)) for name in ("one.eml", "Maildir", "box.mbox")]
            items.append(list(iter_messages("-", stdin=io.BytesIO(raw))))
        for found in items:
            for item in found:
                if (item.raw is None) == (item.error is None):
                    raise FuzzFailure("reports", f"{item.where}: neither a message nor an error")
                if item.raw is not None:
                    report_digest(item.raw)
        return items

    def milter(self, raw: bytes, result: Any) -> Any:
        """The milter's header collection (pymilter's ``header`` callback, if installed) and
        its replies for the scan's verdict turned into every action."""
        from ..milter.actions import apply_verdicts
        from ..result import Action

        head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
        headers = _milter_headers(head)
        has_subject = any(name.lower() == "subject" for name, _ in headers)
        recorder = _Recorder()
        for action in Action:
            verdict = dataclasses.replace(result.verdict, action=action)
            apply_verdicts(recorder, {"<a@example.net>": verdict, "<b@example.net>": result.verdict}, has_subject=has_subject)
        return recorder.calls


def _milter_headers(head: bytes) -> list[tuple[str, bytes]]:
    """Split a header block as libmilter hands it over (name, value with folds as LF) and
    feed it to the daemon's ``header`` callback when pymilter is installed."""
    fields: list[tuple[str, bytes]] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + b"\n" + line)
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name.decode("latin-1"), value.lstrip(b" ")))
    try:
        from ..milter.daemon import MilterConnection
    except ImportError:  # pymilter not installed: the pure reply building is still checked
        return fields
    conn = MilterConnection(None)  # type: ignore[arg-type]  # header() needs no daemon
    conn._protocol = 0  # what libmilter negotiates; pymilter's noreply decorator reads it
    for name, value in fields[:1000]:
        conn.header(name, value.decode("utf-8", "surrogateescape"))
    if len(conn.msg.headers) != min(len(fields), 1000):
        raise FuzzFailure("milter", "a header was lost on the way in")
    return fields
