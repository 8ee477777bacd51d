"""dnsbl decision logic with injected DNS answers: return-code maps, query names, trusted
hops, URI cap, errors never counted as listings, configuration."""

from __future__ import annotations

import asyncio

import pytest

from mailguard import Config, Envelope, MessageContext, Scanner
from mailguard.config import ScannerConfig, StoreConfig
from mailguard.dns import StaticResolver
from mailguard.errors import ConfigError
from mailguard.message.relay import DEFAULT_TRUSTED_NETWORKS, client_relay, parse_networks
from mailguard.scorer import Services
from mailguard.scorers.dnsbl import DEFAULT_LISTS, DnsblScorer, _parse_list
from mailguard.stores.memory import MemoryStore

ZEN = {
    "zone": "zen.test",
    "kind": "ip",
    "ipv6": True,
    "symbol": "ZEN",
    "codes": {"127.0.0.2": "ZEN_SBL", "127.0.0.4": "ZEN_XBL", "127.0.0.10": "ZEN_PBL"},
}
WL = {"zone": "wl.test", "kind": "allow", "symbol": "WL", "codes": {"127.0.*.3": "WL_HI", "127.0.*.1": "WL_LOW"}, "error_codes": ["127.0.0.255"]}
SURBL = {"zone": "multi.test", "kind": "uri", "symbol": "SURBL", "bits": {"8": "SURBL_PH", "16": "SURBL_MW"}}


def services(resolver=None) -> Services:
    return Services(Config(store=StoreConfig(backend="memory")), MemoryStore(), None, resolver)


def scorer_with(records, lists=(ZEN, WL, SURBL), **section) -> tuple[DnsblScorer, StaticResolver]:
    resolver = StaticResolver(records)
    return DnsblScorer.from_config({"lists": list(lists), **section}, services(resolver)), resolver


def message(body: str = "hello\n", received: tuple[str, ...] = ()) -> bytes:
    head = "".join(f"Received: {r}\n" for r in received)
    return f"{head}From: a@example.org\nTo: b@example.net\nSubject: s\n\n{body}".encode()


def score(scorer, ctx):
    return {h.symbol: h for h in asyncio.run(scorer.score(ctx))}


# -- return codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "answer", "symbols", "error"),
    [
        (ZEN, "127.0.0.2", ["ZEN_SBL"], None),
        (ZEN, "127.0.0.10", ["ZEN_PBL"], None),
        (ZEN, "127.0.0.99", ["ZEN"], None),  # unknown code: the list's own symbol
        (ZEN, "127.255.255.254", [], "refused"),  # Spamhaus: public resolver / rate limit
        (ZEN, "127.255.255.252", [], "refused"),
        (ZEN, "10.0.0.1", [], "outside 127.0.0.0/8"),  # NXDOMAIN rewritten by a resolver
        (WL, "127.0.15.3", ["WL_HI"], None),
        (WL, "127.0.5.1", ["WL_LOW"], None),
        (WL, "127.0.0.255", [], "refused"),  # the list's own error code
        (SURBL, "127.0.0.24", ["SURBL_PH", "SURBL_MW"], None),  # 8|16
        (SURBL, "127.0.0.64", ["SURBL"], None),
    ],
)
def test_return_code_maps(raw, answer, symbols, error):
    dnslist, _ = _parse_list(raw, "test")
    found, problem = dnslist.classify(answer)
    assert found == symbols
    assert (problem is None) if error is None else (error in problem)


# -- trusted hops -------------------------------------------------------------------------

TRUSTED = parse_networks(list(DEFAULT_TRUSTED_NETWORKS), "t")
HOPS = (
    "from relay.corp (relay.corp [10.0.0.5]) by mx.corp (Postfix); Thu, 2 Jan 2025 10:00:03 +0000",
    "from mail.sender.example (mail.sender.example [198.51.100.9]) by relay.corp; Thu, 2 Jan 2025 10:00:02 +0000",
    "from forged.example (forged.example [192.0.2.66]) by mail.sender.example; Thu, 2 Jan 2025 10:00:01 +0000",
)


