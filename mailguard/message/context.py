"""The message as scorers see it: SMTP envelope plus raw bytes, parsed once into lazy views.

Parsing never raises. Whatever cannot be decoded, or lies past a configured bound, is
skipped and noted in ``MessageContext.problems`` so the result can say what was not seen.
"""

from __future__ import annotations

import dataclasses
import email
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import functools
import hashlib
import io
import ipaddress
import re
import struct
import zipfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import filetype

from .limits import Limits
from .textdecode import decode_bytes, decode_header_value
from .html import html_to_text
from .urls import Url, extract_urls

__all__ = [
    "Attachment",
    "Envelope",
    "MessageContext",
    "PartInfo",
    "ReceivedHop",
    "SafeMessage",
    "TextPart",
    "parse_date",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Envelope:
    """What the SMTP session says about a message (none of it is in the message itself)."""

    client_ip: str | None = None
    client_name: str | None = None  # reverse DNS name as the MTA saw it
    helo: str | None = None
    mail_from: str | None = None  # envelope sender; "" is the null sender <>
    rcpt_to: tuple[str, ...] = ()
    auth_user: str | None = None
    queue_id: str | None = None

    @property
    def live(self) -> bool:
        """True when an MTA handed this message over in an SMTP session happening now (it names
        the connecting client): then "now" is the clock, whatever dates the message carries."""
        return bool(self.client_ip)


@dataclasses.dataclass(frozen=True)
class TextPart:
    content_type: str  # text/plain or text/html
    charset: str  # the codec actually used
    text: str  # for HTML, the visible text


@dataclasses.dataclass(frozen=True)
class Attachment:
    filename: str
    declared_type: str
    sniffed_type: str | None  # MIME type from magic bytes, None when unknown
    size: int
    sha256: str
    # Member names of a zip archive, from its central directory only (nothing is extracted);
    # at most ``Limits.max_attachments`` names, each cut at 255 characters.
    members: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PartInfo:
    """One leaf MIME part as declared (whatever it decoded to)."""

    content_type: str
    filename: str
    transfer_encoding: str


@dataclasses.dataclass(frozen=True)
class ReceivedHop:
    """One Received header, newest first. Fields are None when the header does not say."""

    raw: str
    helo: str | None
    rdns: str | None
    ip: str | None
    by: str | None
    date_text: str | None

    @functools.cached_property  # several scorers ask for it
    def date(self) -> datetime | None:
        return parse_date(self.date_text)


def parse_date(text: str | None) -> datetime | None:
    """An RFC 5322 date as the stdlib reads it, or None when it is not one: a sender writes
    what it likes there (a year of 20 digits raised OverflowError, found by benchmarks/fuzz.py)."""
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class SafeMessage(email.message.Message):
    """The stdlib's (compat32) message, but an RFC 2231 parameter in a charset that cannot
    decode with errors="replace" (``boundary*=idna''...``, a punycode file name) is read
    anyway instead of raising UnicodeError, which failed the whole parse (the parser asks
    for the boundary) or lost the part. Pass as ``_class`` to the stdlib parsers."""

    def get_filename(self, failobj: Any = None) -> Any:
        # Most parts name no file, and the stdlib parses both headers' parameters to find
        # that out (a third of reading a part); a parameter named filename or name holds "name".
        if not any("name" in str(self.get(header, "")).lower() for header in ("content-disposition", "content-type")):
            return failobj
        try:
            return super().get_filename(failobj)
        except UnicodeError:
            value = self.get_param("filename", None, "content-disposition") or self.get_param("name", None)
            return _rfc2231_text(value).strip() if value else failobj

    def get_boundary(self, failobj: Any = None) -> Any:
        try:
            return super().get_boundary(failobj)
        except UnicodeError:
            value = self.get_param("boundary", None)
            return _rfc2231_text(value).rstrip() if value else failobj


def _rfc2231_text(value: Any) -> str:
    """The parameter's bytes read as Latin-1 (ASCII stays intact; detection guesses wrong on
    a few bytes), when its declared charset cannot decode them."""
    if isinstance(value, tuple):  # (charset, language, the %-unquoted text, one char per byte)
        return str(value[2])
    return str(value)


@dataclasses.dataclass
class _Parsed:
    headers: list[tuple[str, str]]
    text_parts: list[TextPart]
    html_links: list[tuple[str, str]]  # (href, link text) from HTML parts
    image_count: int
    attachments: list[Attachment]
    part_count: int
    max_depth_seen: int
    parts: list[PartInfo] = dataclasses.field(default_factory=list)


class MessageContext:
    """Envelope + raw bytes + lazily cached views; the only thing scorers read.

    Views are computed on first use and shared by every scorer (and by every
    per-recipient copy made with `for_user`).
    """

    def __init__(
        self,
        raw: bytes,
        envelope: Envelope | None = None,
        *,
        limits: Limits | None = None,
        user: str | None = None,
    ) -> None:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise TypeError("MessageContext needs the raw message as bytes")
        self.raw = bytes(raw)
        self.envelope = envelope or Envelope()
        self.limits = limits or Limits()
        self.user = user
        self.problems: list[str] = []
        # Headers scorers ask to add (Authentication-Results, X-Virus-Status...); per message, not per user.
        self.added_headers: list[tuple[str, str]] = []
        # True when scanning it is the message arriving: scorers count it in sending rates and
        # bulk recipients. False for a second look at mail already counted (a report's re-scan).
        self.arriving = True
        self._shared: dict[str, Any] = {}

    @classmethod
    def from_bytes(cls, raw: bytes, envelope: Envelope | None = None, **kw: Any) -> MessageContext:
        return cls(raw, envelope, **kw)

    def for_user(self, user: str | None) -> MessageContext:
        """A view of the same message for one recipient, sharing every parsed view."""
        other = object.__new__(MessageContext)
        other.__dict__.update(
            {k: v for k, v in self.__dict__.items() if k in ("raw", "envelope", "limits", "problems", "added_headers", "arriving", "_shared")}
        )
        other.user = user
        return other

    def _view(self, name: str, build: Any) -> Any:
        try:
            return self._shared[name]
        except KeyError:
            value = self._shared[name] = build()
            return value

    # -- parsing --------------------------------------------------------------------------

    @property
    def _parsed(self) -> _Parsed:
        return self._view("parsed", self._parse)

    def _parse(self) -> _Parsed:
        limits = self.limits
        raw = self.raw
        if len(raw) > limits.max_parse_bytes:
            self.problems.append(
                f"message is {len(raw)} bytes; only the first {limits.max_parse_bytes} were parsed"
            )
            raw = raw[: limits.max_parse_bytes]
        if b"\0" in raw:
            self.problems.append("NUL bytes removed before parsing")
            raw = raw.replace(b"\0", b"")
        try:
            msg = email.message_from_bytes(raw, _class=SafeMessage, policy=email.policy.compat32)
        except Exception as exc:  # the stdlib parser is lenient, but never trust it fully
            # (e.g. RecursionError on very deep multipart nesting): keep the headers and
            # read the body as one unsplit part rather than seeing nothing at all
            self.problems.append(f"MIME parse failed ({type(exc).__name__}); body read unsplit")
            try:
                msg = email.parser.BytesParser(SafeMessage, policy=email.policy.compat32).parsebytes(raw, headersonly=True)
            except Exception:
                return _Parsed([], [], [], 0, [], 0, 0)
        parsed = _Parsed(self._headers_of(msg), [], [], 0, [], 0, 0)
        total_text = 0
        for part, depth in self._walk(msg, parsed):
            try:
                total_text += self._read_part(part, parsed, total_text)
            except Exception as exc:  # one bad part never spoils the others
                self.problems.append(f"part {parsed.part_count} skipped: {type(exc).__name__}")
        return parsed

    def _headers_of(self, msg: email.message.Message) -> list[tuple[str, str]]:
        items = list(msg.raw_items())  # items() turns raw 8-bit bytes into U+FFFD; keep them
        if len(items) > self.limits.max_headers:
            self.problems.append(f"{len(items)} headers; only the first {self.limits.max_headers} read")
            items = items[: self.limits.max_headers]
        limit = self.limits.max_header_bytes
        return [(name.lower(), decode_header_value(value, limit)) for name, value in items]

    def _walk(self, root: email.message.Message, parsed: _Parsed) -> Iterator[tuple[email.message.Message, int]]:
        """Leaf parts, depth first, within the part-count and depth bounds (iterative: no recursion)."""
        limits = self.limits
        stack: list[tuple[email.message.Message, int]] = [(root, 0)]
        while stack:
            part, depth = stack.pop()
            if parsed.part_count >= limits.max_parts:
                self.problems.append(f"more than {limits.max_parts} MIME parts; the rest skipped")
                return
            parsed.part_count += 1
            parsed.max_depth_seen = max(parsed.max_depth_seen, depth)
            for defect in part.defects:  # broken boundaries, bad base64, missing headers ...
                self.problems.append(f"part {parsed.part_count}: {type(defect).__name__}")
            if not part.is_multipart():  # a leaf; its payload is read (and may fail) in _read_part
                yield part, depth
                continue
            # only a multipart's payload is read here: for a leaf, get_payload() decodes 8-bit
            # bytes with the declared charset and lets that codec's errors out (punycode, idna)
            if depth >= limits.max_depth:
                self.problems.append(f"MIME nesting deeper than {limits.max_depth}; inner parts skipped")
                continue
            # children of a multipart, or the one message of a message/rfc822
            stack.extend((child, depth + 1) for child in reversed(part.get_payload()))

    def _read_part(self, part: email.message.Message, parsed: _Parsed, total_text: int) -> int:
        limits = self.limits
        ctype = (part.get_content_type() or "text/plain").lower()
        if ctype.startswith("multipart/"):  # boundary missing or never found: read it as text
            ctype = "text/plain"
        disposition = str(part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        filename = decode_header_value(part.get_filename() or "")
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()[:20]
        parsed.parts.append(PartInfo(ctype, filename, cte))
        seen_defects = len(part.defects)
        data = part.get_payload(decode=True)
        if data is None:
            data = b""
        for defect in part.defects[seen_defects:]:  # found while decoding (bad base64)
            self.problems.append(f"part {parsed.part_count}: {type(defect).__name__}")
        if cte == "quoted-printable":
            body = _encoded_body(part)
            if _BAD_QP.search(body):
                self.problems.append(f"part {parsed.part_count}: malformed quoted-printable kept as written")
        is_text = ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename
        if is_text:
            room = min(limits.max_part_text_bytes, limits.max_total_text_bytes - total_text)
            if room <= 0:
                self.problems.append("text beyond max_total_text_bytes skipped")
                return 0
            if len(data) > room:
                self.problems.append(f"part {parsed.part_count}: text truncated to {room} bytes")
                data = data[:room]
            text, codec = decode_bytes(data, part.get_content_charset())
            if ctype == "text/html":
                html = html_to_text(text[: limits.max_html_bytes])
                parsed.html_links.extend(html.links)
                parsed.image_count += html.image_count
                text = html.text
            parsed.text_parts.append(TextPart(ctype, codec, text))
            return len(data)
        if len(parsed.attachments) >= limits.max_attachments:
            note = f"more than {limits.max_attachments} attachments; the rest skipped"
            if note not in self.problems:
                self.problems.append(note)
            return 0
        kind = filetype.guess(data[:8192]) if data else None
        sniffed = kind.mime if kind else None
        members: tuple[str, ...] = ()
        if sniffed == "application/zip" or ctype in _ZIP_TYPES or filename.lower().endswith(".zip"):
            members = self._zip_members(data, parsed.part_count)
        parsed.attachments.append(
            Attachment(
                filename=filename,
                declared_type=ctype,
                sniffed_type=sniffed,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                members=members,
            )
        )
        return 0

    def _zip_members(self, data: bytes, part_no: int) -> tuple[str, ...]:
        """Member names from the zip's central directory, never extracting anything.

        zipfile reads the whole central directory, so its size is checked first from the
        end-of-central-directory record: a zip declaring more than ``max_attachments``
        members, or a bigger directory than that many would need, is noted and not listed.
        """
        bound = self.limits.max_attachments
        eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - _EOCD_SEARCH))
        if eocd < 0 or len(data) - eocd < _EOCD.size:
            self.problems.append(f"part {part_no}: corrupt zip archive (no end of central directory)")
            return ()
        entries, cd_size = _EOCD.unpack_from(data, eocd)[4:6]
        if entries > bound or cd_size > bound * _MAX_CD_BYTES_PER_MEMBER:
            self.problems.append(f"part {part_no}: zip archive with {entries} members; names not read (bound {bound})")
            return ()
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = archive.namelist()
        except Exception as exc:  # BadZipFile, but also ValueError/EOFError/... on crafted input
            self.problems.append(f"part {part_no}: corrupt zip archive ({type(exc).__name__})")
            return ()
        return tuple(name[:255] for name in names[:bound])

    # -- views ----------------------------------------------------------------------------

    @property
    def headers(self) -> list[tuple[str, str]]:
        """All top-level headers as (lower-case name, decoded value), in order."""
        return self._parsed.headers

    @property
    def _header_index(self) -> dict[str, list[str]]:
        """Header values by lower-case name, in order: every scorer looks headers up by name."""

        def build() -> dict[str, list[str]]:
            index: dict[str, list[str]] = {}
            for key, value in self._parsed.headers:
                index.setdefault(key, []).append(value)
            return index

        return self._view("header_index", build)

    def header(self, name: str, default: str = "") -> str:
        """The first header called ``name`` (case-insensitive)."""
        values = self._header_index.get(name.lower())
        return values[0] if values else default

    def header_all(self, name: str) -> list[str]:
        return list(self._header_index.get(name.lower(), ()))

    @property
    def subject(self) -> str:
        return self.header("subject")

    @property
    def text_parts(self) -> list[TextPart]:
        return self._parsed.text_parts

    @property
    def text(self) -> str:
        """All visible body text, parts joined by blank lines."""
        return self._view("text", lambda: "\n\n".join(p.text for p in self._parsed.text_parts))

    @property
    def html_links(self) -> list[tuple[str, str]]:
        return self._parsed.html_links

    @property
    def image_count(self) -> int:
        return self._parsed.image_count

    @property
    def attachments(self) -> list[Attachment]:
        return self._parsed.attachments

    @property
    def parts(self) -> list[PartInfo]:
        """Every leaf part read (within the bounds), in order."""
        return self._parsed.parts

    @property
    def part_count(self) -> int:
        return self._parsed.part_count

    @property
    def urls(self) -> list[Url]:
        """Distinct URLs from the text and from HTML links, bounded by ``max_urls``."""

        def build() -> list[Url]:
            sources = [self.text] + [href for href, _ in self._parsed.html_links]
            urls, dropped = extract_urls(sources, self.limits.max_urls)
            if dropped:
                self.problems.append(f"{dropped} URLs past max_urls ignored")
            return urls

        return self._view("urls", build)

    @property
    def url_domains(self) -> list[str]:
        """Registered domains (or IP literals) of the URLs, distinct, in order of appearance."""
        return self._view("url_domains", lambda: list(dict.fromkeys(u.domain for u in self.urls if u.domain)))

    @property
    def received(self) -> list[ReceivedHop]:
        """The Received chain, newest (closest to us) first, bounded by ``max_received``."""

        def build() -> list[ReceivedHop]:
            values = self.header_all("received")
            if len(values) > self.limits.max_received:
                self.problems.append(f"{len(values)} Received headers; only {self.limits.max_received} read")
                values = values[: self.limits.max_received]
            return [parse_received(v) for v in values]

        return self._view("received", build)

    @property
    def digest(self) -> str:
        """sha256 of the raw bytes: the identity used to deduplicate learning."""
        return self._view("digest", lambda: hashlib.sha256(self.raw).hexdigest())

    def add_header(self, name: str, value: str) -> None:
        """Ask for a header on the delivered message (a scorer's own result, e.g. Authentication-Results).
        Line breaks are removed where every header is finished, in `Policy.decide`."""
        if (name, value) not in self.added_headers:
            self.added_headers.append((name, value))

    def cached(self, name: str, build: Any) -> Any:
        """A scorer-defined view, computed once per message (e.g. its token list)."""
        return self._view("x:" + name, build)


_ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record (APPNOTE 4.3.16), 22 bytes
_EOCD_SEARCH = _EOCD.size + 65535  # the record ends the file, followed by a comment of at most 64 KiB
_MAX_CD_BYTES_PER_MEMBER = 1024  # 46-byte header + name + extra field + comment, generously
_BAD_QP = re.compile(r"=(?![0-9A-Fa-f]{2}|[ \t]*\r?$)", re.M)
_RECEIVED_FROM = re.compile(r"^\s*from\s+(\S+)(?:\s+\(([^)]*)\))?", re.I)
_RECEIVED_BY = re.compile(r"\sby\s+([\w.-]+)", re.I)
_IP_IN_BRACKETS = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_HELO_IN_COMMENT = re.compile(r"\bhelo(?:=|\s+)([^\s)]+)", re.I)
_HOSTNAME = re.compile(r"^[A-Za-z0-9][\w.-]*\.[A-Za-z]{2,}$")


def _encoded_body(part: email.message.Message) -> str:
    """A leaf's body as transferred (still quoted-printable or base64). ``get_payload()``
    decodes 8-bit bytes in it with the declared charset, and a codec that cannot decode with
    errors="replace" (punycode, idna) raises: then the stored text is read as ASCII instead."""
    try:
        body = part.get_payload()
    except (UnicodeError, LookupError, ValueError):
        body = getattr(part, "_payload", "")  # the surrogate-escaped text the parser stored
        if isinstance(body, str):
            body = body.encode("ascii", "surrogateescape").decode("ascii", "replace")
    return body if isinstance(body, str) else ""


