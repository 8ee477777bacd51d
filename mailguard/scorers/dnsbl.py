"""DNS blocklists: the connecting client's IP on IP lists and allow-lists, URL domains on URI lists.

Every list is configuration (zone, kind, return-code map, weights); the defaults are the
public lists rspamd and SpamAssassin also ship. A return code becomes its own symbol, so
Spamhaus SBL, XBL and PBL are separate evidence. All lookups of a message run at once.

Only answers inside 127.0.0.0/8 are listings. 127.255.255.x (Spamhaus: query refused, e.g.
through a public resolver, or rate limited), a list's own ``error_codes`` and anything
outside 127/8 (a resolver rewriting NXDOMAIN) are reported as errors, never as hits; so are
timeouts and SERVFAIL (symbol weight 0: failures are evidence of nothing).

Default weights are hand-set on the log-odds scale of the combiner (junk at 3.4), after
rspamd's, because the 2002 SpamAssassin corpus carries no DNS data to fit them on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..dns import Answer, Resolver, offline_resolver, reverse_ip
from ..errors import ConfigError
from ..message.context import MessageContext
from ..message.relay import DEFAULT_TRUSTED_NETWORKS, Network, client_relay, parse_networks
from ..result import Hit
from ..scorer import ScorerInfo, Services

__all__ = ["DEFAULT_LISTS", "DnsList", "DnsblScorer"]

TEMPERROR = "DNSBL_TEMPERROR"
ERROR = "DNSBL_ERROR"
_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_ZONE_RE = re.compile(r"^(?=.{1,200}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{2,63}$")
_REFUSED = ipaddress.ip_network("127.255.255.0/24")
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_KINDS = ("ip", "allow", "uri")

DEFAULT_LISTS: tuple[Mapping[str, Any], ...] = (
    {
        "zone": "zen.spamhaus.org",
        "kind": "ip",
        "ipv6": True,
        "symbol": "RBL_SPAMHAUS",
        "codes": {
            "127.0.0.2": "RBL_SPAMHAUS_SBL",
            "127.0.0.3": "RBL_SPAMHAUS_CSS",
            "127.0.0.4": "RBL_SPAMHAUS_XBL",
            "127.0.0.5": "RBL_SPAMHAUS_XBL",
            "127.0.0.6": "RBL_SPAMHAUS_XBL",
            "127.0.0.7": "RBL_SPAMHAUS_XBL",
            "127.0.0.9": "RBL_SPAMHAUS_DROP",
            "127.0.0.10": "RBL_SPAMHAUS_PBL",
            "127.0.0.11": "RBL_SPAMHAUS_PBL",
        },
    },
    {"zone": "bl.spamcop.net", "kind": "ip", "symbol": "RBL_SPAMCOP", "codes": {"127.0.0.2": "RBL_SPAMCOP"}},
    {
        "zone": "list.dnswl.org",
        "kind": "allow",
        "ipv6": True,
        "symbol": "RCVD_IN_DNSWL",
        "codes": {
            "127.0.*.0": "RCVD_IN_DNSWL_NONE",
            "127.0.*.1": "RCVD_IN_DNSWL_LOW",
            "127.0.*.2": "RCVD_IN_DNSWL_MED",
            "127.0.*.3": "RCVD_IN_DNSWL_HI",
        },
        "error_codes": ["127.0.0.255"],
    },
    {
        "zone": "dbl.spamhaus.org",
        "kind": "uri",
        "symbol": "DBL_LISTED",
        "codes": {
            "127.0.1.2": "DBL_SPAM",
            "127.0.1.4": "DBL_PHISH",
            "127.0.1.5": "DBL_MALWARE",
            "127.0.1.6": "DBL_BOTNET",
            "127.0.1.102": "DBL_ABUSED",
            "127.0.1.103": "DBL_ABUSED",
            "127.0.1.104": "DBL_ABUSED_PHISH",
            "127.0.1.105": "DBL_ABUSED_MALWARE",
            "127.0.1.106": "DBL_ABUSED",
        },
        "error_codes": ["127.0.1.255"],
    },
    {
        "zone": "multi.surbl.org",
        "kind": "uri",
        "symbol": "SURBL_LISTED",
        "bits": {"8": "SURBL_PH", "16": "SURBL_MW", "64": "SURBL_ABUSE", "128": "SURBL_CR"},
        "error_codes": ["127.0.0.1"],
    },
)

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "RBL_SPAMHAUS": 1.0,
    "RBL_SPAMHAUS_SBL": 2.0,
    "RBL_SPAMHAUS_CSS": 1.5,
    "RBL_SPAMHAUS_XBL": 2.5,
    "RBL_SPAMHAUS_DROP": 3.0,
    "RBL_SPAMHAUS_PBL": 1.0,
    "RBL_SPAMCOP": 1.5,
    "RCVD_IN_DNSWL": 0.0,
    "RCVD_IN_DNSWL_NONE": 0.0,
    "RCVD_IN_DNSWL_LOW": -0.3,
    "RCVD_IN_DNSWL_MED": -1.0,
    "RCVD_IN_DNSWL_HI": -1.5,
    "DBL_LISTED": 1.0,
    "DBL_SPAM": 2.5,
    "DBL_PHISH": 3.0,
    "DBL_MALWARE": 3.0,
    "DBL_BOTNET": 3.0,
    "DBL_ABUSED": 1.0,
    "DBL_ABUSED_PHISH": 1.5,
    "DBL_ABUSED_MALWARE": 1.5,
    "SURBL_LISTED": 1.0,
    "SURBL_PH": 2.5,
    "SURBL_MW": 3.0,
    "SURBL_ABUSE": 2.0,
    "SURBL_CR": 1.5,
    TEMPERROR: 0.0,
    ERROR: 0.0,
}

_LIST_KEYS = {"zone", "kind", "ipv4", "ipv6", "symbol", "codes", "bits", "error_codes", "weights"}
_SECTION_KEYS = {"lists", "extra_lists", "trusted_networks", "max_uri_domains", "skip_domains", "timeout"}


@dataclasses.dataclass(frozen=True)
class DnsList:
    """One configured list and how to read its answers."""

    zone: str
    kind: str  # "ip" (blocklist), "allow" (DNSWL: negative evidence), "uri" (domains in the body)
    symbol: str  # for a listing no code/bit names
    codes: tuple[tuple[tuple[str, ...], str], ...] = ()  # (octet pattern, symbol); "*" matches any octet
    bits: tuple[tuple[int, str], ...] = ()  # (bit of the last octet, symbol), SURBL style
    error_codes: frozenset[str] = frozenset()
    ipv4: bool = True
    ipv6: bool = False

    @property
    def symbols(self) -> set[str]:
        return {self.symbol} | {s for _, s in self.codes} | {s for _, s in self.bits}

    def classify(self, address: str) -> tuple[list[str], str | None]:
        """Symbols one answer record means, or an error text when it is not a listing."""
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            return [], f"answered {address!r}, not an address"
        if addr.version != 4 or addr not in _LOOPBACK:
            return [], f"answered {address} outside 127.0.0.0/8 (a resolver rewriting NXDOMAIN?)"
        if addr in _REFUSED or address in self.error_codes:
            return [], f"refused the query ({address}: public resolver, rate limit or blocked)"
        octets = address.split(".")
        found = [sym for pattern, sym in self.codes if all(p in ("*", o) for p, o in zip(pattern, octets))]
        last = int(octets[3])
        found += [sym for bit, sym in self.bits if last & bit]
        return list(dict.fromkeys(found)) or [self.symbol], None


def _symbol_for_zone(zone: str) -> str:
    return "RBL_" + re.sub(r"[^A-Z0-9]+", "_", zone.upper()).strip("_")[:60]


def _parse_list(raw: Any, where: str) -> tuple[DnsList, dict[str, float]]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - _LIST_KEYS
    if unknown:
        raise ConfigError(f"{where} unknown key(s): {', '.join(sorted(unknown))}")
    zone = raw.get("zone")
    if not isinstance(zone, str) or not _ZONE_RE.match(zone.lower().rstrip(".")):
        raise ConfigError(f"{where}.zone must be a DNS zone like \"zen.spamhaus.org\"")
    zone = zone.lower().rstrip(".")
    kind = raw.get("kind", "ip")
    if kind not in _KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(_KINDS)}")
    symbol = raw.get("symbol", _symbol_for_zone(zone))

    def check_symbol(value: Any, what: str) -> str:
        if not isinstance(value, str) or not _SYMBOL_RE.match(value):
            raise ConfigError(f"{where}.{what} must be an upper-case symbol name like RBL_EXAMPLE")
        return value

    check_symbol(symbol, "symbol")
    codes = []
    raw_codes = raw.get("codes", {})
    if not isinstance(raw_codes, Mapping):
        raise ConfigError(f"{where}.codes must be a table of \"127.0.0.2\" = \"SYMBOL\"")
    for code, sym in raw_codes.items():
        octets = tuple(str(code).split("."))
        if len(octets) != 4 or not all(o == "*" or (o.isdigit() and int(o) < 256) for o in octets):
            raise ConfigError(f"{where}.codes: {code!r} is not an address pattern like 127.0.0.2 or 127.0.*.3")
        codes.append((octets, check_symbol(sym, f"codes.{code}")))
    bits = []
    raw_bits = raw.get("bits", {})
    if not isinstance(raw_bits, Mapping):
        raise ConfigError(f"{where}.bits must be a table of \"8\" = \"SYMBOL\"")
    for bit, sym in raw_bits.items():
        if not str(bit).isdigit() or not 0 < int(bit) < 256:
            raise ConfigError(f"{where}.bits: {bit!r} must be a bit value 1..255 of the last octet")
        bits.append((int(bit), check_symbol(sym, f"bits.{bit}")))
    error_codes = raw.get("error_codes", [])
    if not isinstance(error_codes, (list, tuple)) or not all(isinstance(c, str) for c in error_codes):
        raise ConfigError(f"{where}.error_codes must be a list of addresses")
    flags = {}
    for flag, default in (("ipv4", True), ("ipv6", False)):
        value = raw.get(flag, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{flag} must be true or false")
        flags[flag] = value
    dnslist = DnsList(zone, kind, symbol, tuple(codes), tuple(bits), frozenset(error_codes), **flags)
    weights = raw.get("weights", {})
    if not isinstance(weights, Mapping) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in weights.values()
    ):
        raise ConfigError(f"{where}.weights must be a table of SYMBOL = number")
    stray = set(weights) - dnslist.symbols
    if stray:
        raise ConfigError(f"{where}.weights names symbols this list never emits: {', '.join(sorted(stray))}")
    default = -1.0 if kind == "allow" else 1.0
    resolved = {s: float(weights.get(s, DEFAULT_WEIGHTS.get(s, default))) for s in dnslist.symbols}
    return dnslist, resolved


class DnsblScorer:
    """Client IP on IP lists / allow-lists and URL domains on URI lists, all lookups at once."""

    name = "dnsbl"

    def __init__(
        self,
        resolver: Resolver,
        lists: Sequence[DnsList] | None = None,
        *,
        weights: Mapping[str, float] | None = None,
        trusted: Sequence[Network] | None = None,
        max_uri_domains: int = 20,
        skip_domains: Sequence[str] = (),
        timeout: float = 3.0,
    ) -> None:
        if lists is None:
            parsed = [_parse_list(raw, "dnsbl default") for raw in DEFAULT_LISTS]
            lists = [dl for dl, _ in parsed]
            weights = {**{s: w for _, ws in parsed for s, w in ws.items()}, **(weights or {})}
        self.resolver = resolver
        self.lists = list(lists)
        self.trusted = tuple(trusted) if trusted is not None else parse_networks(list(DEFAULT_TRUSTED_NETWORKS), "dnsbl")
        self.max_uri_domains = max_uri_domains
        self.skip_domains = frozenset(d.lower() for d in skip_domains)
        symbols = {s: f"listed on {dl.zone} ({dl.kind} list)" for dl in self.lists for s in sorted(dl.symbols)}
        symbols[TEMPERROR] = "a list lookup timed out or got SERVFAIL (no points: evidence of nothing)"
        symbols[ERROR] = "a list refused the query or answered nonsense (reported, never a hit)"
        weights = dict(weights or {})
        default_weights = {
            s: float(weights.get(s, DEFAULT_WEIGHTS.get(s, -1.0 if self._kind_of(s) == "allow" else 1.0)))
            for s in symbols
        }
        self.info = ScorerInfo(group="dnsbl", symbols=symbols, default_weights=default_weights, network=True, timeout=timeout)
        self._budget = max(timeout - 0.1, timeout * 0.9)  # finish with temperrors before the scanner gives up

    def _kind_of(self, symbol: str) -> str:
        return next((dl.kind for dl in self.lists if symbol in dl.symbols), "ip")

    @classmethod
    def from_config(cls, section: Mapping[str, Any], services: Services) -> DnsblScorer:
        unknown = set(section) - _SECTION_KEYS
        if unknown:
            raise ConfigError(f"[scorers.dnsbl] unknown key(s): {', '.join(sorted(unknown))}")
        raw_lists = section.get("lists", DEFAULT_LISTS)
        extra = section.get("extra_lists", [])
        if not isinstance(raw_lists, (list, tuple)) or not isinstance(extra, (list, tuple)):
            raise ConfigError("[scorers.dnsbl] lists and extra_lists must be arrays of tables ([[scorers.dnsbl.lists]])")
        lists, weights = [], {}
        for i, raw in enumerate([*raw_lists, *extra]):
            dnslist, list_weights = _parse_list(raw, f"[scorers.dnsbl] list {i + 1}")
            if any(dl.zone == dnslist.zone for dl in lists):
                raise ConfigError(f"[scorers.dnsbl] zone {dnslist.zone} is listed twice")
            lists.append(dnslist)
            weights.update(list_weights)
        trusted = parse_networks(section.get("trusted_networks", list(DEFAULT_TRUSTED_NETWORKS)), "[scorers.dnsbl] trusted_networks")
        cap = section.get("max_uri_domains", 20)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ConfigError("[scorers.dnsbl] max_uri_domains must be a whole number >= 0")
        skip = section.get("skip_domains", [])
        if not isinstance(skip, (list, tuple)) or not all(isinstance(d, str) for d in skip):
            raise ConfigError("[scorers.dnsbl] skip_domains must be a list of domains")
        timeout = section.get("timeout", 3.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError("[scorers.dnsbl] timeout must be a positive number of seconds")
        resolver = services.resolver if services.resolver is not None else offline_resolver()
        return cls(
            resolver,
            lists,
            weights=weights,
            trusted=trusted,
            max_uri_domains=cap,
            skip_domains=skip,
            timeout=float(timeout),
        )

    # -- scanning -------------------------------------------------------------------------

    def _queries(self, ctx: MessageContext) -> list[tuple[DnsList, str, str]]:
        """(list, what is looked up, query name) for every lookup this message needs."""
        queries = []
        relay = client_relay(ctx, self.trusted)
        if relay is not None:
            version = ipaddress.ip_address(relay.ip).version
            label = reverse_ip(relay.ip)
            for dl in self.lists:
                if dl.kind in ("ip", "allow") and (dl.ipv4 if version == 4 else dl.ipv6):
                    queries.append((dl, relay.ip, f"{label}.{dl.zone}"))
        uri_lists = [dl for dl in self.lists if dl.kind == "uri"]
        if uri_lists:
            domains = [
                d for d in ctx.url_domains
                if "." in d and not _is_ip(d) and d not in self.skip_domains
            ]
            if len(domains) > self.max_uri_domains:
                ctx.problems.append(
                    f"dnsbl: {len(domains) - self.max_uri_domains} URL domains past max_uri_domains={self.max_uri_domains} not looked up"
                )
                domains = domains[: self.max_uri_domains]
            queries += [(dl, d, f"{d}.{dl.zone}") for dl in uri_lists for d in domains]
        return queries

    async def score(self, ctx: MessageContext) -> list[Hit]:
        queries = self._queries(ctx)
        if not queries:
            return []
        deadline = time.monotonic() + self._budget
        answers = await asyncio.gather(
            *(self.resolver.lookup(qname, "A", timeout=deadline - time.monotonic()) for _, _, qname in queries)
        )
        listed: dict[str, list[str]] = {}
        errors: dict[str, list[str]] = {ERROR: [], TEMPERROR: []}
        for (dl, subject, _), answer in zip(queries, answers):
            self._read(dl, subject, answer, listed, errors)
        hits = [Hit(symbol, 1.0, "; ".join(dict.fromkeys(reasons))) for symbol, reasons in listed.items()]
        hits += [Hit(symbol, 1.0, "; ".join(dict.fromkeys(texts))[:500]) for symbol, texts in errors.items() if texts]
        return hits

    @staticmethod
    def _read(dl: DnsList, subject: str, answer: Answer, listed: dict[str, list[str]], errors: dict[str, list[str]]) -> None:
        if answer.failed:
            errors[TEMPERROR].append(f"{dl.zone} {answer.status} for {subject}")
            return
        if not answer.ok:
            return  # NXDOMAIN / no A record: not listed
        for record in answer.records:
            symbols, problem = dl.classify(str(record))
            if problem:
                errors[ERROR].append(f"{dl.zone} {problem}")
            for symbol in symbols:
                listed.setdefault(symbol, []).append(f"{subject} in {dl.zone} ({record})")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