def test_envelope_client_is_used_when_untrusted():
    ctx = MessageContext(message(received=HOPS), Envelope(client_ip="203.0.113.4", helo="h.example"))
    relay = client_relay(ctx, TRUSTED)
    assert relay is not None and (relay.ip, relay.helo, relay.source) == ("203.0.113.4", "h.example", "envelope")


def test_first_untrusted_hop_after_trusted_ones():
    for envelope in (None, Envelope(client_ip="10.0.0.5")):  # no envelope, or a trusted relay handed it over
        relay = client_relay(MessageContext(message(received=HOPS), envelope), TRUSTED)
        assert relay is not None and relay.ip == "198.51.100.9" and relay.source == "received"
        assert relay.rdns == "mail.sender.example"


def test_configured_trusted_networks_move_the_border():
    wider = parse_networks(["10.0.0.0/8", "198.51.100.0/24"], "t")
    relay = client_relay(MessageContext(message(received=HOPS)), wider)
    assert relay is not None and relay.ip == "192.0.2.66"


def test_all_hops_trusted_means_no_client():
    assert client_relay(MessageContext(message(received=HOPS[:1])), TRUSTED) is None
    assert client_relay(MessageContext(message()), TRUSTED) is None


def test_ipv6_hop():
    hop = "from v6.example (v6.example [IPv6:2001:db8::25]) by mx.corp; Thu, 2 Jan 2025 10:00:03 +0000"
    relay = client_relay(MessageContext(message(received=(hop,))), TRUSTED)
    assert relay is not None and relay.ip == "2001:db8::25"


# -- the scorer -----------------------------------------------------------------------------


def test_ip_lists_queried_by_reversed_address():
    scorer, resolver = scorer_with({("4.113.0.203.zen.test", "A"): ["127.0.0.4", "127.0.0.10"]})
    hits = score(scorer, MessageContext(message(), Envelope(client_ip="203.0.113.4")))
    assert set(hits) == {"ZEN_XBL", "ZEN_PBL"}
    assert sorted(resolver.asked) == [("4.113.0.203.wl.test", "A"), ("4.113.0.203.zen.test", "A")]


def test_ipv6_only_on_lists_that_take_it():
    scorer, resolver = scorer_with({})
    score(scorer, MessageContext(message(), Envelope(client_ip="2001:db8::1")))
    assert [name for name, _ in resolver.asked] == ["1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.test"]


def test_allow_list_hit_has_negative_weight():
    scorer, _ = scorer_with({("4.113.0.203.wl.test", "A"): ["127.0.9.3"]})
    hits = score(scorer, MessageContext(message(), Envelope(client_ip="203.0.113.4")))
    assert set(hits) == {"WL_HI"}
    assert scorer.info.default_weights["WL_HI"] < 0 < scorer.info.default_weights["ZEN_SBL"]


def test_uri_domains_are_registered_domains_and_capped():
    body = "x http://a.b.evil.test/1 http://www.c.test/ https://d.test/ http://e.test/ http://192.0.2.1/ http://skip.test/\n"
    scorer, resolver = scorer_with({("evil.test.multi.test", "A"): ["127.0.0.8"]}, max_uri_domains=2)
    ctx = MessageContext(message(body))
    hits = score(scorer, ctx)
    assert set(hits) == {"SURBL_PH"} and "evil.test" in hits["SURBL_PH"].reason
    assert sorted(resolver.asked) == [("c.test.multi.test", "A"), ("evil.test.multi.test", "A")]
    assert any("max_uri_domains=2" in p for p in ctx.problems)


def test_skip_domains_are_not_looked_up():
    scorer, resolver = scorer_with({}, skip_domains=["c.test"])
    score(scorer, MessageContext(message("http://www.c.test/ http://d.test/\n")))
    assert resolver.asked == [("d.test.multi.test", "A")]


