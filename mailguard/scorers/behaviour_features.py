"""Structure and sending features of one message, as pure functions of a `MessageContext`.

Each feature is a small function returning the hits it finds (usually none or one), so it
is well-defined on every message: absent evidence is no hit, never an error. Weights are
learned offline by the combiner, so a feature only has to say *what* it saw; values are
1.0 except where a degree matters (recipient counts), and always bounded.

Times: the message's "receive time" is the date our border MTA wrote on the Received hop
naming the first untrusted client, else the newest Received date, else the injected clock.
Dates are judged against it, never against the wall clock when a Received date exists, so
that scanning 2002 mail in 2025 does not call every message "sent long ago". With no
Received date and no SMTP session (a stored file), the clock judges only a future Date.

The sending-rate features need the store and live in the scorer (`scorers/behaviour.py`).
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import ipaddress
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone

from ..message.context import MessageContext, ReceivedHop, parse_date
from ..message.relay import Network, Relay, client_relay, is_trusted, normalize_ip
from ..result import Hit
from ..message.urls import Url, _psl, extract_urls, registered_domain  # _psl: the one loaded suffix list

__all__ = [
    "DEFAULT_SHORTENERS",
    "EXECUTABLE_EXTENSIONS",
    "SYMBOLS",
    "Settings",
    "border_hop",
    "receive_time",
    "static_hits",
]

# symbol -> (one-line description, default weight). Weights are placeholders until the
# combiner has learned them: modest, spammy signs positive. Signs that fire more on ham than
# on spam in the 2002 corpus (mailing lists rewrite Reply-To and the envelope sender, and send
# in bursts) start at 0: evidence for the combiner to weigh, nothing on their own.
SYMBOLS: dict[str, tuple[str, float]] = {
    "DATE_MISSING": ("no Date header", 0.5),
    "DATE_INVALID": ("a Date header that does not parse as an RFC 5322 date", 0.5),
    "DATE_IN_FUTURE": ("Date more than a day after the message was received", 0.5),
    "DATE_IN_PAST": ("Date more than 30 days before the message was received", 0.3),
    "MID_MISSING": ("no Message-ID header", 0.5),
    "MID_INVALID": ("a Message-ID not of the form <left@right>", 0.3),
    "HELO_NOT_FQDN": ("the client's HELO is a bare word, not a fully qualified name", 0.5),
    "HELO_IP_LITERAL": ("the client's HELO is an IP address", 0.3),
    "HELO_RDNS_MISMATCH": ("the client's HELO and its reverse DNS name are in different domains", 0.2),
    "RDNS_MISSING": ("the client has no reverse DNS name", 0.3),
    "FROM_NAME_SPOOF": ("the From display name shows an address other than the real From address", 0.5),
    "FROM_REPLYTO_DIFF": ("Reply-To is in another registered domain than From", 0.0),
    "FROM_ENVFROM_DIFF": ("the envelope sender (MAIL FROM / Return-Path) is in another registered domain than From", 0.0),
    "SUBJ_ALL_CAPS": ("the subject is mostly capital letters", 0.5),
    "SUBJ_SYMBOLS": ("the subject has many $ ! % * characters", 0.5),
    "SUBJ_EMPTY": ("no subject, or an empty one", 0.3),
    "HTML_ONLY": ("HTML without a text/plain alternative", 0.3),
    "IMAGE_HEAVY": ("images with little visible text", 0.5),
    "LINK_TEXT_MISMATCH": ("a link whose text shows one domain while it points to another", 0.5),
    "URL_IP_HOST": ("a URL whose host is an IP address (dotted, decimal or hex)", 0.5),
    "URL_SHORTENER": ("a URL on a link shortener", 0.3),
    "ATTACH_EXECUTABLE": ("an executable or script attachment (by name, declared or sniffed type)", 0.5),
    "ARCHIVE_EXECUTABLE": ("a zip attachment holding an executable or script by member name", 0.5),
    "MANY_RECIPIENTS": ("more recipients than max_recipients; 1 + log2(count / max_recipients), capped at 4", 0.2),
    "RATE_SENDER": ("this sender's messages in the rate window, log2(count), when above rate_min_count", 0.0),
    "RATE_IP": ("this client IP's messages in the rate window, log2(count), when above rate_min_count", 0.0),
}

DEFAULT_SHORTENERS: tuple[str, ...] = (
    "bit.ly", "bitly.com", "tinyurl.com", "t.co", "goo.gl", "ow.ly", "is.gd", "v.gd", "buff.ly",
    "rebrand.ly", "cutt.ly", "shorturl.at", "tiny.cc", "rb.gy", "t.ly", "bl.ink", "s.id", "lnkd.in",
    "qrco.de", "shorte.st", "adf.ly", "x.co", "tr.im", "snip.ly", "y2u.be", "tiny.one", "urlz.fr",
)

EXECUTABLE_EXTENSIONS: frozenset[str] = frozenset(
    "exe scr pif bat cmd com cpl msi msp dll sys js jse vbs vbe wsf wsh wsc jar ps1 psm1 hta lnk "
    "iso img vhd vhdx reg chm scf inf msc gadget application appref-ms".split()
)
_EXECUTABLE_TYPES = frozenset({
    "application/x-msdownload", "application/x-msdos-program", "application/x-ms-dos-executable",
    "application/x-dosexec", "application/x-executable", "application/vnd.microsoft.portable-executable",
    "application/hta", "application/x-ms-shortcut", "application/java-archive", "application/x-java-archive",
    "application/javascript", "application/x-javascript", "text/javascript", "text/vbscript",
    "application/x-iso9660-image",
})
_SNIFFED_EXECUTABLE = frozenset({"application/x-msdownload", "application/x-executable"})  # PE (MZ), ELF

MAX_FUTURE = timedelta(days=1)
MAX_PAST = timedelta(days=30)
_MAX_SHOWN = 80  # characters of message content quoted in a reason
_IDENT_RDNS = re.compile(r"^from\s+\S+\s+\((?:IDENT:)?[^\s()@\[]{1,200}@([A-Za-z0-9][\w.-]{0,252}\.[A-Za-z]{2,63})\s*\[", re.I)
_MID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
_ADDRESS = re.compile(r"[A-Za-z0-9._%+=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]+|\d+)(?:\.(?:0x[0-9a-f]*|\d+)){0,3}$")  # 3232235777, 0xC0.0xA8.1.1
_SUBJECT_PREFIX = re.compile(r"^(?:\s*(?:(?:re|fwd?|aw|wg|sv|tr)\s*(?:\[\d+\])?\s*:|\[[^\]]{0,40}\]))+", re.I)
_SUBJECT_SYMBOLS = frozenset("$!%*€£¥")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """What the features need from the configuration."""

    trusted: Sequence[Network] = ()
    shorteners: frozenset[str] = frozenset(DEFAULT_SHORTENERS)
    max_recipients: int = 10
    clock: Callable[[], float] = time.time  # "now" when no Received header has a date


def _shown(text: str) -> str:
    return repr(text[:_MAX_SHOWN] + ("..." if len(text) > _MAX_SHOWN else ""))


def _aware(value: datetime) -> datetime:
    """A date with no zone (RFC 5322 ``-0000``) is taken as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _parse_date(text: str) -> datetime | None:
    value = parse_date(text)
    return _aware(value) if value is not None else None


