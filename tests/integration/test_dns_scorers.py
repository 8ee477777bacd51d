"""dnsbl and auth scorers against a real authoritative DNS server on loopback (dnslib).

No mock of dnspython anywhere: every answer crosses a UDP socket. DKIM and ARC messages are
signed here with keys made for the run; the zones in conftest publish the public halves.
"""

from __future__ import annotations

import asyncio
import time

import dkim
import pytest

from mailguard import Action, Config, Envelope, MessageContext, Scanner
from mailguard.config import DnsConfig, ScannerConfig, StoreConfig
from mailguard.scorer import Services
from mailguard.scorers.auth import AuthScorer
from mailguard.scorers.dnsbl import DnsblScorer
from mailguard.stores.memory import MemoryStore

from .conftest import CLEAN_IP, CLIENT_IP, FORWARDER_IP, resolver_for

LISTS = [
    {
        "zone": "zen.rbl.test",
        "kind": "ip",
        "ipv6": True,
        "symbol": "RBL_ZEN",
        "codes": {"127.0.0.2": "RBL_ZEN_SBL", "127.0.0.4": "RBL_ZEN_XBL", "127.0.0.10": "RBL_ZEN_PBL"},
    },
    {"zone": "refused.rbl.test", "kind": "ip", "symbol": "RBL_REFUSED"},
    {"zone": "wl.rbl.test", "kind": "allow", "symbol": "WL", "codes": {"127.0.*.3": "WL_HI"}},
    {"zone": "dbl.rbl.test", "kind": "uri", "symbol": "DBL", "codes": {"127.0.1.2": "DBL_SPAM", "127.0.1.4": "DBL_PHISH"}},
]


def services(resolver) -> Services:
    return Services(Config(store=StoreConfig(backend="memory")), MemoryStore(), None, resolver)


def plain_message(sender: str = "alice@example.test", body: str = "Lunch on Thursday?\r\n", subject: str = "lunch") -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: bob@example.net\r\nSubject: {subject}\r\n"
        f"Message-ID: <m1@example.test>\r\nDate: Thu, 02 Jan 2025 10:00:00 +0000\r\n\r\n{body}"
    ).encode()


def signed(dkim_key, raw: bytes) -> bytes:
    sig = dkim.sign(raw, b"sel1", b"example.test", dkim_key.pem, include_headers=[b"from", b"to", b"subject", b"message-id"])
    return sig + raw


def forwarded_with_arc(dkim_key, arc_key) -> bytes:
    """alice@example.test (DMARC p=reject) -> lists.fwd.test, which checks it (DMARC pass),
    tags the subject and appends a footer (breaking DKIM), then seals an ARC set."""
    original = signed(dkim_key, plain_message(subject="minutes"))
    ar = b"Authentication-Results: lists.fwd.test; dkim=pass header.d=example.test; spf=pass smtp.mailfrom=example.test; dmarc=pass header.from=example.test\r\n"
    changed = ar + original.replace(b"Subject: minutes", b"Subject: [team] minutes") + b"--\r\nteam mailing list\r\n"
    arc_headers = dkim.arc_sign(changed, b"arc1", b"fwd.test", arc_key.pem, b"lists.fwd.test")
    return b"".join(arc_headers) + changed


def symbols(hits) -> set[str]:
    return {h.symbol for h in hits}


def run(coro):
    return asyncio.run(coro)


def run_all(*coros):
    async def main():
        return await asyncio.gather(*coros)

    return asyncio.run(main())


# -- blocklists ----------------------------------------------------------------------------


def test_rbl_codes_become_separate_symbols_and_refusal_is_an_error(fake_dns):
    scorer = DnsblScorer.from_config({"lists": LISTS}, services(resolver_for(fake_dns)))
    body = "Cheap: http://evil-pills.test/buy and https://www.phish-bank.test/login and http://fine.test/\r\n"
    ctx = MessageContext(plain_message(body=body), Envelope(client_ip=CLIENT_IP))
    hits = run(scorer.score(ctx))
    by_symbol = {h.symbol: h for h in hits}
    assert {"RBL_ZEN_SBL", "RBL_ZEN_PBL", "DBL_SPAM", "DBL_PHISH", "DNSBL_ERROR"} == set(by_symbol)
    assert "RBL_REFUSED" not in by_symbol  # 127.255.255.254 is a refusal, never a listing
    assert "127.255.255.254" in by_symbol["DNSBL_ERROR"].reason
    assert "evil-pills.test" in by_symbol["DBL_SPAM"].reason
    assert ("evil-pills.test.dbl.rbl.test", "A") in fake_dns.queries


