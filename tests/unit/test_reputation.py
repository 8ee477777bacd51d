"""The sender reputation scorer: identities and their keys, smoothing, decay, authenticated vs
unauthenticated identities, label sources, the per-user cap, on MemoryStore and SqliteStore."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailguard import Config, Envelope, MessageContext
from mailguard.config import StoreConfig
from mailguard.auth.dkim import DkimResult, shared_dkim_results
from mailguard.dns import StaticResolver
from mailguard.errors import ConfigError, MailguardError
from mailguard.result import Hit
from mailguard.scorer import Services
from mailguard.scorers.auth import AuthScorer
from mailguard.scorers.reputation import ReputationScorer, message_time
from mailguard.stores import MemoryStore, SqliteStore

from ..conftest import SAMPLES

DAY = 86400.0
WEEK = 7 * DAY
T0 = 1_700_000_000.0  # 2023-11-14, the clock of most tests


def run(coro):
    return asyncio.run(coro)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path, clock):
    if request.param == "memory":
        yield MemoryStore(clock=clock)
    else:
        s = SqliteStore(tmp_path / "rep.sqlite3", clock=clock)
        yield s
        run(s.close())


def raw_message(sender: str = "Alice <alice@example.com>", *, headers: str = "", body: str = "Hello Bob") -> bytes:
    text = f"{headers}From: {sender}\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\n{body}\r\n"
    return text.encode()


def ctx_for(raw: bytes | None = None, *, ip: str | None = "203.0.113.9", mail_from: str | None = "alice@example.com") -> MessageContext:
    return MessageContext(raw or raw_message(), Envelope(client_ip=ip, mail_from=mail_from))


def hits_by_symbol(hits: list[Hit]) -> dict[str, Hit]:
    by = {h.symbol: h for h in hits}
    assert len(by) == len(hits), "one hit per symbol"
    return by


def scorer_for(store, clock, **kw) -> ReputationScorer:
    return ReputationScorer(store, clock=clock, **kw)


def bucket(t: float) -> int:
    return int(t // WEEK)


async def learn_n(scorer, n: int, label: str, make_ctx, **kw) -> None:
    for i in range(n):
        await scorer.learn(make_ctx(i), label, **kw)


def distinct(i: int, **kw) -> MessageContext:
    """A different message (digest) from the same identities."""
    return ctx_for(raw_message(body=f"message number {i}"), **kw)


# -- identities and their store keys ----------------------------------------------------------


def test_learn_writes_one_bucket_key_per_identity_with_hash_tags(store, clock):
    scorer = scorer_for(store, clock)
    run(scorer.learn(ctx_for(), "spam", source="report"))
    b = bucket(T0)
    expected = [
        f"rep:{{ip4:203.0.113.9}}:s:{b}",
        f"rep:{{net4:203.0.113.0/24}}:s:{b}",
        f"rep:{{ed:u:example.com}}:s:{b}",
        f"rep:{{fd:u:example.com}}:s:{b}",
    ]
    found = run(store.get_counters(expected))
    assert found == {k: 1.0 for k in expected}
    # the sender address is one hashed identity, unauthenticated; its key has exactly one hash tag
    identities = run(scorer.identities(ctx_for()))
    sender = [i for i in identities if i.symbol == "REP_SENDER"]
    assert len(sender) == 1 and re.fullmatch(r"snd:u:[0-9a-f]{20}", sender[0].tag)
    assert run(store.get_counters([f"rep:{{{sender[0].tag}}}:s:{b}"])) == {f"rep:{{{sender[0].tag}}}:s:{b}": 1.0}
    # nothing was counted as ham
    assert run(store.get_counters([k.replace(":s:", ":h:") for k in expected])) == {}


def test_ipv6_client_and_its_64():
    scorer = ReputationScorer(MemoryStore(), clock=Clock())
    tags = {i.symbol: i.tag for i in run(scorer.identities(ctx_for(ip="2001:db8:1:2:aaaa::7")))}
    assert tags["REP_IP"] == "ip6:2001:db8:1:2:aaaa::7"
    assert tags["REP_IP_NET"] == "net6:2001:db8:1:2::/64"
    # an IPv4-mapped client is the IPv4 client
    tags = {i.symbol: i.tag for i in run(scorer.identities(ctx_for(ip="::ffff:198.51.100.77")))}
    assert tags["REP_IP"] == "ip4:198.51.100.77" and tags["REP_IP_NET"] == "net4:198.51.100.0/24"


def test_neighbours_share_the_net_not_the_ip(store, clock):
    scorer = scorer_for(store, clock)
    run(learn_n(scorer, 10, "spam", lambda i: distinct(i, ip="198.51.100.10", mail_from=None)))
    hits = hits_by_symbol(run(scorer.score(ctx_for(ip="198.51.100.11", mail_from=None, raw=b"Subject: x\r\n\r\nhi\r\n"))))
    assert set(hits) == {"REP_IP_NET"} and hits["REP_IP_NET"].value > 0.5


def test_client_from_received_when_no_envelope_and_trusted_networks():
    received = (
        "Received: from mx.relay.example (mx.relay.example [192.0.2.44]) by mx.our.example; Tue, 14 Nov 2023 10:00:00 +0000\r\n"
        "Received: from sender.example (sender.example [198.51.100.5]) by mx.relay.example; Tue, 14 Nov 2023 09:59:00 +0000\r\n"
    )
    ctx = MessageContext(raw_message(headers=received))
    plain = ReputationScorer.from_config({}, services(MemoryStore()))
    assert {i.symbol: i.tag for i in run(plain.identities(ctx))}["REP_IP"] == "ip4:192.0.2.44"
    # our own relay trusted: the client is the hop before it
    trusting = ReputationScorer.from_config({"trusted_networks": ["192.0.2.0/24"]}, services(MemoryStore()))
    assert {i.symbol: i.tag for i in run(trusting.identities(ctx))}["REP_IP"] == "ip4:198.51.100.5"


def test_sender_from_return_path_canonical_and_batv_stripped():
    scorer = ReputationScorer(MemoryStore(), clock=Clock())

    def sender_tag(ctx):
        return {i.symbol: i.tag for i in run(scorer.identities(ctx))}.get("REP_SENDER")

    plain = sender_tag(ctx_for(mail_from="Alice@Example.COM"))
    assert plain is not None
    assert sender_tag(ctx_for(mail_from="prvs=0123456789=alice@example.com")) == plain
    assert sender_tag(MessageContext(raw_message(headers="Return-Path: <ALICE@example.com>\r\n"))) == plain
    assert sender_tag(MessageContext(raw_message(headers="Return-Path: <alice@example.com> (bounces)\r\n"))) == plain
    assert sender_tag(ctx_for(mail_from="bob@example.com")) != plain
    # the null sender has no sender identity (and no envelope domain)
    symbols = {i.symbol for i in run(scorer.identities(ctx_for(mail_from="")))}
    assert "REP_SENDER" not in symbols and "REP_ENVFROM_DOMAIN" not in symbols


def test_domains_are_organizational():
    scorer = ReputationScorer(MemoryStore(), clock=Clock())
    ctx = ctx_for(raw_message("news@mail.shop.example.co.uk"), mail_from="bounce@bounces.esp.example.com")
    tags = {i.symbol: i.tag for i in run(scorer.identities(ctx))}
    assert tags["REP_FROM_DOMAIN"] == "fd:u:example.co.uk"
    assert tags["REP_ENVFROM_DOMAIN"] == "ed:u:example.com"
    # two From domains, an address literal or junk: no From identity
    for sender in ("a@one.example, b@two.example", "a@[192.0.2.1]", "a@bad_domain", "a@{evil}.example"):
        assert "REP_FROM_DOMAIN" not in {i.symbol for i in run(scorer.identities(ctx_for(raw_message(sender), mail_from=None)))}


# -- smoothing --------------------------------------------------------------------------------


def test_unknown_sender_gives_no_hit(store, clock):
    scorer = scorer_for(store, clock)
    run(scorer.learn(ctx_for(ip="192.0.2.1", mail_from="x@known.example"), "spam"))
    assert run(scorer.score(ctx_for(ip="198.51.100.1", mail_from="new@unknown.example", raw=raw_message("new@unknown.example")))) == []


def test_one_report_is_weak_fifty_are_strong(store, clock):
    scorer = scorer_for(store, clock)
    run(scorer.learn(distinct(0), "spam"))
    weak = hits_by_symbol(run(scorer.score(ctx_for())))
    assert set(weak) == {"REP_IP", "REP_IP_NET", "REP_SENDER", "REP_ENVFROM_DOMAIN", "REP_FROM_DOMAIN"}
    assert all(0 < h.value < 0.3 for h in weak.values())
    run(learn_n(scorer, 49, "spam", lambda i: distinct(i + 1)))
    strong = hits_by_symbol(run(scorer.score(ctx_for())))
    assert all(0.9 < h.value <= 1.0 for h in strong.values())
    assert "spam 50.0, ham 0.0" in strong["REP_IP"].reason


def test_ham_credits_the_ip_but_not_unauthenticated_domains(store, clock):
    scorer = scorer_for(store, clock)
    run(learn_n(scorer, 20, "ham", distinct))
    hits = hits_by_symbol(run(scorer.score(ctx_for())))
    # the IP connected to us: it earns a good name; a forgeable, unauthenticated domain does not
    assert hits["REP_IP"].value < -0.8 and hits["REP_IP_NET"].value < -0.8
    assert not {"REP_FROM_DOMAIN", "REP_ENVFROM_DOMAIN", "REP_SENDER"} & set(hits)


def test_mixed_evidence_sits_between():
    clock = Clock()
    scorer = ReputationScorer(MemoryStore(clock=clock), clock=clock, prior=4.0)
    run(learn_n(scorer, 6, "spam", distinct))
    run(learn_n(scorer, 2, "ham", lambda i: distinct(100 + i)))
    value = hits_by_symbol(run(scorer.score(ctx_for())))["REP_IP"].value
    assert value == pytest.approx((6 - 2) / (6 + 2 + 4))


# -- decay ------------------------------------------------------------------------------------


def test_older_buckets_weigh_less_and_expire(store, clock):
    scorer = scorer_for(store, clock, half_life_days=14.0, horizon_days=84.0)
    run(learn_n(scorer, 10, "spam", distinct))
    fresh = hits_by_symbol(run(scorer.score(ctx_for())))["REP_IP"].value
    clock.now += 2 * WEEK  # one half-life later
    older = hits_by_symbol(run(scorer.score(ctx_for())))["REP_IP"].value
    assert older == pytest.approx(5 / (5 + 4))  # 10 spam at half weight, prior 4
    assert 0 < older < fresh
    clock.now += 12 * WEEK  # past the horizon: the bucket is out of the window and expired
    assert run(scorer.score(ctx_for())) == []


def test_recent_evidence_outweighs_old(store, clock):
    scorer = scorer_for(store, clock, half_life_days=7.0)
    run(learn_n(scorer, 10, "ham", distinct))
    clock.now += 6 * WEEK
    run(learn_n(scorer, 10, "spam", lambda i: distinct(50 + i)))
    assert hits_by_symbol(run(scorer.score(ctx_for())))["REP_IP"].value > 0.5


def test_train_uses_the_message_date_and_scoring_reads_at_it(store, clock):
    """Replaying 2002 mail: counted in 2002 buckets, read back when scoring 2002 mail."""
    clock.now = T0  # 2023
    scorer = scorer_for(store, clock)

    def old(i: int, date: str = "Mon, 05 Aug 2002 10:00:00 +0000") -> MessageContext:
        received = f"Received: from a.example (a.example [198.51.100.9]) by mx.example; {date}\r\n"
        return MessageContext(raw_message(headers=received, body=f"old {i}"))

    assert message_time(old(0)) == email.utils.parsedate_to_datetime("Mon, 05 Aug 2002 10:00:00 +0000").timestamp()
    run(learn_n(scorer, 10, "spam", old, source="train"))
    b2002 = bucket(message_time(old(0)))
    assert run(store.get_counters([f"rep:{{ip4:198.51.100.9}}:s:{b2002}"])) == {f"rep:{{ip4:198.51.100.9}}:s:{b2002}": 10.0}
    # a message of the same week sees it; one from 2003 (past the horizon) and one scored "now" do not
    assert hits_by_symbol(run(scorer.score(old(99, "Tue, 06 Aug 2002 12:00:00 +0000"))))["REP_IP"].value > 0.5
    assert "REP_IP" not in hits_by_symbol(run(scorer.score(old(99, "Wed, 05 Mar 2003 12:00:00 +0000"))))
    assert run(scorer.score(ctx_for(ip="198.51.100.9", mail_from=None, raw=b"Subject: x\r\n\r\nno date\r\n"))) == []
    # nor does an offline evaluation see evidence from after the message
    assert "REP_IP" not in hits_by_symbol(run(scorer.score(old(99, "Mon, 01 Jul 2002 12:00:00 +0000"))))


def test_a_live_scan_sees_every_report_made_before_it_whatever_the_message_dates(store, clock):
    """The product rule: a report is learned at the clock, and a later live scan (an SMTP
    envelope naming the client) of a copy dated weeks earlier sees the evidence. Offline (no
    live envelope) the same copy is read at its own date, before the reports; with
    ``message_time = false`` every scan reads at the clock."""
    scorer = scorer_for(store, clock)
    run(learn_n(scorer, 5, "spam", lambda i: distinct(i)))  # reports of 203.0.113.9, counted now
    clock.now += 2 * DAY  # the scan comes later
    weeks_earlier = email.utils.formatdate(clock.now - 3 * WEEK)
    copy = raw_message(
        headers=f"Received: from a.example (a.example [203.0.113.9]) by mx.example; {weeks_earlier}\r\nDate: {weeks_earlier}\r\n"
    )
    live = MessageContext(copy, Envelope(client_ip="203.0.113.9", mail_from="alice@example.com"))
    assert live.envelope.live
    assert hits_by_symbol(run(scorer.score(live)))["REP_IP"].value > 0.3
    offline = MessageContext(copy)  # a stored file: the client comes from its Received hop
    assert not offline.envelope.live
    assert run(scorer.score(offline)) == []  # read three weeks back, before the reports
    clock_only = scorer_for(store, clock, message_time=False)
    assert hits_by_symbol(run(clock_only.score(offline)))["REP_IP"].value > 0.3
    # a date in the future is not believed: read at the clock
    future = raw_message(headers="Received: from a.example (a.example [203.0.113.9]) by mx.example; Fri, 01 Jan 2100 00:00:00 +0000\r\n")
    assert hits_by_symbol(run(scorer.score(MessageContext(future))))["REP_IP"].value > 0.3


# -- authenticated vs unauthenticated domains -------------------------------------------------


def _never_lookup(name, rdtype):
    raise AssertionError(f"no DNS expected, asked {name} {rdtype}")


def injected(results: list[DkimResult]):
    """A scorer DKIM source reading the per-message shared results, which the test fills in."""

    def source(ctx: MessageContext):
        if not any(k == "x:dkim.results" for k in ctx._shared):
            async def finished():
                return list(results)

            ctx.cached("dkim.results", lambda: asyncio.ensure_future(finished()))
        return shared_dkim_results(ctx, _never_lookup, 10)

    return source


PASS = [DkimResult("pass", "mail.example.com", "s1")]


def test_forged_domain_neither_gains_nor_spoils_the_good_name(store, clock):
    signed_scorer = scorer_for(store, clock, dkim_source=injected(PASS))
    unsigned_scorer = scorer_for(store, clock, dkim_source=injected([]))

    def good(i):
        return distinct(i, ip="192.0.2.20")

    def forged(i):
        return distinct(1000 + i, ip="198.51.100.66")

    run(learn_n(signed_scorer, 20, "ham", good))
    signed_hits = hits_by_symbol(run(signed_scorer.score(good(999))))
    assert signed_hits["REP_FROM_DOMAIN_AUTH"].value < -0.7
    assert signed_hits["REP_ENVFROM_DOMAIN_AUTH"].value < -0.7
    assert signed_hits["REP_SENDER_AUTH"].value < -0.7
    assert signed_hits["REP_DKIM_DOMAIN"].value < -0.7 and "example.com" in signed_hits["REP_DKIM_DOMAIN"].reason
    assert not {"REP_FROM_DOMAIN", "REP_ENVFROM_DOMAIN", "REP_SENDER"} & set(signed_hits)
    # the forger gains nothing from example.com's good name
    assert not any(s.startswith(("REP_FROM", "REP_ENVFROM", "REP_SENDER", "REP_DKIM")) for s in hits_by_symbol(run(unsigned_scorer.score(forged(0)))))
    # and his spam lands on the unauthenticated identity only
    run(learn_n(unsigned_scorer, 20, "spam", forged))
    forged_hits = hits_by_symbol(run(unsigned_scorer.score(forged(999))))
    assert forged_hits["REP_FROM_DOMAIN"].value > 0.7
    after = hits_by_symbol(run(signed_scorer.score(good(998))))
    assert after["REP_FROM_DOMAIN_AUTH"].value == pytest.approx(signed_hits["REP_FROM_DOMAIN_AUTH"].value)


def test_unaligned_or_failing_signatures_authenticate_nothing(store, clock):
    for results in ([DkimResult("pass", "esp.example", "s1")], [DkimResult("fail", "example.com", "s1")]):
        scorer = scorer_for(store, clock, dkim_source=injected(results))
        symbols = {i.symbol for i in run(scorer.identities(ctx_for()))}
        assert {"REP_FROM_DOMAIN", "REP_ENVFROM_DOMAIN", "REP_SENDER"} <= symbols
        assert not any(s.endswith("_AUTH") for s in symbols)
        assert ("REP_DKIM_DOMAIN" in symbols) == (results[0].result == "pass")


def test_dkim_source_failure_or_timeout_means_unauthenticated(store, clock):
    async def broken(ctx):
        raise RuntimeError("dkimpy blew up")

    async def slow(ctx):
        await asyncio.sleep(5)
        return PASS

    for source in (broken, slow):
        scorer = scorer_for(store, clock, dkim_source=source, timeout=0.3)
        symbols = {i.symbol for i in run(scorer.identities(ctx_for()))}
        assert "REP_FROM_DOMAIN" in symbols and not any(s.endswith("_AUTH") for s in symbols)


@pytest.fixture(scope="module")
def dkim_key():
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def services(store, resolver=None) -> Services:
    return Services(Config(store=StoreConfig(backend="memory")), store, None, resolver)


def test_auth_and_reputation_verify_dkim_once_per_message(dkim_key):
    pem, txt = dkim_key
    raw = raw_message()
    raw = dkim.sign(raw, b"s1", b"example.com", pem, include_headers=[b"from", b"to", b"subject"]) + raw
    resolver = StaticResolver({("s1._domainkey.example.com", "TXT"): [txt]}, delay=0.05, cache_size=0)
    store = MemoryStore()
    auth = AuthScorer.from_config({"authserv_id": "mx.test", "spf": False, "spf_helo": False, "dmarc": False, "arc": False}, services(store, resolver))
    rep = ReputationScorer.from_config({}, services(store, resolver))

    async def both(ctx):
        return await asyncio.gather(auth.score(ctx), rep.score(ctx))

    ctx = ctx_for(raw)
    auth_hits, rep_hits = run(both(ctx))
    assert "DKIM_PASS_ALIGNED" in {h.symbol for h in auth_hits}
    assert resolver.asked.count(("s1._domainkey.example.com", "TXT")) == 1
    # a per-recipient copy reuses the verification too
    run(rep.learn(ctx.for_user("bob@example.net"), "ham", source="train"))
    assert resolver.asked.count(("s1._domainkey.example.com", "TXT")) == 1
    symbols = {i.symbol for i in run(rep.identities(ctx))}
    assert {"REP_FROM_DOMAIN_AUTH", "REP_ENVFROM_DOMAIN_AUTH", "REP_SENDER_AUTH", "REP_DKIM_DOMAIN"} <= symbols
    # without a resolver (--no-network) nothing is authenticated
    offline = ReputationScorer.from_config({}, services(store))
    assert not any(i.symbol.endswith("_AUTH") for i in run(offline.identities(ctx_for(raw))))


# -- label sources, the per-user cap, relearning ----------------------------------------------


def test_report_counts_more_than_autolearn(store, clock):
    scorer = scorer_for(store, clock)
    run(scorer.learn(distinct(1, ip="192.0.2.1", mail_from=None), "spam", source="report"))
    run(scorer.learn(distinct(2, ip="192.0.2.2", mail_from=None), "spam", source="autolearn"))
    b = bucket(T0)
    counts = run(store.get_counters([f"rep:{{ip4:192.0.2.1}}:s:{b}", f"rep:{{ip4:192.0.2.2}}:s:{b}"]))
    assert counts == {f"rep:{{ip4:192.0.2.1}}:s:{b}": 1.0, f"rep:{{ip4:192.0.2.2}}:s:{b}": 0.5}
    reported = hits_by_symbol(run(scorer.score(ctx_for(ip="192.0.2.1", mail_from=None))))["REP_IP"].value
    autolearned = hits_by_symbol(run(scorer.score(ctx_for(ip="192.0.2.2", mail_from=None))))["REP_IP"].value
    assert reported > autolearned > 0
    # configurable, and a zero weight learns nothing
    custom = ReputationScorer.from_config({"source_weights": {"autolearn": 0.0, "report": 2.0}}, services(store))
    custom.clock = clock
    run(custom.learn(distinct(3, ip="192.0.2.3", mail_from=None), "spam", source="autolearn"))
    run(custom.learn(distinct(4, ip="192.0.2.4", mail_from=None), "spam", source="report"))
    counts = run(store.get_counters([f"rep:{{ip4:192.0.2.3}}:s:{b}", f"rep:{{ip4:192.0.2.4}}:s:{b}"]))
    assert counts == {f"rep:{{ip4:192.0.2.4}}:s:{b}": 2.0}


def ip_counts(store, ip: str, kind: str = "s") -> float:
    return sum(run(store.get_counters([f"rep:{{ip4:{ip}}}:{kind}:{bucket(T0)}"])).values())


def test_one_user_cannot_move_a_sender_alone(store, clock):
    scorer = scorer_for(store, clock, max_user_share=0.25, user_allowance=1.0)
    run(learn_n(scorer, 10, "spam", lambda i: distinct(i, ip="192.0.2.50"), user="mallory@example.net"))
    assert ip_counts(store, "192.0.2.50") == pytest.approx(1.0)  # only the allowance
    # other evidence makes room for a share of the total
    run(learn_n(scorer, 30, "ham", lambda i: distinct(100 + i, ip="192.0.2.50"), source="train"))
    run(learn_n(scorer, 20, "spam", lambda i: distinct(200 + i, ip="192.0.2.50"), user="mallory@example.net"))
    spam = ip_counts(store, "192.0.2.50")
    assert spam / (spam + 30.0) == pytest.approx(0.25)
    # another user's reports are their own share
    run(learn_n(scorer, 3, "spam", lambda i: distinct(300 + i, ip="192.0.2.50"), user="carol@example.net"))
    assert ip_counts(store, "192.0.2.50") > spam
    # global learning (user None) is not capped
    run(learn_n(scorer, 5, "spam", lambda i: distinct(i, ip="192.0.2.51")))
    assert ip_counts(store, "192.0.2.51") == 5.0


def test_same_message_same_label_counts_once_and_opposite_label_moves_it(store, clock):
    scorer = scorer_for(store, clock)
    ctx = ctx_for(ip="192.0.2.60", mail_from=None)
    run(scorer.learn(ctx, "spam", "bob@example.net"))
    run(scorer.learn(ctx, "spam", "bob@example.net"))
    assert ip_counts(store, "192.0.2.60", "s") == 1.0
    run(scorer.learn(ctx, "ham", "bob@example.net"))  # bob changes his mind
    assert ip_counts(store, "192.0.2.60", "s") == 0.0 and ip_counts(store, "192.0.2.60", "h") == 1.0
    assert hits_by_symbol(run(scorer.score(ctx)))["REP_IP"].value < 0
    # another user's label of the same message is separate evidence
    run(scorer.learn(ctx, "spam", "carol@example.net"))
    assert ip_counts(store, "192.0.2.60", "s") == 1.0


def test_learn_rejects_unknown_label_or_source_with_our_error(store, clock):
    scorer = scorer_for(store, clock)
    with pytest.raises(MailguardError):
        run(scorer.learn(ctx_for(), "spam", source="rumour"))  # type: ignore[arg-type]
    with pytest.raises(MailguardError):
        run(scorer.learn(ctx_for(), "eggs"))  # type: ignore[arg-type]


# -- one store read, robustness, config -------------------------------------------------------


class CountingStore(MemoryStore):
    def __init__(self, clock) -> None:
        super().__init__(clock=clock)
        self.reads: list[int] = []

    async def get_counters(self, keys):
        self.reads.append(len(keys))
        return await super().get_counters(keys)

    async def get(self, key):
        self.reads.append(1)
        return await super().get(key)

    async def get_many(self, keys):
        self.reads.append(len(keys))
        return await super().get_many(keys)

    async def get_members(self, keys):
        self.reads.append(len(keys))
        return await super().get_members(keys)


def test_score_reads_the_store_once(clock):
    store = CountingStore(clock)
    scorer = ReputationScorer(store, clock=clock, dkim_source=injected(PASS), horizon_days=84.0, bucket_days=7.0)
    run(scorer.learn(ctx_for(), "spam"))
    store.reads.clear()
    hits = run(scorer.score(ctx_for()))
    assert hits
    identities = len(run(scorer.identities(ctx_for())))
    assert store.reads == [identities * 2 * 12]


def test_malformed_mail_gives_no_exception(store, clock):
    scorer = scorer_for(store, clock)
    raws = [p.read_bytes() for p in sorted(SAMPLES.iterdir())] + [
        b"",
        b"\x00\xff garbage",
        b"From: \r\nReturn-Path: <<<>>>\r\nDate: Tue, 99 Foo 99999 99:99:99 +9999\r\n\r\n",
        b"From: a@" + b"x" * 5000 + b".example\r\nReceived: from x ([999.1.1.1]) by y; garbage\r\n\r\n",
        "From: José <josé@exämple.com>\r\nReturn-Path: <{weird}@exämple.com>\r\n\r\n".encode(),
    ]
    envelopes = [Envelope(), Envelope(client_ip="fe80::1%eth0", mail_from="a b@c"), Envelope(client_ip="not an ip", mail_from="<>")]
    for raw in raws:
        for env in envelopes:
            ctx = MessageContext(raw, env)
            run(scorer.learn(ctx, "spam", "bob@example.net"))
            assert all(isinstance(h, Hit) for h in run(scorer.score(ctx)))


@pytest.mark.parametrize(
    "section",
    [
        {"nonsense": 1},
        {"half_life_days": 0},
        {"half_life_days": "30"},
        {"horizon_days": 3, "bucket_days": 7},
        {"horizon_days": 10000},
        {"prior": -1},
        {"max_user_share": 1.5},
        {"max_user_share": 0},
        {"user_allowance": -1},
        {"source_weights": {"rumour": 1.0}},
        {"source_weights": {"report": -1}},
        {"source_weights": {"report": True}},
        {"max_dkim_domains": 20},
        {"message_time": "yes"},
        {"trusted_networks": ["not a net"]},
        {"timeout": 0},
        {"weights": {"REP_NOPE": 1.0}},
    ],
)
def test_bad_config_fails_at_start(section):
    with pytest.raises(ConfigError):
        ReputationScorer.from_config(section, services(MemoryStore()))


def test_config_values_are_used():
    scorer = ReputationScorer.from_config(
        {"half_life_days": 10, "horizon_days": 28, "bucket_days": 7, "prior": 3, "weights": {"REP_IP": 2.5}, "timeout": 1.5},
        services(MemoryStore()),
    )
    assert scorer.n_buckets == 4 and scorer.prior == 3.0 and scorer.info.timeout == 1.5
    assert scorer.info.default_weights["REP_IP"] == 2.5
    assert scorer.info.learns and not scorer.info.network and scorer.info.group == "reputation"
    assert set(scorer.info.default_weights) == set(scorer.info.symbols)