def test_failures_and_refusals_are_reported_not_listed():
    scorer, _ = scorer_with(
        {
            ("4.113.0.203.zen.test", "A"): "timeout",
            ("4.113.0.203.wl.test", "A"): ["127.0.0.255"],
            ("bad.test.multi.test", "A"): "servfail",
        }
    )
    hits = score(scorer, MessageContext(message("http://bad.test/\n"), Envelope(client_ip="203.0.113.4")))
    assert set(hits) == {"DNSBL_TEMPERROR", "DNSBL_ERROR"}
    assert "zen.test timeout" in hits["DNSBL_TEMPERROR"].reason and "multi.test servfail" in hits["DNSBL_TEMPERROR"].reason
    assert "wl.test refused" in hits["DNSBL_ERROR"].reason
    assert scorer.info.default_weights["DNSBL_TEMPERROR"] == scorer.info.default_weights["DNSBL_ERROR"] == 0.0


def test_internal_mail_with_no_urls_needs_no_lookup():
    scorer, resolver = scorer_with({})
    assert score(scorer, MessageContext(message(received=HOPS[:1]))) == {}
    assert resolver.asked == []


# -- configuration --------------------------------------------------------------------------


def test_defaults_are_public_lists_with_declared_symbols():
    scorer = DnsblScorer.from_config({}, services())
    assert [dl.zone for dl in scorer.lists] == [raw["zone"] for raw in DEFAULT_LISTS]
    weights = scorer.info.default_weights
    assert weights["RBL_SPAMHAUS_SBL"] > 0 and weights["RBL_SPAMHAUS_PBL"] > 0
    assert weights["RCVD_IN_DNSWL_HI"] < weights["RCVD_IN_DNSWL_LOW"] < 0
    assert set(weights) == set(scorer.info.symbols)
    assert scorer.info.network and scorer.info.group == "dnsbl"


def test_extra_lists_and_weight_overrides():
    extra = {"zone": "bl.example.org", "weights": {"RBL_BL_EXAMPLE_ORG": 0.7}}
    scorer = DnsblScorer.from_config({"extra_lists": [extra]}, services())
    assert scorer.lists[-1].zone == "bl.example.org" and scorer.lists[-1].kind == "ip"
    assert scorer.info.default_weights["RBL_BL_EXAMPLE_ORG"] == 0.7


@pytest.mark.parametrize(
    "section",
    [
        {"lists": [{"zone": "not a zone"}]},
        {"lists": [{"zone": "x.test", "kind": "maybe"}]},
        {"lists": [{"zone": "x.test", "codes": {"127.0.0": "X"}}]},
        {"lists": [{"zone": "x.test", "codes": {"127.0.0.2": "lower_case"}}]},
        {"lists": [{"zone": "x.test", "bits": {"300": "X"}}]},
        {"lists": [{"zone": "x.test", "weights": {"NOT_EMITTED": 1.0}}]},
        {"lists": [{"zone": "x.test", "colour": "red"}]},
        {"lists": [{"zone": "x.test"}, {"zone": "x.test"}]},
        {"trusted_networks": ["10.0.0.0/33"]},
        {"max_uri_domains": -1},
        {"timeout": 0},
    ],
)
def test_bad_config_fails_at_startup(section):
    with pytest.raises(ConfigError):
        DnsblScorer.from_config(section, services())


def test_no_network_switch_removes_the_network_scorers(tiny_model):
    config = Config(store=StoreConfig(backend="memory"), scanner=ScannerConfig(scorers=("bayes", "dnsbl", "auth"), network=False))
    with Scanner(config, store=MemoryStore(), model=tiny_model) as scanner:
        assert [s.name for s in scanner.scorers] == ["bayes"]


def test_scanner_hands_its_resolver_to_network_scorers(tiny_model):
    resolver = StaticResolver({})
    config = Config(store=StoreConfig(backend="memory"), scanner=ScannerConfig(scorers=("dnsbl", "auth")))
    with Scanner(config, store=MemoryStore(), model=tiny_model, resolver=resolver) as scanner:
        assert scanner.resolver is resolver
        assert all(s.resolver is resolver for s in scanner.scorers)  # type: ignore[attr-defined]
