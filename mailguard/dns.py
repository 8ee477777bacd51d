"""`Resolver`: the one DNS client every network scorer shares (dnspython's asyncio resolver).

Why our own layer over dnspython: one place decides which server is asked (tests aim it at
a loopback server, nothing falls back to the system resolver behind our back), lookups of
one message overlap, identical lookups in flight are sent once, answers are cached for
their TTL in a bounded LRU, and counters say how DNS behaved. A lookup never raises: it
returns an `Answer` whose ``status`` says what happened, so a timeout or SERVFAIL becomes
a ``temperror`` result upstream instead of an exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver

from .config import DnsConfig

__all__ = ["Answer", "Resolver", "ResolverStats", "StaticResolver", "reverse_ip"]

log = logging.getLogger("mailguard.dns")

OK = "ok"
NXDOMAIN = "nxdomain"  # the name does not exist ("not listed" for a blocklist)
NOANSWER = "noanswer"  # the name exists without records of that type
INVALID = "invalid"  # not a valid DNS name: nothing was sent
TIMEOUT = "timeout"
SERVFAIL = "servfail"
ERROR = "error"  # network error, refused, no nameserver configured ...
FAILED = frozenset({TIMEOUT, SERVFAIL, ERROR})  # temporary: evidence of nothing

_NEGATIVE_TTL = 300.0  # negative answers without an SOA are kept this long
_MAX_TTL = 86400.0


@dataclasses.dataclass(frozen=True)
class Answer:
    """What one lookup gave. ``records`` are plain values: A/AAAA address strings, TXT as bytes
    (the record's strings joined), MX as (preference, host), PTR/CNAME/NS host names."""

    name: str
    rdtype: str
    status: str
    records: tuple[Any, ...] = ()
    ttl: float = 0.0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def failed(self) -> bool:
        """True for temporary failures (timeout, SERVFAIL, network), which prove nothing."""
        return self.status in FAILED

    def texts(self) -> list[str]:
        """TXT records decoded leniently (DNS TXT is bytes; SPF/DMARC are ASCII)."""
        return [r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r) for r in self.records]


@dataclasses.dataclass
class ResolverStats:
    """Counters since the resolver was made (or since ``reset``)."""

    lookups: int = 0  # every call of `lookup`
    cache_hits: int = 0  # answered from the cache
    coalesced: int = 0  # joined an identical lookup already in flight
    queries: int = 0  # lookups that went to the network
    timeouts: int = 0
    servfails: int = 0
    nxdomains: int = 0
    errors: int = 0

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, float]:
        data: dict[str, float] = dict(dataclasses.asdict(self))
        data["hit_rate"] = round(self.hit_rate, 4)
        return data


