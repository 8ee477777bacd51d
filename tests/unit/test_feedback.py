"""Feedback scorer: per-user allow/block lists, matching, forged senders, growth from reports, bounds."""

from __future__ import annotations

import asyncio
import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailguard.config import Config, StoreConfig
from mailguard.auth.dkim import DkimResult
from mailguard.auth.dmarc import Discovery, DmarcPolicy
from mailguard.dns import StaticResolver
from mailguard.errors import ConfigError
from mailguard.message import Envelope, MessageContext
from mailguard.scorer import Services
from mailguard.scorers.feedback import (
    FeedbackLists,
    FeedbackScorer,
    ListFull,
    Sender,
    dkim_verdict,
    dmarc_verdict,
    format_entry,
    message_senders,
    parse_entry,
)
from mailguard.stores import MemoryStore

USER = "bob@example.net"


def run(coro):
    return asyncio.run(coro)


def raw_message(sender: str = "Alice <alice@shop.example>", *, extra: str = "", body: str = "Hello Bob, the order shipped.") -> bytes:
    return (f"From: {sender}\r\nTo: {USER}\r\nSubject: your order\r\n{extra}\r\n{body}\r\n").encode()


def ctx_for(raw: bytes, user: str | None = USER, mail_from: str | None = None) -> MessageContext:
    return MessageContext(raw, Envelope(mail_from=mail_from), user=user)


def services(store, resolver=None) -> Services:
    return Services(Config(store=StoreConfig(backend="memory")), store, None, resolver)


def scorer_for(store=None, section=None, resolver=None) -> FeedbackScorer:
    return FeedbackScorer.from_config(section or {}, services(store or MemoryStore(), resolver))


def symbols(scorer: FeedbackScorer, ctx: MessageContext) -> list[str]:
    return [h.symbol for h in run(scorer.score(ctx))]


def add(scorer: FeedbackScorer, kind: str, entry: str, user: str = USER) -> bool:
    return run(scorer.lists.add(user, kind, parse_entry(entry)))


# -- entries and senders --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "member"),
    [
        ("Alice+news@Shop.Example", "addr:alice@shop.example"),
        ("Alice <alice@shop.example>", "addr:alice@shop.example"),
        ("@Shop.Example.", "dom:shop.example"),
        ("@bücher.example", "dom:xn--bcher-kva.example"),
    ],
)
def test_entries_are_canonical(text, member):
    assert parse_entry(text) == member
    assert parse_entry(format_entry(member)) == member


@pytest.mark.parametrize("text", ["shop.example", "@", "@bad..example", "a@b@c", "", "two@a.example, three@b.example"])
def test_bad_entries_are_refused(text):
    with pytest.raises(ValueError):
        parse_entry(text)


def test_domain_candidates_stop_at_the_registered_domain():
    members = dict(Sender("x@a.b.example.co.uk", "From").members())
    assert set(members) == {"addr:x@a.b.example.co.uk", "dom:a.b.example.co.uk", "dom:b.example.co.uk", "dom:example.co.uk"}
    assert members["addr:x@a.b.example.co.uk"] > members["dom:a.b.example.co.uk"] > members["dom:example.co.uk"]
    assert "dom:co.uk" not in members and "dom:uk" not in members


def test_senders_from_and_envelope():
    raw = raw_message("Alice <Alice+tag@Shop.Example>", extra="Return-Path: <prvs=1234abcd=bounce@lists.example>\r\n")
    # no SMTP session: the Return-Path stands for MAIL FROM, its BATV tag dropped
    assert [(s.address, s.where) for s in message_senders(ctx_for(raw))] == [
        ("alice@shop.example", "From"),
        ("bounce@lists.example", "envelope sender"),
    ]
    # the session's MAIL FROM wins over a Return-Path header; the null sender is no sender
    assert [s.address for s in message_senders(ctx_for(raw, mail_from="<list+bob=example.net@lists.example>"))] == [
        "alice@shop.example",
        "list@lists.example",
    ]
    assert [s.address for s in message_senders(ctx_for(raw, mail_from=""))] == ["alice@shop.example"]
    # the same address twice is one sender
    assert len(message_senders(ctx_for(raw_message(), mail_from="alice@shop.example"))) == 1


# -- scoring --------------------------------------------------------------------------------


