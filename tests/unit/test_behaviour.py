"""The behaviour scorer: one positive and one negative case per feature, the sending-rate
counters on the memory and SQLite stores with an injected clock, and never raising."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import math
import random
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

import pytest

from mailguard import Config
from mailguard.scorers.behaviour_features import SYMBOLS, receive_time
from mailguard.config import StoreConfig
from mailguard.errors import ConfigError, StoreError
from mailguard.message import Envelope, MessageContext
from mailguard.message.relay import parse_networks
from mailguard.scorer import Services
from mailguard.scorers.behaviour import BehaviourScorer
from mailguard.stores.memory import MemoryStore
from mailguard.stores.sqlite import SqliteStore

from ..conftest import SAMPLES

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc).timestamp()
BORDER = "from mail.sender.example (mail.sender.example [203.0.113.5]) by mx.example.net (Postfix) with ESMTP id 1; {date}"
RCVD_DATE = "Tue, 6 Aug 2002 10:00:00 +0000"


def message(
    *,
    headers: Sequence[tuple[str, str]] | None = None,
    body: str = "Hello Bob,\n\nthe agenda for Thursday is attached below.\n",
    content_type: str = "text/plain; charset=utf-8",
    defaults: bool = True,
) -> bytes:
    """A message with sane defaults for every header a feature reads; ``headers`` override them."""
    base = {
        "Received": BORDER.format(date=RCVD_DATE),
        "From": "Alice <alice@sender.example>",
        "To": "bob@example.net",
        "Subject": "Agenda for Thursday",
        "Date": "Tue, 6 Aug 2002 09:58:00 +0000",
        "Message-ID": "<20020806095800.1234@sender.example>",
        "Return-Path": "<alice@sender.example>",
    } if defaults else {}
    lines: list[tuple[str, str]] = []
    overridden = {k.lower() for k, _ in headers or []}
    lines += [(k, v) for k, v in base.items() if k.lower() not in overridden]
    lines += [(k, v) for k, v in headers or [] if v is not None]
    lines += [("MIME-Version", "1.0"), ("Content-Type", content_type)]
    head = "".join(f"{k}: {v}\r\n" for k, v in lines)
    return (head + "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")).encode()


def scorer(store=None, clock=lambda: NOW, **kw) -> BehaviourScorer:
    return BehaviourScorer(store if store is not None else MemoryStore(clock=clock), clock=clock, **kw)


def symbols(raw: bytes | MessageContext, envelope: Envelope | None = None, **kw) -> dict[str, float]:
    ctx = raw if isinstance(raw, MessageContext) else MessageContext(raw, envelope)
    hits = asyncio.run(scorer(**kw).score(ctx))
    assert all(h.symbol in SYMBOLS for h in hits)
    return {h.symbol: h.value for h in hits}


def test_a_plain_message_fires_nothing():
    assert symbols(message()) == {}


def test_info_declares_every_symbol_with_modest_weights():
    info = scorer().info
    assert info.group == "behaviour" and not info.learns and not info.network
    assert set(info.symbols) == set(SYMBOLS) == set(info.default_weights)
    assert all(desc and "\n" not in desc for desc in info.symbols.values())
    assert all(-1.0 <= w <= 1.0 for w in info.default_weights.values())


# -- Date ----------------------------------------------------------------------------------


def test_date_missing():
    assert "DATE_MISSING" in symbols(message(headers=[("Date", None)]))


def test_date_malformed():
    assert "DATE_INVALID" in symbols(message(headers=[("Date", "2002/09/14 Sat 02:29:32 CDT")]))


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Thu, 8 Aug 2002 10:00:00 +0000", "DATE_IN_FUTURE"),  # two days after receipt
        ("Tue, 6 Aug 2002 20:00:00 +0000", None),  # ten hours: clocks and zones are sloppy
        ("Mon, 1 Jul 2002 10:00:00 +0000", "DATE_IN_PAST"),  # 36 days before
        ("Thu, 22 Aug 0102 12:07:35 +0800", "DATE_IN_PAST"),  # spamware's year-1900 bug
        ("Mon, 15 Jul 2002 10:00:00 +0000", None),  # 22 days
    ],
)
def test_date_judged_against_the_received_date_not_the_clock(date, expected):
    # the clock says 2025: a 2002 message must still be judged against its 2002 receipt
    found = symbols(message(headers=[("Date", date)]))
    assert {s for s in found if s.startswith("DATE_")} == ({expected} if expected else set())


def test_receive_time_is_the_border_hop_not_a_later_internal_one():
    # re-fetched by fetchmail seven months after our border received it (as in the 2002 corpus)
    internal = "from localhost (localhost [127.0.0.1]) by mx.example.net (Postfix); Mon, 9 Sep 2002 17:57:42 +0100"
    raw = message(headers=[("Received", internal), ("Date", "Thu, 31 Jan 2002 22:44:14 -0700")]).replace(
        b"Received: " + internal.encode() + b"\r\n", b""
    )
    border = BORDER.format(date="Fri, 1 Feb 2002 05:48:53 +0000")
    raw = f"Received: {internal}\r\nReceived: {border}\r\n".encode() + raw
    ctx = MessageContext(raw)
    assert receive_time(ctx, scorer().settings.trusted) == datetime(2002, 2, 1, 5, 48, 53, tzinfo=timezone.utc)
    assert "DATE_IN_PAST" not in symbols(ctx)
    # with nothing trusted, the newest hop is the border: seven months later, "in the past"
    assert "DATE_IN_PAST" in symbols(MessageContext(raw), trusted=())


def test_without_received_the_clock_judges_the_future_only():
    no_rcvd = [("Received", None)]
    assert "DATE_IN_FUTURE" in symbols(message(headers=[*no_rcvd, ("Date", "Wed, 04 Oct 2028 12:05:01 -0400")]))
    assert symbols(message(headers=no_rcvd)) == {}  # a 2002 file read in 2025 is just old
    # in a live SMTP session the clock is the receive time, so an old Date counts
    live = Envelope(client_ip="203.0.113.5", client_name="mail.sender.example", helo="mail.sender.example")
    assert "DATE_IN_PAST" in symbols(message(headers=no_rcvd), live)
    assert symbols(message(headers=[*no_rcvd, ("Date", "Sat, 1 Mar 2025 11:58:00 +0000")]), live) == {}


# -- Message-ID ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mid", "expected"),
    [(None, "MID_MISSING"), ("PM200011:12:45 AM", "MID_INVALID"), ("<E9D312B69C2346E8>", "MID_INVALID"), ("<a.b@c>", None)],
)
def test_message_id(mid, expected):
    found = symbols(message(headers=[("Message-ID", mid)]))
    assert {s for s in found if s.startswith("MID_")} == ({expected} if expected else set())


# -- HELO and reverse DNS ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("helo", "rdns", "expected"),
    [
        ("dd_it7", "mail.sender.example", {"HELO_NOT_FQDN"}),
        ("[203.0.113.5]", "mail.sender.example", {"HELO_IP_LITERAL"}),
        ("mail.sender.example", "mail.sender.example", set()),
        ("smtp.sender.example", "out7.mail.sender.example", set()),  # same registered domain
        ("mail.bank.example", "dsl-5.isp.example", {"HELO_RDNS_MISMATCH"}),
        ("mail.sender.example", "unknown", {"RDNS_MISSING"}),  # Postfix's milter macro
    ],
)
def test_helo_from_the_smtp_session(helo, rdns, expected):
    envelope = Envelope(client_ip="203.0.113.5", client_name=rdns, helo=helo)
    found = symbols(message(), envelope)
    assert {s for s in found if s.startswith(("HELO_", "RDNS_"))} == expected


@pytest.mark.parametrize(
    ("hop", "expected"),
    [
        ("from lewis (unknown [203.0.113.9]) by mx.example.net (Postfix)", {"HELO_NOT_FQDN", "RDNS_MISSING"}),
        ("from 203.0.113.9 ([203.0.113.9]) by mx.example.net (8.11.6)", {"HELO_IP_LITERAL", "RDNS_MISSING"}),
        # Sendmail's "ident@name": the client has a name
        ("from lugh.tuatha.org (root@lugh.tuatha.org [194.125.145.45]) by mx.example.net (8.11.6)", set()),
        ("from web.tb.tf (route-64.telocity.com [64.131.126.36]) by mx.example.net (8.11.6)", {"HELO_RDNS_MISMATCH"}),
    ],
)
def test_helo_from_the_first_untrusted_received_hop(hop, expected):
    internal = "from bareword (localhost [127.0.0.1]) by mx.example.net (Postfix)"
    raw = message(headers=[("Received", internal + "; " + RCVD_DATE)])
    raw = f"Received: {hop}; {RCVD_DATE}\r\n".encode() + raw  # parsed newest first: internal, then hop
    raw = raw.replace(f"Received: {hop}; {RCVD_DATE}\r\n".encode(), b"")
    raw = raw.replace(f"Received: {internal}".encode(), f"Received: {internal}; {RCVD_DATE}\r\nReceived: {hop}".encode(), 1)
    found = symbols(raw)
    assert {s for s in found if s.startswith(("HELO_", "RDNS_"))} == expected


def test_no_helo_judgement_for_mail_from_trusted_networks():
    envelope = Envelope(client_ip="198.51.100.7", client_name="unknown", helo="bareword")
    assert {"HELO_NOT_FQDN", "RDNS_MISSING"} <= set(symbols(message(), envelope))
    trusted = parse_networks(["198.51.100.0/24", "203.0.113.0/24"], "test")
    found = symbols(message(), envelope, trusted=trusted)  # the session and the Received hop are ours
    assert not {s for s in found if s.startswith(("HELO_", "RDNS_"))}


# -- From, Reply-To, envelope sender -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fires"),
    [
        ('"service@paypal.com" <x7@evil.example>', True),
        ('"PayPal (service@paypal.com)" <x7@evil.example>', True),
        ('"alice@sender.example" <Alice@Sender.Example>', False),  # the same address
        ("Alice Smith <alice@sender.example>", False),
    ],
)
def test_from_display_name_spoof(value, fires):
    assert ("FROM_NAME_SPOOF" in symbols(message(headers=[("From", value)]))) is fires


@pytest.mark.parametrize(("reply_to", "fires"), [("win@prize.example", True), ("alice@lists.sender.example", False)])
def test_reply_to_domain(reply_to, fires):
    assert ("FROM_REPLYTO_DIFF" in symbols(message(headers=[("Reply-To", reply_to)]))) is fires


@pytest.mark.parametrize(
    ("mail_from", "return_path", "fires"),
    [
        ("bulk@mailer.example", "<alice@sender.example>", True),  # the SMTP session wins over the header
        ("bounces+x=y@mail.sender.example", "<bulk@mailer.example>", False),
        (None, "<bulk@mailer.example>", True),  # no session: the Return-Path
        (None, "<>", False),  # null sender: nothing to compare
        ("", "<bulk@mailer.example>", False),
    ],
)
def test_envelope_sender_domain(mail_from, return_path, fires):
    envelope = Envelope(mail_from=mail_from)
    assert ("FROM_ENVFROM_DIFF" in symbols(message(headers=[("Return-Path", return_path)]), envelope)) is fires


# -- subject -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("FREE MONEY WAITING FOR YOU", {"SUBJ_ALL_CAPS"}),
        ("Re: [ILUG] NFS mount question", set()),  # list tag and acronyms are not shouting
        ("RE: FW: OK", set()),  # too few letters to say
        ("$$$ Make Money Fast !!!", {"SUBJ_SYMBOLS"}),
        ("50% off the conference fee?", set()),
        ("", {"SUBJ_EMPTY"}),
        (None, {"SUBJ_EMPTY"}),
        ("Agenda for Thursday", set()),
    ],
)
def test_subject(subject, expected):
    found = symbols(message(headers=[("Subject", subject)]))
    assert {s for s in found if s.startswith("SUBJ_")} == expected


# -- body structure, links, URLs -----------------------------------------------------------

HTML = "<html><body><p>{text}</p>{extra}</body></html>"
LONG_TEXT = "The quarterly figures are in the attached report; please review before the meeting. " * 10


def alternative(html: str, plain: str | None) -> bytes:
    parts = []
    if plain is not None:
        parts.append(f"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{plain}\r\n")
    parts.append(f"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n")
    return message(content_type='multipart/alternative; boundary="b1"', body="".join(parts) + "--b1--\r\n")


def test_html_only():
    assert "HTML_ONLY" in symbols(message(content_type="text/html", body=HTML.format(text=LONG_TEXT, extra="")))
    assert "HTML_ONLY" in symbols(alternative(HTML.format(text=LONG_TEXT, extra=""), None))
    assert "HTML_ONLY" not in symbols(alternative(HTML.format(text=LONG_TEXT, extra=""), LONG_TEXT))


def test_image_heavy():
    images = '<img src="http://img.example/a.gif"><img src="http://img.example/b.gif">'
    assert "IMAGE_HEAVY" in symbols(alternative(HTML.format(text="Buy now", extra=images), "Buy now"))
    assert "IMAGE_HEAVY" not in symbols(alternative(HTML.format(text=LONG_TEXT, extra=images), LONG_TEXT))
    assert "IMAGE_HEAVY" not in symbols(alternative(HTML.format(text="Buy now", extra=""), "Buy now"))


@pytest.mark.parametrize(
    ("anchor", "fires"),
    [
        ('<a href="http://login.evil.example/paypal">www.paypal.com</a>', True),
        ('<a href="https://evil.example/">https://secure.paypal.com/signin</a>', True),
        ('<a href="http://evil.example/">paypal.com</a>', True),
        ('<a href="http://www.paypal.com/x?y=1">paypal.com</a>', False),
        ('<a href="http://files.example.org/report.pdf">report.pdf</a>', False),  # a file name, not a domain
        ('<a href="http://evil.example/">click here</a>', False),
        ('<a href="mailto:x@evil.example">www.paypal.com</a>', False),
    ],
)
def test_link_text_showing_another_domain(anchor, fires):
    raw = message(content_type="text/html", body=HTML.format(text=LONG_TEXT, extra=anchor))
    assert ("LINK_TEXT_MISMATCH" in symbols(raw)) is fires


@pytest.mark.parametrize(
    ("url", "fires"),
    [
        ("http://192.0.2.7/login", True),
        ("http://3232235777/x", True),  # 192.168.1.1 as one decimal number
        ("http://0xC0.0xA8.1.1/x", True),
        ("http://[2001:db8::1]/x", True),
        ("http://www.example.org/1.2.3.4", False),
    ],
)
def test_url_with_ip_host(url, fires):
    assert ("URL_IP_HOST" in symbols(message(body=f"See {url} today.\n"))) is fires


def test_url_shorteners_built_in_and_configured():
    raw = message(body="See https://bit.ly/3xYz and http://sho.rt/abc today.\n")
    assert "URL_SHORTENER" in symbols(raw)
    assert "URL_SHORTENER" not in symbols(message(body="See https://www.example.org/bit.ly today.\n"))
    assert "URL_SHORTENER" in symbols(raw, shorteners=["sho.rt"])
    assert "URL_SHORTENER" not in symbols(message(body="See https://bit.ly/3xYz\n"), shorteners=["sho.rt"])


# -- attachments ---------------------------------------------------------------------------


def with_attachment(filename: str, payload: bytes, ctype: str = "application/octet-stream") -> bytes:
    import base64

    body = (
        "--b2\r\nContent-Type: text/plain\r\n\r\nPlease see the attached file.\r\n"
        f'--b2\r\nContent-Type: {ctype}\r\nContent-Disposition: attachment; filename="{filename}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(payload).decode()}\r\n--b2--\r\n"
    )
    return message(content_type='multipart/mixed; boundary="b2"', body=body)


def zipped(*names: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.writestr(name, b"payload")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("filename", "payload", "ctype", "fires"),
    [
        ("invoice.pdf.exe", b"\x00" * 64, "application/octet-stream", True),
        ("RUN.BAT. ", b"echo", "application/octet-stream", True),  # Windows drops trailing dots
        ("setup.js", b"var x", "application/octet-stream", True),
        ("photo.jpg", b"MZ\x90\x00" + b"\x00" * 60, "image/jpeg", True),  # a PE file, by its bytes
        ("update", b"\x00" * 64, "application/x-msdownload", True),  # by declared type
        ("report.pdf", b"%PDF-1.4 report", "application/pdf", False),
    ],
)
def test_executable_attachment(filename, payload, ctype, fires):
    assert ("ATTACH_EXECUTABLE" in symbols(with_attachment(filename, payload, ctype))) is fires


def test_executable_inside_zip():
    found = symbols(with_attachment("docs.zip", zipped("readme.txt", "docs/Invoice.PDF.js"), "application/zip"))
    assert "ARCHIVE_EXECUTABLE" in found and "ATTACH_EXECUTABLE" not in found
    assert "ARCHIVE_EXECUTABLE" not in symbols(with_attachment("docs.zip", zipped("readme.txt", "a.pdf"), "application/zip"))


# -- recipients ----------------------------------------------------------------------------


def to_header(n: int) -> str:
    return ", ".join(f"user{i}@example.net" for i in range(n))


def test_many_recipients_grows_with_log_of_count_and_is_capped():
    assert "MANY_RECIPIENTS" not in symbols(message(headers=[("To", to_header(10))]))
    assert symbols(message(headers=[("To", to_header(25))]))["MANY_RECIPIENTS"] == pytest.approx(1 + math.log2(2.5))
    cc = [("To", to_header(6)), ("Cc", ", ".join(f"cc{i}@example.net" for i in range(14)))]
    assert symbols(message(headers=cc))["MANY_RECIPIENTS"] == pytest.approx(1 + math.log2(2.0))
    envelope = Envelope(rcpt_to=tuple(f"r{i}@example.net" for i in range(40)))
    assert symbols(message(), envelope)["MANY_RECIPIENTS"] == pytest.approx(1 + math.log2(4.0))
    assert symbols(message(headers=[("To", to_header(1000))]))["MANY_RECIPIENTS"] == 4.0
    assert "MANY_RECIPIENTS" in symbols(message(headers=[("To", to_header(4))]), max_recipients=3)


# -- configuration -------------------------------------------------------------------------


def services(store=None) -> Services:
    return Services(Config(store=StoreConfig(backend="memory")), store or MemoryStore(), None)


def test_from_config_accepts_every_key():
    s = BehaviourScorer.from_config(
        {
            "trusted_networks": ["192.0.2.0/24"],
            "shorteners": ["sho.rt"],
            "max_recipients": 3,
            "rate": True,
            "rate_window": 600,
            "rate_buckets": 2,
            "rate_min_count": 5,
            "rate_time": "clock",
            "timeout": 1.5,
            "weights": {"HTML_ONLY": 0.7},
        },
        services(),
    )
    assert s.settings.max_recipients == 3 and s.settings.shorteners == frozenset({"sho.rt"})
    assert (s.rate_window, s.rate_buckets, s.rate_min_count, s.rate_time) == (600.0, 2, 5, "clock")
    assert s.info.timeout == 1.5 and s.info.default_weights["HTML_ONLY"] == 0.7


@pytest.mark.parametrize(
    "section",
    [
        {"max_recipent": 3},
        {"max_recipients": 0},
        {"max_recipients": True},
        {"rate_window": -5},
        {"rate_window": "1h"},
        {"rate_buckets": 0},
        {"rate_min_count": 1.5},
        {"rate_time": "wall"},
        {"rate": "yes"},
        {"shorteners": "bit.ly"},
        {"shorteners": ["not a domain"]},
        {"trusted_networks": ["10.0.0.0/33"]},
        {"weights": {"NO_SUCH_SYMBOL": 1.0}},
        {"weights": {"HTML_ONLY": "high"}},
        {"timeout": 0},
    ],
)
def test_from_config_rejects_bad_sections(section):
    with pytest.raises(ConfigError):
        BehaviourScorer.from_config(section, services())


# -- sending rate --------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def store_and_clock(request, tmp_path):
    clock = Clock()
    store = MemoryStore(clock=clock) if request.param == "memory" else SqliteStore(tmp_path / "s.sqlite3", clock=clock)
    yield store, clock
    asyncio.run(store.close()) if request.param == "sqlite" else None


LIVE = Envelope(
    client_ip="203.0.113.5", client_name="mail.sender.example", helo="mail.sender.example", mail_from="alice@sender.example"
)


def rate_values(s: BehaviourScorer, ctx: MessageContext) -> dict[str, float]:
    return {h.symbol: h.value for h in asyncio.run(s.score(ctx)) if h.symbol.startswith("RATE_")}


def test_rate_counts_per_sender_and_ip_with_a_floor(store_and_clock):
    store, clock = store_and_clock
    s = scorer(store, clock, rate_min_count=3)
    seen = []
    for i in range(5):
        seen.append(rate_values(s, MessageContext(message(headers=[("Subject", f"n{i}")]), LIVE)))
        clock.now += 60
    assert seen[:2] == [{}, {}]
    assert [v.get("RATE_SENDER") for v in seen[2:]] == pytest.approx([math.log2(3), math.log2(4), math.log2(5)])
    assert [v.get("RATE_IP") for v in seen[2:]] == pytest.approx([math.log2(3), math.log2(4), math.log2(5)])
    # another sender from the same IP: the IP's count goes on, the sender's starts again
    other = dataclasses.replace(LIVE, mail_from="carol@other.example")
    assert rate_values(s, MessageContext(message(), other)) == {"RATE_IP": pytest.approx(math.log2(6))}


def test_rate_window_slides_and_expires(store_and_clock):
    store, clock = store_and_clock
    s = scorer(store, clock, rate_min_count=1, rate_window=3600, rate_buckets=6)
    for _ in range(4):
        rate_values(s, MessageContext(message(), LIVE))
    clock.now += 1800  # half a window later: all four still count
    assert rate_values(s, MessageContext(message(), LIVE))["RATE_SENDER"] == pytest.approx(math.log2(5))
    clock.now += 1900  # the first four are out of the window, the fifth is not
    assert rate_values(s, MessageContext(message(), LIVE))["RATE_SENDER"] == pytest.approx(math.log2(2))
    clock.now += 7200
    assert rate_values(s, MessageContext(message(), LIVE))["RATE_SENDER"] == 0.0  # log2(1): only itself


def test_per_recipient_rescans_count_once(store_and_clock):
    store, clock = store_and_clock
    s = scorer(store, clock, rate_min_count=1)
    ctx = MessageContext(message(), LIVE)

    async def scan_for_three_recipients():
        # concurrently, as the scanner may run them, and once more afterwards
        first = await asyncio.gather(*(s.score(ctx.for_user(u)) for u in ("a@x.example", "b@x.example")))
        return [*first, await s.score(ctx.for_user("c@x.example"))]

    results = asyncio.run(scan_for_three_recipients())
    for hits in results:
        assert {h.symbol: h.value for h in hits if h.symbol.startswith("RATE_")} == {"RATE_SENDER": 0.0, "RATE_IP": 0.0}
    assert rate_values(s, MessageContext(message(), LIVE))["RATE_SENDER"] == pytest.approx(1.0)  # two messages, not four


class RecordingStore(MemoryStore):
    """Logs when each counter call starts and ends, yielding to the loop in between."""

    answers_inline = False  # it waits inside its calls, as a store across the network does

    def __init__(self, clock) -> None:
        super().__init__(clock=clock)
        self.events: list[str] = []

    async def incr_many(self, amounts: Mapping[str, float], ttl: float | None = None) -> None:
        self.events.append("incr-start")
        await asyncio.sleep(0)
        await super().incr_many(amounts, ttl)
        self.events.append("incr-end")

    async def get_counters(self, keys: Sequence[str]) -> dict[str, float]:
        self.events.append(f"get-start:{len(keys)}")
        await asyncio.sleep(0)
        found = await super().get_counters(keys)
        self.events.append("get-end")
        return found


def test_one_increment_and_one_read_issued_in_the_same_tick():
    store = RecordingStore(Clock())
    s = scorer(store, store._clock, rate_buckets=6)
    asyncio.run(s.score(MessageContext(message(), LIVE)))
    # both calls start before either finishes: a coalescing store can send them together
    assert store.events == ["incr-start", "get-start:12", "incr-end", "get-end"]


def test_replayed_mail_is_bucketed_by_its_receive_time(store_and_clock):
    store, clock = store_and_clock  # the clock stays in 2025 throughout
    s = scorer(store, clock, rate_min_count=1)

    def replay(date: str) -> dict[str, float]:
        return rate_values(s, MessageContext(message(headers=[("Received", BORDER.format(date=date))])))

    assert replay("Tue, 6 Aug 2002 10:00:00 +0000")["RATE_SENDER"] == 0.0
    assert replay("Tue, 6 Aug 2002 10:20:00 +0000")["RATE_SENDER"] == pytest.approx(1.0)
    assert replay("Tue, 6 Aug 2002 14:00:00 +0000")["RATE_SENDER"] == 0.0  # hours later: a new window
    # the same messages scanned live are counted by the clock instead
    live = scorer(MemoryStore(clock=clock), clock, rate_min_count=1)
    for _ in range(2):
        raw = message(headers=[("Received", BORDER.format(date="Tue, 6 Aug 2002 10:00:00 +0000"))])
        hits = asyncio.run(live.score(MessageContext(raw, LIVE)))
    assert {h.symbol: h.value for h in hits}["RATE_SENDER"] == pytest.approx(1.0)


def test_ipv6_clients_counted_per_64():
    clock = Clock()
    s = scorer(MemoryStore(clock=clock), clock, rate_min_count=1)
    for host in ("2001:db8:1:2::10", "2001:db8:1:2:ffff::1"):
        values = rate_values(s, MessageContext(message(), Envelope(client_ip=host, mail_from=f"u{host[-1]}@x.example")))
    assert values["RATE_IP"] == pytest.approx(1.0)
    other = rate_values(s, MessageContext(message(), Envelope(client_ip="2001:db8:1:3::1", mail_from="z@x.example")))
    assert other["RATE_IP"] == 0.0


def test_no_sender_rate_for_the_null_sender_and_none_when_disabled():
    clock = Clock()
    s = scorer(MemoryStore(clock=clock), clock, rate_min_count=1)
    bounce = Envelope(client_ip="203.0.113.5", mail_from="")
    assert set(rate_values(s, MessageContext(message(), bounce))) == {"RATE_IP"}
    store = RecordingStore(clock)
    assert rate_values(scorer(store, clock, rate=False, rate_min_count=1), MessageContext(message(), LIVE)) == {}
    assert store.events == []


def test_a_store_breaking_its_contract_fails_as_store_error():
    class Broken(MemoryStore):
        async def get_counters(self, keys):
            raise RuntimeError("connection reset")

    with pytest.raises(StoreError):
        asyncio.run(scorer(Broken()).score(MessageContext(message(), LIVE)))


# -- never raises --------------------------------------------------------------------------


def garbage_messages() -> list[bytes]:
    rng = random.Random(20020806)
    samples = [p.read_bytes() for p in sorted(SAMPLES.iterdir())]
    out = [b"", b"\r\n" * 10, bytes(range(256)) * 40, rng.randbytes(5000)]
    out.append(b"From: " + b"a@b, " * 4000 + b"\r\nTo: " + b'"x@y" <, ' * 2000 + b"\r\n\r\nbody")
    extreme = [("Date", "Fri, 31 Dec 9999 23:59:59 -2359"), ("Received", "from x; Mon, 1 Jan 0001 00:00:00 +2359")]
    out.append(message(headers=extreme))
    out.append(message(headers=[("From", "=?utf-8?b?//79?= <@>"), ("Reply-To", "<<<@@@>>>"), ("Return-Path", "<@[::1]>")]))
    out.append(message(content_type="text/html", body='<a href="http://[::1">www.a..b</a><a href="http://%zz/">999.999.999.999</a>'))
    out.append(with_attachment("a.zip", b"PK\x05\x06" + b"\xff" * 18, "application/zip"))
    for raw in samples:
        for _ in range(6):  # truncated and bit-flipped copies of the samples
            cut = bytearray(raw[: rng.randrange(1, len(raw) + 1)])
            for _ in range(rng.randrange(1, 30)):
                cut[rng.randrange(len(cut))] = rng.randrange(256)
            out.append(bytes(cut))
    return out + samples


def test_never_raises_on_samples_and_garbage():
    s = scorer(MemoryStore(), rate_min_count=1)

    async def run_all():
        for i, raw in enumerate(garbage_messages()):
            odd = Envelope(client_ip="203.0.113.5", helo="[", client_name="", mail_from="<>", rcpt_to=("x",) * 3)
            for envelope in (None, odd):
                hits = await s.score(MessageContext(raw, envelope))
                assert all(h.symbol in SYMBOLS and math.isfinite(h.value) for h in hits), i

    asyncio.run(run_all())


def test_broken_sample_gives_hits_not_errors():
    raw = (SAMPLES / "malformed-broken-mime.eml").read_bytes()
    found = symbols(raw)
    assert {"DATE_INVALID", "MID_MISSING"} <= set(found)