def test_ipv6_client_is_looked_up_by_nibbles(fake_dns):
    scorer = DnsblScorer.from_config({"lists": LISTS}, services(resolver_for(fake_dns)))
    hits = run(scorer.score(MessageContext(plain_message(), Envelope(client_ip="2001:db8::99"))))
    assert symbols(hits) == {"RBL_ZEN_XBL"}  # refused.rbl.test and wl are IPv4-only lists


def test_allow_list_is_negative_evidence_and_client_found_in_received_chain(fake_dns):
    scorer = DnsblScorer.from_config({"lists": LISTS}, services(resolver_for(fake_dns)))
    raw = (
        b"Received: from relay.internal (relay.internal [10.1.2.3]) by mx.example.net; Thu, 2 Jan 2025 10:00:02 +0000\r\n"
        + f"Received: from mx.example.test (mx.example.test [{CLEAN_IP}]) by relay.internal; Thu, 2 Jan 2025 10:00:01 +0000\r\n".encode()
        + plain_message()
    )
    hits = run(scorer.score(MessageContext(raw)))  # no envelope: CLI/library use
    assert symbols(hits) == {"WL_HI"}
    assert scorer.info.default_weights["WL_HI"] < 0
    assert CLEAN_IP in hits[0].reason


# -- SPF, DKIM, DMARC ------------------------------------------------------------------


def auth_scorer(resolver, **section) -> AuthScorer:
    return AuthScorer.from_config({"authserv_id": "mx.example.net", **section}, services(resolver))


def test_signed_message_passes_everything_and_gets_an_authentication_results_header(fake_dns, dkim_key):
    scorer = auth_scorer(resolver_for(fake_dns))
    env = Envelope(client_ip="198.51.100.50", helo="out.mailer.test", mail_from="alice@example.test")
    ctx = MessageContext(signed(dkim_key, plain_message()), env)
    hits = run(scorer.score(ctx))
    assert {"SPF_PASS", "DKIM_PASS_ALIGNED", "DMARC_PASS"} <= symbols(hits)
    header = dict(ctx.added_headers)["Authentication-Results"]
    assert header.startswith("mx.example.net; spf=pass smtp.mailfrom=alice@example.test")
    assert "dkim=pass header.d=example.test header.s=sel1" in header
    assert "dmarc=pass header.from=example.test" in header


def test_tampered_copy_fails_dkim_and_dmarc(fake_dns, dkim_key):
    scorer = auth_scorer(resolver_for(fake_dns))
    tampered = signed(dkim_key, plain_message()).replace(b"Lunch on Thursday", b"Wire money today")
    env = Envelope(client_ip=CLIENT_IP, helo="bad.example", mail_from="alice@example.test")
    ctx = MessageContext(tampered, env)
    hits = run(scorer.score(ctx))
    assert {"SPF_FAIL", "DKIM_FAIL", "DMARC_FAIL_REJECT"} <= symbols(hits)
    assert "DKIM_PASS_ALIGNED" not in symbols(hits)
    header = dict(ctx.added_headers)["Authentication-Results"]
    assert "dkim=fail" in header and "dmarc=fail (p=reject dis=REJECT)" in header


def test_subdomain_uses_sp_of_the_organizational_domain(fake_dns):
    scorer = auth_scorer(resolver_for(fake_dns))
    env = Envelope(client_ip=CLIENT_IP, helo="x.test", mail_from="bob@sub.quarantine.test")
    hits = run(scorer.score(MessageContext(plain_message(sender="bob@sub.quarantine.test"), env)))
    assert {"SPF_FAIL", "DKIM_NONE", "DMARC_FAIL_QUARANTINE"} <= symbols(hits)
    assert ("_dmarc.quarantine.test", "TXT") in fake_dns.queries


