"""SPF, DKIM, DMARC and ARC decision logic with injected DNS answers (no server)."""

from __future__ import annotations

import asyncio
import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailguard import Config, Envelope, MessageContext
from mailguard.config import StoreConfig
from mailguard.auth.dkim import ArcResult, ArcSet, verify_dkim
from mailguard.auth.dmarc import (
    AuthIdentity,
    Discovery,
    DmarcError,
    aligned,
    discover_policy,
    evaluate,
    from_domains,
    org_domain,
    parse_record,
)
from mailguard.dns import StaticResolver
from mailguard.errors import ConfigError
from mailguard.scorer import Services
from mailguard.scorers.auth import AuthScorer
from mailguard.auth.spf import check_spf
from mailguard.stores.memory import MemoryStore


def run(coro):
    return asyncio.run(coro)


# -- organizational domain and alignment ------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "org"),
    [("example.com", "example.com"), ("mail.news.example.com", "example.com"), ("a.b.example.co.uk", "example.co.uk"), ("Example.ORG.", "example.org")],
)
def test_org_domain(domain, org):
    assert org_domain(domain) == org


@pytest.mark.parametrize(
    ("identity", "from_domain", "relaxed", "strict"),
    [
        ("example.com", "example.com", True, True),
        ("mail.example.com", "example.com", True, False),
        ("example.com", "news.example.com", True, False),
        ("example.co.uk", "other.co.uk", False, False),  # same public suffix is not the same org
        ("evil.com", "example.com", False, False),
        ("", "example.com", False, False),
    ],
)
def test_alignment(identity, from_domain, relaxed, strict):
    assert aligned(identity, from_domain, "r") is relaxed
    assert aligned(identity, from_domain, "s") is strict


def test_from_domains():
    assert from_domains(["Alice <alice@Example.COM>"]) == ["example.com"]
    assert from_domains(["a@x.test, b@y.test"]) == ["x.test", "y.test"]
    assert from_domains(["undisclosed"]) == []


# -- DMARC records and discovery ----------------------------------------------------------


def test_parse_record():
    policy = parse_record("v=DMARC1; p=reject; sp=quarantine; pct=150; adkim=s; aspf=x", "example.com")
    assert (policy.p, policy.sp, policy.pct, policy.adkim, policy.aspf) == ("reject", "quarantine", 100, "s", "r")
    assert parse_record("v=DMARC1; p=quarantine", "x.test").sp == "quarantine"  # sp defaults to p
    assert parse_record("v=DMARC1; p=bogus; rua=mailto:d@x.test", "x.test").p == "none"  # RFC 7489 6.6.3
    with pytest.raises(DmarcError):
        parse_record("v=DMARC1; p=bogus", "x.test")
    with pytest.raises(DmarcError):
        parse_record("v=spf1 -all", "x.test")