def test_allow_and_block_by_address_and_domain():
    store = MemoryStore()
    scorer = scorer_for(store)
    ctx = ctx_for(raw_message("alice@mail.shop.example"))
    assert symbols(scorer, ctx) == []
    add(scorer, "allow", "@shop.example")  # a subdomain's sender matches the domain entry
    hits = run(scorer.score(ctx_for(raw_message("alice@mail.shop.example"))))
    assert [h.symbol for h in hits] == ["USER_ALLOW"] and "@shop.example" in hits[0].reason
    add(scorer, "block", "alice@mail.shop.example")  # the address is more specific than the domain
    assert symbols(scorer, ctx_for(raw_message("alice@mail.shop.example"))) == ["USER_BLOCK"]
    assert symbols(scorer, ctx_for(raw_message("carol@shop.example"))) == ["USER_ALLOW"]
    assert symbols(scorer, ctx_for(raw_message("carol@othershop.example"))) == []
    # another user's lists are theirs
    assert symbols(scorer, ctx_for(raw_message("carol@shop.example"), user="dave@example.net")) == []


def test_envelope_sender_is_matched_too():
    scorer = scorer_for()
    add(scorer, "block", "@bulk-mailer.example")
    raw = raw_message("Friendly <news@innocent.example>")
    assert symbols(scorer, ctx_for(raw)) == []
    assert symbols(scorer, ctx_for(raw, mail_from="<bounce-77@bulk-mailer.example>")) == ["USER_BLOCK"]
    assert symbols(scorer, ctx_for(raw_message(extra="Return-Path: <x@bulk-mailer.example>\r\n"))) == ["USER_BLOCK"]


def test_equally_specific_allow_and_block_block_wins():
    scorer = scorer_for()
    add(scorer, "allow", "alice@shop.example")
    add(scorer, "block", "bounce@shop.example")
    assert symbols(scorer, ctx_for(raw_message("alice@shop.example"), mail_from="bounce@shop.example")) == ["USER_BLOCK"]


def test_adding_to_one_list_takes_the_entry_off_the_other():
    scorer = scorer_for()
    add(scorer, "block", "alice@shop.example")
    assert add(scorer, "allow", "alice@shop.example") is True
    assert add(scorer, "allow", "Alice@Shop.example") is False  # already there
    lists = run(scorer.lists.get(USER))
    assert lists == {"allow": {"addr:alice@shop.example"}, "block": set()}
    assert symbols(scorer, ctx_for(raw_message())) == ["USER_ALLOW"]
    assert run(scorer.lists.remove(USER, "allow", "addr:alice@shop.example")) is True
    assert run(scorer.lists.remove(USER, "allow", "addr:alice@shop.example")) is False
    assert symbols(scorer, ctx_for(raw_message())) == []


def test_no_user_no_hits():
    scorer = scorer_for()
    add(scorer, "block", "@shop.example")
    assert symbols(scorer, ctx_for(raw_message(), user=None)) == []
    assert symbols(scorer, ctx_for(raw_message(), user="")) == []


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get_members(self, keys):
        self.reads += 1
        return await super().get_members(keys)

    async def get(self, key):
        self.reads += 1
        return await super().get(key)

    async def get_many(self, keys):
        self.reads += 1
        return await super().get_many(keys)

    async def get_counters(self, keys):
        self.reads += 1
        return await super().get_counters(keys)


def test_one_store_read_per_scan():
    store = CountingStore()
    scorer = scorer_for(store)
    add(scorer, "allow", "@shop.example")
    add(scorer, "block", "x@bad.example")
    for raw in (raw_message(), raw_message("x@bad.example"), raw_message("nobody@else.example")):
        store.reads = 0
        run(scorer.score(ctx_for(raw, mail_from="other@else.example")))
        assert store.reads == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"From: \r\n\r\nbody",
        b"From: <>\r\n\r\nbody",
        b"From: a@b.example, c@d.example\r\n\r\nbody",
        b"From: =?utf-8?q?broken\r\nReturn-Path: <<<@@@>>>\r\n\r\n",
        b"From: " + b"x" * 20000 + b"@example.com\r\n\r\n",
        b"From: \"unterminated <a@b.example\r\n\r\n",
        b"From: a@[300.1.1.1]\r\n\r\n",
        b"From: user@[192.0.2.1]\r\n\r\n",
    ],
)
def test_malformed_senders_give_no_hits_not_errors(raw):
    scorer = scorer_for()
    add(scorer, "block", "@b.example")
    hits = run(scorer.score(ctx_for(raw, mail_from="<not an address>")))
    assert all(h.symbol == "USER_BLOCK" for h in hits)
    run(scorer.learn(ctx_for(raw), "spam", USER))