def reverse_ip(ip: str) -> str:
    """The blocklist query label of an address: ``192.0.2.1`` -> ``1.2.0.192``; IPv6 by nibbles."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    pointer = addr.reverse_pointer  # "1.2.0.192.in-addr.arpa" / "b.a.9...ip6.arpa"
    return pointer.rsplit(".", 2)[0]


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


class Resolver:
    """Async DNS with a TTL-respecting bounded cache and counters.

    ``nameservers=None`` uses the system configuration (``/etc/resolv.conf``); a list aims
    every lookup at those servers on ``port``. ``timeout`` bounds one try at one server,
    ``lifetime`` the whole lookup including retries.
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = 53,
        timeout: float = 2.0,
        lifetime: float = 3.0,
        cache_size: int = 10000,
    ) -> None:
        self.nameservers = tuple(nameservers) if nameservers is not None else None
        self.port = port
        self.timeout = timeout
        self.lifetime = lifetime
        self.cache_size = cache_size
        self.stats = ResolverStats()
        self._cache: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Task[Answer]] = {}
        self._problem = ""
        self._resolver = self._make_resolver()

    @classmethod
    def from_config(cls, config: DnsConfig) -> Resolver:
        return cls(
            config.nameservers or None,
            port=config.port,
            timeout=config.timeout,
            lifetime=config.lifetime,
            cache_size=config.cache_size,
        )

    def _make_resolver(self) -> dns.asyncresolver.Resolver | None:
        try:
            resolver = dns.asyncresolver.Resolver(configure=self.nameservers is None)
        except dns.exception.DNSException as exc:  # no /etc/resolv.conf: lookups fail, startup does not
            self._problem = f"no nameserver configured ({exc})"
            log.warning("DNS: %s", self._problem)
            return None
        if self.nameservers is not None:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(ns, port=self.port) for ns in self.nameservers]
        resolver.timeout = self.timeout
        resolver.lifetime = self.lifetime
        resolver.cache = None  # ours is bounded, counted and caches negative answers too
        return resolver

    # -- public --------------------------------------------------------------------------

    async def lookup(self, name: str, rdtype: str = "A", *, timeout: float | None = None) -> Answer:
        """Resolve ``name``/``rdtype``; never raises. ``timeout`` (seconds) caps the wait for
        this caller only (a scan's remaining budget): the shared lookup goes on for others."""
        key = (_norm(name), rdtype.upper())
        self.stats.lookups += 1
        cached = self._cache_get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        loop = asyncio.get_running_loop()
        task = self._inflight.get(key)
        if task is not None and task.get_loop() is loop and not task.done():
            self.stats.coalesced += 1
        else:
            task = loop.create_task(self._fetch(key))
            self._inflight[key] = task
            task.add_done_callback(lambda t, k=key: self._forget(k, t))
        if timeout is None:
            return await asyncio.shield(task)
        if timeout <= 0:
            return Answer(key[0], key[1], TIMEOUT, detail="no time left in the scan budget")
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            return Answer(key[0], key[1], TIMEOUT, detail=f"no answer within the {timeout:.2f}s left")

    def clear_cache(self) -> None:
        self._cache.clear()

    def reset_stats(self) -> None:
        self.stats = ResolverStats()

    # -- internals -----------------------------------------------------------------------

    def _forget(self, key: tuple[str, str], task: asyncio.Task[Answer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    def _cache_get(self, key: tuple[str, str]) -> Answer | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if expires <= time.monotonic():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return answer

    def _cache_put(self, key: tuple[str, str], answer: Answer) -> None:
        if self.cache_size <= 0 or answer.failed or answer.ttl <= 0:
            return
        self._cache[key] = (time.monotonic() + min(answer.ttl, _MAX_TTL), answer)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _fetch(self, key: tuple[str, str]) -> Answer:
        name, rdtype = key
        try:
            dns.name.from_text(name)
            dns.rdatatype.from_text(rdtype)
        except (dns.exception.DNSException, ValueError) as exc:
            return Answer(name, rdtype, INVALID, detail=str(exc) or type(exc).__name__)
        self.stats.queries += 1
        answer = await self._query(name, rdtype)
        if answer.status == TIMEOUT:
            self.stats.timeouts += 1
        elif answer.status == SERVFAIL:
            self.stats.servfails += 1
        elif answer.status == ERROR:
            self.stats.errors += 1
        elif answer.status == NXDOMAIN:
            self.stats.nxdomains += 1
        self._cache_put(key, answer)
        return answer

    async def _query(self, name: str, rdtype: str) -> Answer:
        """One network lookup, every outcome turned into an `Answer`."""
        if self._resolver is None:
            return Answer(name, rdtype, ERROR, detail=self._problem)
        try:
            result = await self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            return Answer(name, rdtype, NXDOMAIN, ttl=_negative_ttl(_nx_response(exc)))
        except dns.exception.Timeout:
            return Answer(name, rdtype, TIMEOUT, detail=f"no answer within {self.lifetime}s")
        except dns.resolver.NoNameservers as exc:
            text = str(exc)
            status = SERVFAIL if "SERVFAIL" in text else ERROR
            return Answer(name, rdtype, status, detail=text[:200])
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return Answer(name, rdtype, ERROR, detail=f"{type(exc).__name__}: {exc}"[:200])
        if result.rrset is None:
            return Answer(name, rdtype, NOANSWER, ttl=_negative_ttl(result.response))
        records = tuple(_value(rd) for rd in result.rrset)
        return Answer(name, rdtype, OK, records, ttl=float(result.rrset.ttl))


class StaticResolver(Resolver):
    """A `Resolver` answering from a dict, for unit tests and for running with no DNS at all.

    ``records`` maps ``(name, type)`` to a list of values (as `Answer.records` holds them;
    TXT may be given as str) or to a status string (``"timeout"``, ``"servfail"``,
    ``"nxdomain"``...). Names not in it get ``default`` (NXDOMAIN unless told otherwise).
    """

    def __init__(
        self,
        records: Mapping[tuple[str, str], Any] | None = None,
        *,
        default: str = NXDOMAIN,
        detail: str = "",
        ttl: float = 60.0,
        delay: float = 0.0,
        cache_size: int = 10000,
    ) -> None:
        self.records = {(_norm(n), t.upper()): v for (n, t), v in (records or {}).items()}
        self.default = default
        self.detail = detail
        self.answer_ttl = ttl
        self.delay = delay
        self.asked: list[tuple[str, str]] = []  # every network-level query, in order
        super().__init__((), cache_size=cache_size)

    def _make_resolver(self) -> None:
        return None

    async def _query(self, name: str, rdtype: str) -> Answer:
        self.asked.append((name, rdtype))
        if self.delay:
            await asyncio.sleep(self.delay)
        value = self.records.get((name, rdtype), self.default)
        if isinstance(value, str):
            ttl = self.answer_ttl if value in (NXDOMAIN, NOANSWER) else 0.0
            return Answer(name, rdtype, value, ttl=ttl, detail=self.detail)
        records = tuple(v.encode() if rdtype in ("TXT", "SPF") and isinstance(v, str) else v for v in value)
        return Answer(name, rdtype, OK if records else NOANSWER, records, ttl=self.answer_ttl)


def offline_resolver() -> StaticResolver:
    """What a network scorer uses when it was given no resolver: every lookup is a
    temporary error (so nothing counts as evidence) and nothing is sent anywhere."""
    return StaticResolver(default=ERROR, detail="no DNS resolver was given to the scorer")


def _value(rdata: Any) -> Any:
    rdtype = rdata.rdtype
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return rdata.address
    if rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF):
        return b"".join(rdata.strings)
    if rdtype == dns.rdatatype.MX:
        return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
    if rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.NS):
        return rdata.target.to_text(omit_final_dot=True)
    return rdata.to_text()


def _nx_response(exc: dns.resolver.NXDOMAIN) -> dns.message.Message | None:
    try:
        responses = exc.kwargs.get("responses") or {}
        return next(iter(responses.values()), None)
    except (AttributeError, TypeError):
        return None


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308: a negative answer lives min(SOA TTL, SOA minimum); without an SOA, a default."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return float(min(rrset.ttl, rrset[0].minimum))
    return _NEGATIVE_TTL