def test_discovery_falls_back_to_the_organizational_domain():
    resolver = StaticResolver({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; sp=none", "some other txt"]})
    found = run(discover_policy("news.example.com", resolver.lookup))
    assert found.status == "found" and found.policy is not None and found.policy.domain == "example.com"
    assert sorted(resolver.asked) == [("_dmarc.example.com", "TXT"), ("_dmarc.news.example.com", "TXT")]


def test_discovery_outcomes():
    resolver = StaticResolver(
        {
            ("_dmarc.two.test", "TXT"): ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
            ("_dmarc.slow.test", "TXT"): "timeout",
            ("_dmarc.bad.test", "TXT"): ["v=DMARC1; p=whatever"],
        }
    )
    assert run(discover_policy("two.test", resolver.lookup)).status == "none"  # two records: no DMARC
    assert run(discover_policy("slow.test", resolver.lookup)).status == "temperror"
    assert run(discover_policy("bad.test", resolver.lookup)).status == "permerror"
    assert run(discover_policy("nothing.test", resolver.lookup)).status == "none"


# -- DMARC evaluation --------------------------------------------------------------------------


def found(record: str, at: str) -> Discovery:
    return Discovery("found", parse_record(record, at))


def test_dmarc_pass_needs_an_aligned_pass():
    policy = found("v=DMARC1; p=reject", "example.com")
    dkim_other = [AuthIdentity("mailer.net", "pass")]
    assert evaluate("example.com", policy, AuthIdentity("example.com", "pass"), []).result == "pass"
    assert evaluate("example.com", policy, AuthIdentity("bounce.example.com", "pass"), []).spf_aligned
    assert evaluate("example.com", policy, None, [AuthIdentity("mail.example.com", "pass")]).dkim_aligned
    failed = evaluate("example.com", policy, AuthIdentity("mailer.net", "pass"), dkim_other)
    assert (failed.result, failed.policy, failed.disposition) == ("fail", "reject", "reject")


def test_strict_alignment():
    policy = found("v=DMARC1; p=quarantine; adkim=s; aspf=s", "example.com")
    sub = [AuthIdentity("mail.example.com", "pass")]
    assert evaluate("example.com", policy, AuthIdentity("bounce.example.com", "pass"), sub).result == "fail"
    assert evaluate("example.com", policy, None, [AuthIdentity("example.com", "pass")]).result == "pass"


def test_subdomain_policy_applies_below_the_org_domain():
    policy = found("v=DMARC1; p=reject; sp=none", "example.com")
    result = evaluate("news.example.com", policy, None, [])
    assert (result.result, result.policy, result.disposition) == ("fail", "none", "none")
    assert evaluate("example.com", policy, None, []).policy == "reject"


def test_pct_zero_softens_the_policy():
    reject = evaluate("example.com", found("v=DMARC1; p=reject; pct=0", "example.com"), None, [], digest="abc")
    assert (reject.policy, reject.disposition) == ("reject", "quarantine")
    quarantine = evaluate("example.com", found("v=DMARC1; p=quarantine; pct=0", "example.com"), None, [], digest="abc")
    assert quarantine.disposition == "none"


def test_pct_sampling_is_deterministic_per_message():
    policy = found("v=DMARC1; p=reject; pct=50", "example.com")
    outcomes = [evaluate("example.com", policy, None, [], digest=f"m{i}").disposition for i in range(200)]
    assert set(outcomes) == {"reject", "quarantine"}
    assert 60 < outcomes.count("reject") < 140
    assert outcomes == [evaluate("example.com", policy, None, [], digest=f"m{i}").disposition for i in range(200)]


def test_temperror_of_an_aligned_check_is_not_a_fail():
    policy = found("v=DMARC1; p=reject", "example.com")
    assert evaluate("example.com", policy, AuthIdentity("example.com", "temperror"), []).result == "temperror"
    assert evaluate("example.com", policy, None, [AuthIdentity("example.com", "temperror")]).result == "temperror"
    # an unaligned temperror cannot rescue the message
    assert evaluate("example.com", policy, AuthIdentity("other.net", "temperror"), []).result == "fail"
    assert evaluate("example.com", Discovery("temperror", detail="x"), None, []).result == "temperror"


# -- SPF through injected answers ------------------------------------------------------------

SPF_ZONE = {
    ("example.com", "TXT"): ["v=spf1 ip4:192.0.2.0/24 include:_spf.mailer.net ~all"],
    ("_spf.mailer.net", "TXT"): ["v=spf1 mx:mailer.net -all"],
    ("mailer.net", "MX"): [(10, "mx1.mailer.net")],
    ("mx1.mailer.net", "A"): ["198.51.100.25"],
    ("hard.example", "TXT"): ["v=spf1 -all"],
    ("helo.example", "TXT"): ["v=spf1 a -all"],
    ("helo.example", "A"): ["203.0.113.5"],
    ("slow.example", "TXT"): "timeout",
    ("broken.example", "TXT"): ["v=spf1 ip4:not-an-ip -all"],
}


@pytest.mark.parametrize(
    ("ip", "sender", "helo", "result"),
    [
        ("192.0.2.10", "a@example.com", "x", "pass"),
        ("198.51.100.25", "a@example.com", "x", "pass"),  # include -> mx -> A
        ("203.0.113.9", "a@example.com", "x", "softfail"),
        ("203.0.113.9", "a@hard.example", "x", "fail"),
        ("203.0.113.9", "a@nothing.example", "x", "none"),
        ("203.0.113.9", "a@slow.example", "x", "temperror"),
        ("203.0.113.9", "a@broken.example", "x", "permerror"),
        ("203.0.113.5", "", "helo.example", "pass"),  # null sender: the HELO identity
    ],
)
def test_spf(ip, sender, helo, result):
    resolver = StaticResolver(SPF_ZONE)
    assert run(check_spf(ip, sender, helo, resolver.lookup)).result == result


# -- DKIM through injected answers ---------------------------------------------------------


@pytest.fixture(scope="module")
def key():
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


RAW = b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello Bob\r\n"


def signed(pem: bytes, domain: bytes = b"example.com", raw: bytes = RAW) -> bytes:
    return dkim.sign(raw, b"s1", domain, pem, include_headers=[b"from", b"to", b"subject"]) + raw


def test_dkim_results(key):
    pem, txt = key
    zone = {("s1._domainkey.example.com", "TXT"): [txt], ("s1._domainkey.slow.example", "TXT"): "timeout"}
    resolver = StaticResolver(zone)
    twice = signed(pem, b"other.example", signed(pem))  # example.com (key published) + other.example (no key)
    results = run(verify_dkim(twice, resolver.lookup))
    assert [(r.domain, r.result) for r in results] == [("other.example", "permerror"), ("example.com", "pass")]
    tampered = signed(pem).replace(b"Hello Bob", b"Hello Eve")
    assert [r.result for r in run(verify_dkim(tampered, resolver.lookup))] == ["fail"]
    assert [r.result for r in run(verify_dkim(signed(pem, b"slow.example"), resolver.lookup))] == ["temperror"]
    assert run(verify_dkim(RAW, resolver.lookup)) == []
    # both key names were asked at once, before verification
    assert set(resolver.asked) >= {("s1._domainkey.example.com", "TXT"), ("s1._domainkey.other.example", "TXT")}


# -- the scorer --------------------------------------------------------------------------------


def services(resolver=None) -> Services:
    return Services(Config(store=StoreConfig(backend="memory")), MemoryStore(), None, resolver)


def test_scorer_symbols_and_header_with_injected_answers(key):
    pem, txt = key
    zone = {**SPF_ZONE, ("s1._domainkey.example.com", "TXT"): [txt], ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]}
    scorer = AuthScorer.from_config({"authserv_id": "mx.test"}, services(StaticResolver(zone)))
    ctx = MessageContext(signed(pem), Envelope(client_ip="203.0.113.9", helo="helo.example", mail_from="bounce@example.com"))
    hits = {h.symbol for h in run(scorer.score(ctx))}
    assert hits == {"SPF_SOFTFAIL", "SPF_HELO_FAIL", "DKIM_PASS_ALIGNED", "ARC_NONE", "DMARC_PASS"}
    assert ctx.added_headers == [
        (
            "Authentication-Results",
            "mx.test; spf=softfail smtp.mailfrom=bounce@example.com; spf=fail smtp.helo=helo.example; "
            "dkim=pass header.d=example.com header.s=s1; dmarc=pass header.from=example.com policy.dmarc=reject",
        )
    ]


def test_without_envelope_client_and_sender_come_from_the_headers():
    received = "Received: from out.example (out.example [192.0.2.10]) by mx.test; Thu, 2 Jan 2025 10:00:00 +0000\r\n"
    raw = b"Return-Path: <a@example.com>\r\n" + received.encode() + RAW
    resolver = StaticResolver({**SPF_ZONE, ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=none"]})
    scorer = AuthScorer.from_config({"spf_helo": False}, services(resolver))
    hits = {h.symbol for h in run(scorer.score(MessageContext(raw)))}
    assert hits == {"SPF_PASS", "DKIM_NONE", "ARC_NONE", "DMARC_PASS"}


def test_unknown_sender_is_not_the_null_sender():
    received = "Received: from helo.example (helo.example [203.0.113.5]) by mx.test; Thu, 2 Jan 2025 10:00:00 +0000\r\n"
    resolver = StaticResolver(SPF_ZONE)
    scorer = AuthScorer.from_config({"dmarc": False, "arc": False, "dkim": False}, services(resolver))
    # no Return-Path: MAIL FROM unknown, so only the HELO identity is checked
    ctx = MessageContext(received.encode() + RAW)
    assert {h.symbol for h in run(scorer.score(ctx))} == {"SPF_HELO_PASS"}
    # Return-Path: <> is the null sender: SPF checks postmaster@HELO as the MAIL FROM identity
    ctx = MessageContext(b"Return-Path: <>\r\n" + received.encode() + RAW)
    assert {h.symbol for h in run(scorer.score(ctx))} == {"SPF_PASS"}
    assert "smtp.mailfrom=postmaster@helo.example" in dict(ctx.added_headers)["Authentication-Results"]


def test_unsigned_failing_mail_uses_the_disposition_symbol():
    resolver = StaticResolver({**SPF_ZONE, ("_dmarc.hard.example", "TXT"): ["v=DMARC1; p=quarantine"]})
    scorer = AuthScorer.from_config({}, services(resolver))
    raw = RAW.replace(b"alice@example.com", b"alice@hard.example")
    ctx = MessageContext(raw, Envelope(client_ip="203.0.113.9", helo="[203.0.113.9]", mail_from="alice@hard.example"))
    hits = {h.symbol for h in run(scorer.score(ctx))}
    assert hits == {"SPF_FAIL", "DKIM_NONE", "ARC_NONE", "DMARC_FAIL_QUARANTINE"}  # an IP literal HELO is not checked
    weights = scorer.info.default_weights
    assert weights["DMARC_FAIL_REJECT"] > weights["DMARC_FAIL_QUARANTINE"] > weights["DMARC_FAIL_NONE"] > 0
    assert weights["DMARC_PASS"] < 0 and weights["SPF_PASS"] < 0 and weights["DKIM_PASS_ALIGNED"] < 0
    assert all(weights[s] == 0.0 for s in weights if s.endswith("TEMPERROR"))


def test_arc_override_needs_a_valid_chain_of_trusted_sealers():
    scorer = AuthScorer.from_config({"trusted_arc_sealers": ["fwd.test"]}, services())
    vouching = ArcSet(1, "lists.fwd.test", "i=1; lists.fwd.test; dmarc=pass header.from=example.com")
    assert scorer._arc_override(ArcResult("pass", (vouching,))) == "lists.fwd.test"
    assert scorer._arc_override(ArcResult("fail", (vouching,))) is None
    stranger = ArcSet(2, "relay.other.test", "i=2; relay.other.test; arc=pass")
    assert scorer._arc_override(ArcResult("pass", (stranger, vouching))) is None  # untrusted newest hop
    no_claim = ArcSet(1, "fwd.test", "i=1; fwd.test; dmarc=fail (dmarc=pass was a lie)")
    assert scorer._arc_override(ArcResult("pass", (no_claim,))) is None
    nobody = AuthScorer.from_config({}, services())
    assert nobody._arc_override(ArcResult("pass", (vouching,))) is None


def test_multiple_from_domains_is_a_dmarc_permerror():
    raw = RAW.replace(b"From: Alice <alice@example.com>", b"From: a@example.com, b@other.test")
    scorer = AuthScorer.from_config({"spf": False, "spf_helo": False}, services(StaticResolver({})))
    hits = {h.symbol for h in run(scorer.score(MessageContext(raw)))}
    assert "DMARC_PERMERROR" in hits


def test_disabled_checks_emit_nothing():
    scorer = AuthScorer.from_config({"spf": False, "spf_helo": False, "dkim": False, "arc": False, "dmarc": False}, services(StaticResolver({})))
    ctx = MessageContext(RAW, Envelope(client_ip="192.0.2.10", helo="helo.example", mail_from="a@example.com"))
    assert run(scorer.score(ctx)) == []


@pytest.mark.parametrize(
    "section",
    [
        {"spf": "yes"},
        {"trusted_arc_sealers": "google.com"},
        {"trusted_arc_sealers": ["not a domain"]},
        {"max_signatures": 0},
        {"weights": {"NO_SUCH_SYMBOL": 1.0}},
        {"authserv_id": "bad id;"},
        {"dkim_keys": {}},
    ],
)
def test_bad_config_fails_at_startup(section):
    with pytest.raises(ConfigError):
        AuthScorer.from_config(section, services())


def test_weight_override():
    scorer = AuthScorer.from_config({"weights": {"DMARC_FAIL_REJECT": 4.0}}, services())
    assert scorer.info.default_weights["DMARC_FAIL_REJECT"] == 4.0
