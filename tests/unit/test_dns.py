"""Resolver: cache (TTL, bound, negative answers), coalescing, counters, budgets, config."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailguard.config import DnsConfig, config_from_mapping
from mailguard.dns import Resolver, StaticResolver, offline_resolver, reverse_ip
from mailguard.errors import ConfigError


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("ip", "label"),
    [
        ("192.0.2.1", "1.2.0.192"),
        ("127.0.0.2", "2.0.0.127"),
        ("2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"),
        ("::ffff:198.51.100.7", "7.100.51.198"),  # IPv4-mapped: looked up as IPv4
    ],
)
def test_reverse_ip(ip, label):
    assert reverse_ip(ip) == label


def test_answers_are_cached_for_their_ttl_and_counted():
    resolver = StaticResolver({("a.test", "A"): ["192.0.2.1"]}, ttl=0.2)

    async def main():
        first = await resolver.lookup("A.test.", "a")  # case and trailing dot do not matter
        second = await resolver.lookup("a.test", "A")
        missing = await resolver.lookup("nope.test", "A")
        missing_again = await resolver.lookup("nope.test", "A")
        await asyncio.sleep(0.25)
        expired = await resolver.lookup("a.test", "A")
        return first, second, missing, missing_again, expired

    first, second, missing, missing_again, expired = run(main())
    assert first.ok and first.records == ("192.0.2.1",) and second == first
    assert missing.status == "nxdomain" and not missing.failed and missing_again == missing
    assert expired.ok
    assert resolver.asked == [("a.test", "A"), ("nope.test", "A"), ("a.test", "A")]
    stats = resolver.stats
    assert (stats.lookups, stats.cache_hits, stats.queries, stats.nxdomains) == (5, 2, 3, 1)
    assert stats.hit_rate == pytest.approx(0.4)


def test_cache_is_bounded_lru():
    resolver = StaticResolver({}, cache_size=2)

    async def main():
        for name in ("a.test", "b.test", "a.test", "c.test", "a.test", "b.test"):
            await resolver.lookup(name)

    run(main())
    # a, b cached; a hit (now newest); c evicts b; a hit; b asked again
    assert resolver.asked == [("a.test", "A"), ("b.test", "A"), ("c.test", "A"), ("b.test", "A")]
    assert resolver.stats.cache_hits == 2


def test_failures_are_not_cached_and_are_counted():
    resolver = StaticResolver({("slow.test", "A"): "timeout", ("bad.test", "A"): "servfail"})

    async def main():
        return [await resolver.lookup(n) for n in ("slow.test", "slow.test", "bad.test")]

    answers = run(main())
    assert [a.status for a in answers] == ["timeout", "timeout", "servfail"]
    assert all(a.failed for a in answers)
    assert len(resolver.asked) == 3
    assert (resolver.stats.timeouts, resolver.stats.servfails, resolver.stats.cache_hits) == (2, 1, 0)


def test_identical_lookups_in_flight_are_sent_once():
    resolver = StaticResolver({("x.test", "TXT"): ["v=spf1 -all"]}, delay=0.05)

    async def main():
        return await asyncio.gather(*(resolver.lookup("x.test", "TXT") for _ in range(20)))

    answers = run(main())
    assert all(a.records == (b"v=spf1 -all",) for a in answers)
    assert resolver.asked == [("x.test", "TXT")]
    assert resolver.stats.coalesced == 19


def test_a_callers_budget_cuts_only_its_own_wait():
    resolver = StaticResolver({("x.test", "A"): ["192.0.2.1"]}, delay=0.2)

    async def main():
        started = time.perf_counter()
        impatient = asyncio.ensure_future(resolver.lookup("x.test", timeout=0.05))
        patient = asyncio.ensure_future(resolver.lookup("x.test"))
        first = await impatient
        waited = time.perf_counter() - started
        return first, waited, await patient, await resolver.lookup("x.test", timeout=0)

    first, waited, second, cached = run(main())
    assert first.status == "timeout" and waited < 0.15
    assert second.ok  # the shared lookup went on for the other caller
    assert cached.ok  # and its answer was cached


def test_invalid_names_are_not_sent():
    resolver = StaticResolver({})
    answer = run(resolver.lookup("a" * 70 + ".test"))
    assert answer.status == "invalid" and not answer.failed
    assert resolver.asked == []


def test_offline_resolver_fails_every_lookup_temporarily():
    answer = run(offline_resolver().lookup("example.org", "TXT"))
    assert answer.failed and "no DNS resolver" in answer.detail


def test_resolver_from_config_aims_at_the_configured_server():
    resolver = Resolver.from_config(DnsConfig(nameservers=("127.0.0.1",), port=5353, timeout=0.5, lifetime=1.0, cache_size=7))
    inner = resolver._resolver
    assert inner is not None
    assert [str(ns.address) for ns in inner.nameservers] == ["127.0.0.1"]
    assert inner.nameservers[0].port == 5353
    assert (inner.timeout, inner.lifetime, resolver.cache_size) == (0.5, 1.0, 7)


@pytest.mark.parametrize(
    "section",
    [
        {"nameservers": ["dns.example"]},
        {"port": 70000},
        {"timeout": 0},
        {"timeout": 3.0, "lifetime": 1.0},
        {"cache_size": -1},
        {"nameserver": ["127.0.0.1"]},
    ],
)
def test_bad_dns_config_is_refused(section):
    with pytest.raises(ConfigError):
        config_from_mapping({"dns": section})


def test_dns_config_section():
    config = config_from_mapping({"dns": {"nameservers": ["127.0.0.1", "::1"], "port": 5300, "lifetime": 4}})
    assert config.dns.nameservers == ("127.0.0.1", "::1") and config.dns.port == 5300 and config.dns.lifetime == 4.0
