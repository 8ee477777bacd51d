"""Real components on loopback. DNS: dnslib authoritative servers serving test zones.

dnslib is a test dependency and is imported unconditionally: if it is missing, these tests
fail at collection instead of being skipped.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailguard.dns import Resolver
from mailguard.stores.redis import RedisStore
from mailguard.testing import RedisServer
from mailguard.testing.dns import FakeDNS, SilentDNS

CLIENT_IP = "192.0.2.99"  # listed on the RBL zone below
CLEAN_IP = "198.51.100.20"  # listed nowhere
FORWARDER_IP = "203.0.113.7"  # the mailing list's outbound relay


class DkimKey:
    """An RSA key made for the test run, its PEM for signing and its DNS TXT record."""

    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.txt = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


@pytest.fixture(scope="session")
def dkim_key() -> DkimKey:
    return DkimKey()


@pytest.fixture(scope="session")
def arc_key() -> DkimKey:
    return DkimKey()


def zone_records(dkim_key: DkimKey, arc_key: DkimKey) -> dict[tuple[str, str], list]:
    """The test zones: an RBL, an allow-list, a URI list, SPF/DMARC/DKIM for the senders."""
    return {
        # zen.rbl.test: Spamhaus-style codes; 192.0.2.99 is on SBL and PBL; IPv6 2001:db8::99 on XBL
        ("99.2.0.192.zen.rbl.test", "A"): ["127.0.0.2", "127.0.0.10"],
        ("9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.rbl.test", "A"): ["127.0.0.4"],
        # refused.rbl.test answers "query refused" for everything it lists
        ("99.2.0.192.refused.rbl.test", "A"): ["127.255.255.254"],
        # wl.rbl.test: a DNSWL-style allow-list (trust "high") for the clean client
        ("20.100.51.198.wl.rbl.test", "A"): ["127.0.10.3"],
        # dbl.rbl.test: a URI list
        ("evil-pills.test.dbl.rbl.test", "A"): ["127.0.1.2"],
        ("phish-bank.test.dbl.rbl.test", "A"): ["127.0.1.4"],
        # sender domains
        ("example.test", "TXT"): ["v=spf1 ip4:198.51.100.0/24 include:_spf.mailer.test -all", "unrelated=txt"],
        ("_spf.mailer.test", "TXT"): ["v=spf1 a:out.mailer.test ~all"],
        ("out.mailer.test", "A"): ["198.51.100.50"],
        ("mx.example.test", "TXT"): ["v=spf1 a -all"],
        ("mx.example.test", "A"): ["198.51.100.20"],
        ("_dmarc.example.test", "TXT"): ["v=DMARC1; p=reject; rua=mailto:dmarc@example.test"],
        ("sel1._domainkey.example.test", "TXT"): [dkim_key.txt],
        ("lists.fwd.test", "TXT"): ["v=spf1 ip4:203.0.113.7 -all"],
        ("arc1._domainkey.fwd.test", "TXT"): [arc_key.txt],
        ("sub.quarantine.test", "TXT"): ["v=spf1 -all"],
        ("_dmarc.quarantine.test", "TXT"): ["v=DMARC1; p=reject; sp=quarantine"],
    }


@pytest.fixture(scope="session")
def fake_dns(dkim_key: DkimKey, arc_key: DkimKey) -> Iterator[FakeDNS]:
    """One authoritative server for the whole session (UDP+TCP on a loopback port)."""
    with FakeDNS(zone_records(dkim_key, arc_key)) as server:
        yield server


@pytest.fixture(scope="session")
def servfail_dns() -> Iterator[FakeDNS]:
    with FakeDNS({}, servfail=["*"]) as server:
        yield server


@pytest.fixture(scope="session")
def silent_dns() -> Iterator[SilentDNS]:
    with SilentDNS() as server:
        yield server


@pytest.fixture(scope="session")
def slow_dns(dkim_key: DkimKey, arc_key: DkimKey) -> Iterator[FakeDNS]:
    """The same zones, every answer 50 ms late."""
    with FakeDNS(zone_records(dkim_key, arc_key), delay=0.05) as server:
        yield server


def resolver_for(server: FakeDNS | SilentDNS, *, timeout: float = 1.0, lifetime: float = 1.0) -> Resolver:
    """A fresh resolver (own cache and counters) aimed at ``server`` only."""
    return Resolver(["127.0.0.1"], port=server.port, timeout=timeout, lifetime=lifetime)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A private redis-server on loopback for the module; a missing redis-server is an error (no skip)."""
    with RedisServer() as running:
        yield running


@pytest.fixture()
def run() -> Iterator[Callable[[Any], Any]]:
    """One event loop per test: a RedisStore stays on the loop it first ran in, as the scanner's does."""
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture()
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"  # each test its own keys on the shared server


@pytest.fixture()
def store(server: RedisServer, run: Callable[[Any], Any], prefix: str) -> Iterator[RedisStore]:
    """A RedisStore on the module's redis-server, closed on the test's own loop."""
    s = RedisStore(server.url, prefix=prefix)
    yield s
    run(s.close())


@pytest.fixture()
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client to look at what the store wrote."""
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()