def test_address_literal_sender_matches_only_itself():
    scorer = scorer_for()
    add(scorer, "block", "@[192.0.2.1]")
    assert symbols(scorer, ctx_for(b"From: user@[192.0.2.1]\r\n\r\nhi\r\n")) == ["USER_BLOCK"]


# -- forged senders -------------------------------------------------------------------------


def test_dkim_and_dmarc_verdicts():
    ok, bad = DkimResult("pass", "mail.shop.example", "s1"), DkimResult("fail", "shop.example", "s1")
    assert dkim_verdict([ok], "shop.example") == "pass"  # same organizational domain
    assert dkim_verdict([bad], "shop.example") == "fail"
    assert dkim_verdict([bad, ok], "shop.example") == "pass"
    assert dkim_verdict([DkimResult("pass", "esp.example", "s1")], "shop.example") == "none"  # a third party's signature
    assert dkim_verdict([], "shop.example") == "none"
    strict = Discovery("found", DmarcPolicy(domain="shop.example", p="reject", sp="none"))
    assert dmarc_verdict(strict, "shop.example") == "fail"
    assert dmarc_verdict(strict, "news.shop.example") == "none"  # sp applies to subdomains
    assert dmarc_verdict(Discovery("found", DmarcPolicy(domain="shop.example", p="none", sp="none")), "shop.example") == "none"
    assert dmarc_verdict(Discovery("temperror"), "shop.example") == "none"


@pytest.fixture(scope="module")
def dkim_key():
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def signed(pem: bytes, raw: bytes, domain: bytes = b"shop.example") -> bytes:
    return dkim.sign(raw, b"s1", domain, pem, include_headers=[b"from", b"to", b"subject"]) + raw


def test_allow_entry_is_not_honoured_for_a_refuted_sender(dkim_key):
    pem, txt = dkim_key
    resolver = StaticResolver(
        {
            ("s1._domainkey.shop.example", "TXT"): [txt],
            ("_dmarc.bank.example", "TXT"): ["v=DMARC1; p=reject"],
            ("_dmarc.club.example", "TXT"): ["v=DMARC1; p=none"],
        }
    )
    scorer = scorer_for(resolver=resolver)
    for entry in ("@shop.example", "@bank.example", "@club.example"):
        add(scorer, "allow", entry)
    genuine = signed(pem, raw_message())
    tampered = genuine.replace(b"the order shipped", b"pay this invoice")
    hits = run(scorer.score(ctx_for(genuine)))
    assert [h.symbol for h in hits] == ["USER_ALLOW"] and "DKIM-authenticated" in hits[0].reason
    assert symbols(scorer, ctx_for(tampered)) == []  # a failing signature refutes the From
    assert symbols(scorer, ctx_for(raw_message("security@bank.example"))) == []  # unsigned, domain says reject
    assert symbols(scorer, ctx_for(raw_message("news@club.example"))) == ["USER_ALLOW"]  # unsigned, p=none
    # a block entry still counts when the allow entry is refuted
    add(scorer, "block", "@example")
    assert symbols(scorer, ctx_for(tampered)) == []  # "@example" is a public suffix here: matches no sender
    add(scorer, "block", "@bank.example")
    assert symbols(scorer, ctx_for(raw_message("security@bank.example"))) == ["USER_BLOCK"]
    # strict_allow: only DKIM-authenticated senders keep their allow entry
    strict = FeedbackScorer(scorer.store, strict_allow=True, auth_check=scorer.auth_check)
    assert [h.symbol for h in run(strict.score(ctx_for(genuine)))] == ["USER_ALLOW"]
    assert run(strict.score(ctx_for(raw_message("news@club.example")))) == []


def test_without_a_resolver_allow_entries_stand_unless_strict():
    store = MemoryStore()
    add(scorer_for(store), "allow", "@shop.example")
    assert symbols(scorer_for(store), ctx_for(raw_message())) == ["USER_ALLOW"]
    assert symbols(scorer_for(store, {"strict_allow": True}), ctx_for(raw_message())) == []


def test_a_dns_failure_does_not_raise(dkim_key):
    pem, _ = dkim_key
    scorer = scorer_for(resolver=StaticResolver(default="servfail"), section={"timeout": 1.0})
    add(scorer, "allow", "@shop.example")
    assert symbols(scorer, ctx_for(signed(pem, raw_message()))) == ["USER_ALLOW"]  # temperror proves nothing