def border_hop(ctx: MessageContext, trusted: Sequence[Network]) -> ReceivedHop | None:
    """The Received header our border wrote: the newest hop naming a client outside
    ``trusted`` (the hop `relay.client_relay` reads when there is no SMTP session)."""
    for hop in ctx.received:
        ip = normalize_ip(hop.ip)
        if ip is not None and not is_trusted(ip, trusted):
            return hop
    return None


def _hop_date(hop: ReceivedHop | None) -> datetime | None:
    try:
        when = hop.date if hop is not None else None
    except (OverflowError, ValueError):
        return None
    return _aware(when) if when is not None else None


def receive_time(ctx: MessageContext, trusted: Sequence[Network] = ()) -> datetime | None:
    """When our border received the message: the date on the border's Received hop, else
    the newest Received date. None when no Received header has a readable date.

    The border hop comes first because hops added inside our network can be much later:
    the 2002 corpus was re-fetched (fetchmail) months after delivery for some messages, and
    judged by its newest hop, ham from January looks "sent 221 days before receipt"."""
    client = normalize_ip(ctx.envelope.client_ip)
    if client is None or is_trusted(client, trusted):  # in a live session the newest hop is ours
        when = _hop_date(border_hop(ctx, trusted))
        if when is not None:
            return when
    for hop in ctx.received:
        when = _hop_date(hop)
        if when is not None:
            return when
    return None