def parse_received(raw: str) -> ReceivedHop:
    """Read the common Received forms (Postfix, Sendmail, Exim, qmail); unknown parts stay None."""
    raw = " ".join(raw.split())
    helo = rdns = ip = by = None
    match = _RECEIVED_FROM.search(raw)
    if match:
        helo = match.group(1).strip("[]") or None
        inner = match.group(2) or ""
        ip_match = _IP_IN_BRACKETS.search(inner) or _IP_IN_BRACKETS.search(match.group(0))
        if ip_match:
            ip = _valid_ip(ip_match.group(1))
        words = inner.replace("[", " ").split()
        helo_kw = _HELO_IN_COMMENT.search(inner)
        if helo_kw:  # Exim "from RDNS ([IP] helo=HELO)", qmail "from RDNS (HELO HELO)"
            first = helo or ""
            helo = helo_kw.group(1).strip("[]") or None
            if _HOSTNAME.match(first):
                rdns = first.lower()
        elif words and _HOSTNAME.match(words[0]) and words[0].lower() != "helo":
            rdns = words[0].lower()
    else:
        ip_match = _IP_IN_BRACKETS.search(raw)
        if ip_match:
            ip = _valid_ip(ip_match.group(1))
    by_match = _RECEIVED_BY.search(raw)
    if by_match:
        by = by_match.group(1).lower()
    date_text = raw.rsplit(";", 1)[1].strip() if ";" in raw else None
    return ReceivedHop(raw=raw, helo=helo, rdns=rdns, ip=ip, by=by, date_text=date_text)


def _valid_ip(text: str) -> str | None:
    if len(text) > _MAX_CACHED_IP_CHARS:  # no address, but let ipaddress say so
        return _canonical_ip.__wrapped__(text)
    return _canonical_ip(text)


_MAX_CACHED_IP_CHARS = 45  # the longest address text (IPv4-mapped IPv6)


@functools.lru_cache(maxsize=4096)  # relays recur message after message; parsing one costs ~7 us
def _canonical_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