# -- growth from reports --------------------------------------------------------------------


def lists_of(scorer: FeedbackScorer, user: str = USER) -> dict[str, set[str]]:
    return {k: {format_entry(m) for m in v} for k, v in run(scorer.lists.get(user)).items()}


@pytest.mark.parametrize(("block_after", "allow_after"), [(2, 1), (3, 2)])
def test_reports_grow_the_lists_after_the_configured_counts(block_after, allow_after):
    scorer = scorer_for(section={"block_after": block_after, "allow_after": allow_after})
    spam = [ctx_for(raw_message("Promo <deals@spammy.example>", body=f"offer {n}")) for n in range(block_after)]
    for n, ctx in enumerate(spam, 1):
        assert symbols(scorer, ctx_for(ctx.raw)) == []
        run(scorer.learn(ctx, "spam", "Bob+junk@Example.net", source="report"))
        assert ("deals@spammy.example" in lists_of(scorer)["block"]) is (n >= block_after)
    assert symbols(scorer, ctx_for(raw_message("deals@spammy.example"))) == ["USER_BLOCK"]
    # the user changes their mind: one ham report lifts the block at once, allow needs allow_after
    for n in range(1, allow_after + 1):
        run(scorer.learn(ctx_for(raw_message("deals@spammy.example", body=f"receipt {n}")), "ham", USER))
        assert lists_of(scorer)["block"] == set()
        assert ("deals@spammy.example" in lists_of(scorer)["allow"]) is (n >= allow_after)
    # and a spam report takes it off the allow list again, and restarts the spam count
    run(scorer.learn(ctx_for(raw_message("deals@spammy.example", body="again")), "spam", USER))
    assert lists_of(scorer) == {"allow": set(), "block": {"deals@spammy.example"} if block_after == 1 else set()}


def test_only_reports_for_a_user_grow_the_lists():
    scorer = scorer_for(section={"block_after": 1})
    ctx = ctx_for(raw_message("deals@spammy.example"))
    run(scorer.learn(ctx, "spam", None, source="report"))
    run(scorer.learn(ctx, "spam", USER, source="autolearn"))
    run(scorer.learn(ctx, "spam", USER, source="train"))
    assert lists_of(scorer) == {"allow": set(), "block": set()}
    run(scorer.learn(ctx, "spam", USER, source="report"))
    assert lists_of(scorer)["block"] == {"deals@spammy.example"}
    assert lists_of(scorer, "carol@example.net")["block"] == set()


def test_lists_are_bounded(caplog):
    scorer = scorer_for(section={"max_entries": 3, "allow_after": 1})
    for n in range(3):
        add(scorer, "allow", f"friend{n}@shop.example")
    with pytest.raises(ListFull, match="full"):
        add(scorer, "allow", "friend9@shop.example")
    assert add(scorer, "allow", "friend0@shop.example") is False  # already there: no error
    run(scorer.learn(ctx_for(raw_message("friend9@shop.example")), "ham", USER))  # a report does not raise
    assert len(run(scorer.lists.get(USER))["allow"]) == 3 and "not listing" in caplog.text
    add(scorer, "block", "x@bad.example")  # the other list has its own bound
    with pytest.raises(ListFull):
        run(FeedbackLists(scorer.store, max_entries=1).add(USER, "block", "addr:y@bad.example"))


@pytest.mark.parametrize(
    "section",
    [
        {"no_such_option": 1},
        {"block_after": 0},
        {"block_after": 1.5},
        {"allow_after": True},
        {"max_entries": 0},
        {"max_entries": 10**9},
        {"count_ttl_days": -1},
        {"strict_allow": "yes"},
        {"timeout": 0},
        {"weights": {"NOPE": 1.0}},
        {"weights": {"USER_ALLOW": "a lot"}},
    ],
)
def test_bad_config_is_refused(section):
    with pytest.raises(ConfigError):
        scorer_for(section=section)


def test_weights_are_configurable():
    scorer = scorer_for(section={"weights": {"USER_ALLOW": -20}})
    assert scorer.info.default_weights == {"USER_ALLOW": -20.0, "USER_BLOCK": 8.0}
    assert scorer.info.learns and not scorer.info.seeded and scorer.info.group == "feedback"