def _domain(address: str) -> str:
    """The registered domain of an address ('' when it has none worth comparing)."""
    if "@" not in address:
        return ""
    host = address.rsplit("@", 1)[1].strip().strip("<>[]").lower().rstrip(".")
    if normalize_ip(host):
        return normalize_ip(host) or ""
    return registered_domain(host) if _HOSTNAME.match(host) else ""


_MAX_CACHED_ADDRESSES = 1000  # characters of header text; bounds the cache's memory


def _addresses(values: Sequence[str]) -> Sequence[tuple[str, str]]:
    """``email.utils.getaddresses(values)``, remembered for recent header values: the same
    From and To lines come back message after message (mailing lists, regular senders) and
    the stdlib parser costs ~15 us a line. Long values are parsed and not remembered."""
    text = ", ".join(values)  # what getaddresses parses
    if len(text) > _MAX_CACHED_ADDRESSES:
        return email.utils.getaddresses([text])
    return _parsed_addresses(text)


@functools.lru_cache(maxsize=2048)
def _parsed_addresses(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(email.utils.getaddresses([text]))


def _first_address(values: Iterable[str]) -> tuple[str, str]:
    for name, addr in _addresses(list(values)):
        if "@" in addr:
            return name, addr.strip().lower()
    return "", ""


# -- the features --------------------------------------------------------------------------


def date_hits(ctx: MessageContext, received_at: datetime, *, judge_past: bool = True) -> list[Hit]:
    """Date missing, unreadable, or far from ``received_at``. With ``judge_past`` False (the
    time is the clock, not a receipt), only the future is judged: a Date after the present
    is wrong whenever the message is read, an old one only says the file is old."""
    values = ctx.header_all("date")
    if not values:
        return [Hit("DATE_MISSING", 1.0, "no Date header")]
    sent = _parse_date(values[0])
    if sent is None:
        return [Hit("DATE_INVALID", 1.0, f"Date {_shown(values[0])}")]
    try:
        delta = sent - received_at
    except OverflowError:
        return [Hit("DATE_INVALID", 1.0, f"Date {_shown(values[0])}")]
    if delta > MAX_FUTURE:
        return [Hit("DATE_IN_FUTURE", 1.0, f"Date {delta.total_seconds() / 3600:.0f} h after receipt")]
    if delta < -MAX_PAST and judge_past:
        return [Hit("DATE_IN_PAST", 1.0, f"Date {-delta.days} days before receipt")]
    return []


def message_id_hits(ctx: MessageContext) -> list[Hit]:
    values = ctx.header_all("message-id")
    if not values:
        return [Hit("MID_MISSING", 1.0, "no Message-ID header")]
    if not _MID.match(values[0].strip()):
        return [Hit("MID_INVALID", 1.0, f"Message-ID {_shown(values[0].strip())}")]
    return []


def _relay_rdns(relay: Relay, hop: ReceivedHop | None) -> str:
    if relay.rdns or relay.source != "received" or hop is None:
        return (relay.rdns or "").strip().lower().rstrip(".")
    # Sendmail writes "(ident@rdns [ip])" and "(IDENT:user@rdns [ip])", which parse_received
    # does not read as a name; without this, those clients would all look nameless
    match = _IDENT_RDNS.search(hop.raw)
    return match.group(1).lower() if match else ""


def helo_hits(relay: Relay | None, hop: ReceivedHop | None = None) -> list[Hit]:
    """The client's HELO name and reverse DNS name, from the SMTP session or the first
    untrusted Received hop (``hop``). Internal mail (no untrusted hop) has none."""
    if relay is None:
        return []
    hits = []
    rdns = _relay_rdns(relay, hop)
    if rdns in ("", "unknown") and (relay.source == "received" or rdns == "unknown"):
        # a Received hop says nothing when there is no name; Postfix's milter says "unknown"
        hits.append(Hit("RDNS_MISSING", 1.0, f"client {relay.ip} has no reverse name"))
        rdns = ""
    helo = (relay.helo or "").strip().strip("[]").lower().rstrip(".")
    if not helo:
        return hits
    if normalize_ip(helo) is not None:
        hits.append(Hit("HELO_IP_LITERAL", 1.0, f"HELO {_shown(helo)}"))
    elif "." not in helo:
        hits.append(Hit("HELO_NOT_FQDN", 1.0, f"HELO {_shown(helo)}"))
    elif rdns and _HOSTNAME.match(helo) and registered_domain(helo) != registered_domain(rdns):
        hits.append(Hit("HELO_RDNS_MISMATCH", 1.0, f"HELO {_shown(helo)}, client {_shown(rdns)}"))
    return hits


def from_hits(ctx: MessageContext) -> list[Hit]:
    name, addr = _first_address(ctx.header_all("from"))
    if not addr:
        return []
    hits = []
    shown = {a.lower() for a in _ADDRESS.findall(name)}
    if shown - {addr}:
        hits.append(Hit("FROM_NAME_SPOOF", 1.0, f"name shows {_shown(sorted(shown - {addr})[0])}, address {_shown(addr)}"))
    domain = _domain(addr)
    if not domain:
        return hits
    for _, reply in _addresses(ctx.header_all("reply-to")):
        other = _domain(reply)
        if other and other != domain:
            hits.append(Hit("FROM_REPLYTO_DIFF", 1.0, f"From {domain}, Reply-To {other}"))
            break
    env = ctx.envelope.mail_from
    if env is None:  # no SMTP session: the Return-Path the delivering MTA wrote
        env = _first_address(ctx.header_all("return-path")[:1])[1]
    other = _domain(env)
    if other and other != domain:
        hits.append(Hit("FROM_ENVFROM_DIFF", 1.0, f"From {domain}, envelope sender {other}"))
    return hits


def subject_hits(ctx: MessageContext) -> list[Hit]:
    subject = ctx.subject.strip()
    if not subject:
        return [Hit("SUBJ_EMPTY", 1.0, "no subject")]
    core = _SUBJECT_PREFIX.sub("", subject)  # "Re: [list] ..." prefixes are not the sender's words
    hits = []
    # counted by map() over the characters rather than a loop (no character is both upper and lower case)
    upper = sum(map(str.isupper, core))
    cased = upper + sum(map(str.islower, core))
    if cased >= 10 and upper >= 0.8 * cased:
        hits.append(Hit("SUBJ_ALL_CAPS", 1.0, f"{upper} of {cased} letters are capitals"))
    symbols = sum(map(core.count, _SUBJECT_SYMBOLS))
    if symbols >= 3:
        hits.append(Hit("SUBJ_SYMBOLS", 1.0, f"{symbols} of $!%* in the subject"))
    return hits


def body_hits(ctx: MessageContext) -> list[Hit]:
    hits = []
    kinds = {p.content_type for p in ctx.text_parts}
    if "text/html" in kinds and "text/plain" not in kinds:
        hits.append(Hit("HTML_ONLY", 1.0, "HTML with no text/plain part"))
    images = ctx.image_count + sum(1 for a in ctx.attachments if (a.sniffed_type or "").startswith("image/"))
    if images:
        visible = len("".join(ctx.text.split()))
        if visible < 300:
            hits.append(Hit("IMAGE_HEAVY", 1.0, f"{images} images, {visible} characters of text"))
    return hits


def _shown_domain(text: str) -> str:
    """The registered domain a link's text shows the reader ('' when it shows none)."""
    urls, _ = extract_urls([text], 1)
    host = urls[0].host if urls else text.strip().strip("<>()[]").lower().rstrip(".")
    if normalize_ip(host) is not None:
        return normalize_ip(host) or ""
    if _HOSTNAME.match(host):  # "paypal.com" is a domain; "report.pdf" is not (no such suffix)
        return _psl().privatesuffix(host, accept_unknown=False) or ""
    return ""


def link_hits(ctx: MessageContext) -> list[Hit]:
    for href, text in ctx.html_links[: ctx.limits.max_urls]:
        if not text or ("." not in text) or not href.lower().startswith(("http:", "https:")):
            continue
        shown = _shown_domain(text[:300])
        if not shown:
            continue
        targets, _ = extract_urls([href[:2000]], 1)
        if targets and targets[0].domain != shown:
            return [Hit("LINK_TEXT_MISMATCH", 1.0, f"text shows {shown}, link goes to {targets[0].domain}")]
    return []


def _numeric_host(url: Url) -> bool:
    return _NUMERIC_HOST.match(url.host) is not None or (":" in url.host and normalize_ip(url.host) is not None)


def url_hits(ctx: MessageContext, shorteners: frozenset[str]) -> list[Hit]:
    hits = []
    ip_url = next((u for u in ctx.urls if _numeric_host(u)), None)
    if ip_url is not None:
        hits.append(Hit("URL_IP_HOST", 1.0, f"URL host {_shown(ip_url.host)}"))
    for url in ctx.urls:
        host = url.host
        if host in shorteners or url.domain in shorteners:
            hits.append(Hit("URL_SHORTENER", 1.0, f"URL on {host}"))
            break
    return hits


def is_executable_name(filename: str) -> bool:
    """``invoice.pdf.exe``, ``run.bat.`` (Windows drops trailing dots and spaces), ``dir/x.js``."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip().rstrip(". ").lower()
    return "." in name and name.rsplit(".", 1)[1] in EXECUTABLE_EXTENSIONS


def attachment_hits(ctx: MessageContext) -> list[Hit]:
    hits = []
    for att in ctx.attachments:
        if is_executable_name(att.filename) or att.declared_type in _EXECUTABLE_TYPES or att.sniffed_type in _SNIFFED_EXECUTABLE:
            kind = att.sniffed_type or att.declared_type
            hits.append(Hit("ATTACH_EXECUTABLE", 1.0, f"attachment {_shown(att.filename)} ({kind})"))
            break
    for att in ctx.attachments:
        inner = next((m for m in att.members if is_executable_name(m)), None)
        if inner is not None:
            hits.append(Hit("ARCHIVE_EXECUTABLE", 1.0, f"{_shown(att.filename)} holds {_shown(inner)}"))
            break
    return hits


def recipient_hits(ctx: MessageContext, max_recipients: int) -> list[Hit]:
    listed = {a.lower() for _, a in _addresses(ctx.header_all("to") + ctx.header_all("cc")) if "@" in a}
    count = max(len(listed), len(set(ctx.envelope.rcpt_to)))
    if count <= max_recipients:
        return []
    value = min(4.0, 1.0 + math.log2(count / max_recipients))
    return [Hit("MANY_RECIPIENTS", value, f"{count} recipients")]


def static_hits(ctx: MessageContext, settings: Settings) -> list[Hit]:
    """Every feature that needs no store, in a fixed order."""
    received_at = receive_time(ctx, settings.trusted)
    # no Received date: in a live SMTP session the clock is the receive time; without one
    # (a stored file) the clock is only an upper bound, good for judging the future alone
    judge_past = received_at is not None or ctx.envelope.live
    if received_at is None:
        received_at = datetime.fromtimestamp(settings.clock(), timezone.utc)
    return [
        *date_hits(ctx, received_at, judge_past=judge_past),
        *message_id_hits(ctx),
        *helo_hits(client_relay(ctx, settings.trusted), border_hop(ctx, settings.trusted)),
        *from_hits(ctx),
        *subject_hits(ctx),
        *body_hits(ctx),
        *link_hits(ctx),
        *url_hits(ctx, settings.shorteners),
        *attachment_hits(ctx),
        *recipient_hits(ctx, settings.max_recipients),
    ]


def ip_rate_key(ip: str) -> str:
    """IPv4 counts per address; IPv6 per /64, the block one subscriber usually holds."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)