def test_trusted_arc_sealer_forgives_dmarc_broken_by_forwarding(fake_dns, dkim_key, arc_key):
    raw = forwarded_with_arc(dkim_key, arc_key)
    env = Envelope(client_ip=FORWARDER_IP, helo="lists.fwd.test", mail_from="team-bounces@lists.fwd.test")

    untrusted = auth_scorer(resolver_for(fake_dns))
    hits = run(untrusted.score(MessageContext(raw, env)))
    assert {"ARC_PASS", "DKIM_FAIL", "DMARC_FAIL_REJECT"} <= symbols(hits)

    trusting = auth_scorer(resolver_for(fake_dns), trusted_arc_sealers=["fwd.test"])
    ctx = MessageContext(raw, env)
    hits = run(trusting.score(ctx))
    assert {"ARC_PASS", "DMARC_FAIL_ARC_OVERRIDE"} <= symbols(hits)
    assert not symbols(hits) & {"DMARC_FAIL_REJECT", "DMARC_FAIL_QUARANTINE"}
    assert trusting.info.default_weights["DMARC_FAIL_ARC_OVERRIDE"] == 0.0
    header = dict(ctx.added_headers)["Authentication-Results"]
    assert "arc=pass" in header and "override=trusted_forwarder(fwd.test)" in header


def test_broken_arc_seal_is_not_trusted(fake_dns, dkim_key, arc_key):
    raw = forwarded_with_arc(dkim_key, arc_key).replace(b"team mailing list", b"team mailing LIST")
    env = Envelope(client_ip=FORWARDER_IP, helo="lists.fwd.test", mail_from="team-bounces@lists.fwd.test")
    scorer = auth_scorer(resolver_for(fake_dns), trusted_arc_sealers=["fwd.test"])
    hits = run(scorer.score(MessageContext(raw, env)))
    assert {"ARC_FAIL", "DMARC_FAIL_REJECT"} <= symbols(hits)


# -- failures are evidence of nothing ---------------------------------------------------


@pytest.mark.parametrize("server_name", ["silent_dns", "servfail_dns"])
def test_dead_dns_gives_temperrors_with_no_points(request, server_name, dkim_key):
    server = request.getfixturevalue(server_name)
    resolver = resolver_for(server, timeout=0.2, lifetime=0.3)
    dnsbl = DnsblScorer.from_config({"lists": LISTS}, services(resolver))
    auth = auth_scorer(resolver)
    env = Envelope(client_ip=CLIENT_IP, helo="mx.example.test", mail_from="alice@example.test")
    ctx = MessageContext(signed(dkim_key, plain_message(body="see http://evil-pills.test/\r\n")), env)
    started = time.perf_counter()
    dnsbl_hits, auth_hits = run_all(dnsbl.score(ctx), auth.score(ctx))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.5  # bounded by the 0.3 s lifetime, lookups overlapping
    assert symbols(dnsbl_hits) == {"DNSBL_TEMPERROR"}
    assert {"SPF_TEMPERROR", "DKIM_TEMPERROR", "DMARC_TEMPERROR"} <= symbols(auth_hits)
    expected = "timeout" if server_name == "silent_dns" else "servfail"
    assert expected in dnsbl_hits[0].reason and "zen.rbl.test" in dnsbl_hits[0].reason
    for hit in dnsbl_hits + auth_hits:
        if hit.symbol.endswith("TEMPERROR"):
            weights = dnsbl.info.default_weights if hit.symbol.startswith("DNSBL") else auth.info.default_weights
            assert weights[hit.symbol] == 0.0
    stats = resolver.stats
    assert (stats.timeouts if expected == "timeout" else stats.servfails) > 0


def test_scanner_finishes_within_deadline_when_dns_never_answers(silent_dns, tiny_model, ham_message):
    config = Config(
        store=StoreConfig(backend="memory"),
        scanner=ScannerConfig(scorers=("bayes", "dnsbl", "auth"), deadline=1.5),
        dns=DnsConfig(nameservers=("127.0.0.1",), port=silent_dns.port, timeout=0.5, lifetime=5.0),
        scorers={"dnsbl": {"lists": LISTS, "timeout": 1.0}, "auth": {"timeout": 1.0}},
    )
    with Scanner(config, store=MemoryStore(), model=tiny_model) as scanner:
        started = time.perf_counter()
        result = scanner.scan_sync(ham_message, Envelope(client_ip=CLIENT_IP, mail_from="alice@example.test", helo="mx.example.test"))
        elapsed = time.perf_counter() - started
    assert elapsed < 1.5
    assert not result.failures  # the scorers gave up on DNS themselves and reported temperrors
    temperrors = [c for c in result.contributions if c.symbol.endswith("TEMPERROR")]
    assert {c.symbol for c in temperrors} >= {"DNSBL_TEMPERROR", "SPF_TEMPERROR", "DMARC_TEMPERROR"}
    assert all(c.points == 0.0 for c in temperrors)
    assert result.verdict.action is Action.ACCEPT


def test_scanner_wires_the_configured_resolver_into_both_scorers(fake_dns, tiny_model, dkim_key):
    config = Config(
        store=StoreConfig(backend="memory"),
        scanner=ScannerConfig(scorers=("bayes", "dnsbl", "auth")),
        dns=DnsConfig(nameservers=("127.0.0.1",), port=fake_dns.port, timeout=1.0, lifetime=2.0),
        scorers={"dnsbl": {"lists": LISTS}, "auth": {"authserv_id": "mx.example.net"}},
    )
    raw = signed(dkim_key, plain_message(body="buy http://evil-pills.test/now\r\n"))
    env = Envelope(client_ip=CLIENT_IP, helo="bad.example", mail_from="alice@example.test", rcpt_to=("bob@example.net",))
    with Scanner(config, store=MemoryStore(), model=tiny_model) as scanner:
        assert [s.name for s in scanner.scorers] == ["bayes", "dnsbl", "auth"]
        assert all(getattr(s, "resolver", scanner.resolver) is scanner.resolver for s in scanner.scorers)
        result = scanner.scan_sync(raw, env)
        again = scanner.scan_sync(raw, env)
        stats = scanner.resolver.stats
    points = {c.symbol: c.points for c in result.contributions}
    assert points["RBL_ZEN_SBL"] > 0 and points["DBL_SPAM"] > 0 and points["SPF_FAIL"] > 0
    assert points["DKIM_PASS_ALIGNED"] < 0 and points["DMARC_PASS"] < 0  # DKIM aligned: DMARC passes
    assert ("Authentication-Results", next(v for n, v in result.verdict.headers if n == "Authentication-Results")) in result.verdict.headers
    assert again.score == pytest.approx(result.score)
    assert stats.cache_hits >= stats.queries  # the second scan was answered from the cache

    no_net = config.replace(scanner=ScannerConfig(scorers=("bayes", "dnsbl", "auth"), network=False))
    with Scanner(no_net, store=MemoryStore(), model=tiny_model) as scanner:
        assert [s.name for s in scanner.scorers] == ["bayes"]
        assert scanner.resolver is None


def test_lookups_of_one_message_overlap(slow_dns, dkim_key):
    """Every answer is 50 ms late; a message needing ~10 lookups still takes about one RTT per
    dependent step (SPF record, then nothing; DMARC; DKIM key; RBLs; URI list all at once)."""
    resolver = resolver_for(slow_dns)
    dnsbl = DnsblScorer.from_config({"lists": LISTS}, services(resolver))
    auth = auth_scorer(resolver)
    body = "http://evil-pills.test/ http://a1.test/ http://a2.test/ http://a3.test/\r\n"
    env = Envelope(client_ip=CLIENT_IP, helo="mx.example.test", mail_from="alice@example.test")
    ctx = MessageContext(signed(dkim_key, plain_message(body=body)), env)
    started = time.perf_counter()
    run_all(dnsbl.score(ctx), auth.score(ctx))
    elapsed = time.perf_counter() - started
    assert resolver.stats.queries >= 10
    assert elapsed < 0.4, f"{resolver.stats.queries} lookups took {elapsed:.3f}s: they did not overlap"


def test_doctor_checks_dns(fake_dns, silent_dns, tmp_path, capsys, monkeypatch):
    """`mailguard doctor` asks the configured resolver: a live server passes, a silent one fails."""
    from mailguard.cli import main

    monkeypatch.setenv("MAILGUARD_STORE", str(tmp_path / "s.sqlite3"))
    config = tmp_path / "mailguard.toml"
    config.write_text(
        f'[scanner]\nscorers = ["bayes", "dnsbl"]\n[dns]\nnameservers = ["127.0.0.1"]\nport = {fake_dns.port}\ntimeout = 0.5\nlifetime = 1.0\n'
    )
    assert main(["--config", str(config), "doctor"]) == 0
    assert "ok   dns: nxdomain from 127.0.0.1" in capsys.readouterr().out
    config.write_text(
        f'[scanner]\nscorers = ["bayes", "dnsbl"]\n[dns]\nnameservers = ["127.0.0.1"]\nport = {silent_dns.port}\ntimeout = 0.3\nlifetime = 0.6\n'
    )
    assert main(["--config", str(config), "doctor"]) == 1
    assert "FAIL dns: timeout" in capsys.readouterr().out
