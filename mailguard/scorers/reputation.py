"""Sender reputation: decayed ham/spam counts per sending identity, learned from labels.

Identities of one message: the client IP and its network (/24, IPv6 /64), the envelope
sender address, the From and envelope-sender organizational domains, and the DKIM-verified
signing domains. Each is scored by a smoothed ratio ``(spam - ham) / (spam + ham + prior)``
in [-1, 1]; an identity with no evidence gives no hit (a new sender is unknown, not bad).

Forgery: the address and domain identities can be forged, so each is kept under two keys,
authenticated (a passing DKIM signature aligned with its organizational domain) and not.
A spammer forging a good domain lands on the unauthenticated key: he neither gains the
domain's good name nor spoils it. Unauthenticated identities are never *credited*: ham
evidence can lower their value to 0, never below. The IP is what connected to our border,
so it is credited. DKIM results come from the one verification per message that the
``auth`` scorer shares (`mailguard.auth.dkim.shared_dkim_results`); with no resolver
(``--no-network``) nothing is authenticated.

Decay: counts go into time buckets (``bucket_days``), live for ``horizon_days``, and are
weighted by ``0.5 ** (age / half_life_days)`` when read; every key an identity uses carries
its hash tag (``rep:{ip4:192.0.2.1}:s:2890``) so a Redis Cluster keeps it on one slot.
``score`` reads every bucket of every identity in ONE ``get_counters`` call.

Time: a live scan sees every piece of evidence learned before it started, whatever dates the
message carries. Live means an SMTP envelope naming the connecting client (the milter, or a
library caller passing the MTA's envelope): such a scan reads the buckets at the clock, and
live learning (``report``, ``autolearn``) writes them at the clock. Replaying old mail
offline keeps the message's own time: learning a corpus (``source="train"``) counts each
message at its receive time (newest Received date, else Date), and a scan with no live
envelope reads the buckets at that time capped at the clock, so replaying 2002 mail counts
and reads 2002 buckets consistently and an offline evaluation only sees evidence from before
each message (a replay that also learns as it goes injects a clock that follows the stream).
``message_time = false`` makes every scan read at the clock, for a library caller scanning
stored mail whose dates a sender could forge to step around recent evidence.

Per-user learning (``user`` given) moves the global reputation, but one user's share of an
identity's evidence is capped (``max_user_share``, beyond a small ``user_allowance``), so a
single user cannot make or break a sender. Learning the same message again the same way
(same user, or globally) is ignored; learning it the opposite way undoes the earlier counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import ipaddress
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..auth.dkim import DkimResult, shared_dkim_results
from ..auth.dmarc import from_domains, org_domain
from ..dns import Answer, Resolver
from ..errors import ConfigError, ScorerError
from ..message.context import MessageContext, parse_date
from ..policy import canonical_user
from ..message.relay import DEFAULT_TRUSTED_NETWORKS, Network, client_relay, parse_networks
from ..result import Hit
from ..scorer import Label, ScorerInfo, Services, Source, symbol_weights
from ..stores.base import Store

__all__ = ["Identity", "ReputationScorer", "message_time"]

_DAY = 86400.0
_EPOCH_FLOOR = 631152000.0  # 1990-01-01: older "dates" are garbage, not mail
_SKEW = 3600.0  # a message time up to an hour ahead of the clock is clock skew, not the future

SYMBOLS: dict[str, tuple[str, float]] = {
    "REP_IP": ("reputation of the client IP", 1.0),
    "REP_IP_NET": ("reputation of the client's network (/24, IPv6 /64)", 0.5),
    "REP_SENDER": ("reputation of the envelope sender address, unauthenticated (never credited)", 0.5),
    "REP_SENDER_AUTH": ("reputation of the envelope sender address, its domain DKIM-authenticated", 1.0),
    "REP_FROM_DOMAIN": ("reputation of the From domain, unauthenticated (never credited)", 0.5),
    "REP_FROM_DOMAIN_AUTH": ("reputation of the From domain, DKIM-aligned", 1.0),
    "REP_ENVFROM_DOMAIN": ("reputation of the envelope sender domain, unauthenticated (never credited)", 0.5),
    "REP_ENVFROM_DOMAIN_AUTH": ("reputation of the envelope sender domain, DKIM-aligned", 1.0),
    "REP_DKIM_DOMAIN": ("reputation of a DKIM-verified signing domain (d=)", 1.0),
}

_SOURCES = ("train", "autolearn", "report")
_KEYS = {
    "half_life_days",
    "horizon_days",
    "bucket_days",
    "prior",
    "source_weights",
    "max_user_share",
    "user_allowance",
    "max_dkim_domains",
    "message_time",
    "trusted_networks",
    "timeout",
    "weights",
}
_MAX_BUCKETS = 104  # bounds the keys one score reads: identities x 2 labels x buckets
_MAX_RECORD_KEYS = 64
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{2,63}$")
_BATV = re.compile(r"^(?:prvs|msprvs1|btv1)=[^=@]{1,64}=", re.I)  # per-message bounce tag, not the sender

DkimSource = Callable[[MessageContext], Awaitable[Sequence[DkimResult]]]


@dataclasses.dataclass(frozen=True)
class Identity:
    """One thing a reputation is kept for. ``tag`` is the store hash tag (no braces inside)."""

    symbol: str
    tag: str
    shown: str  # for the hit's reason
    credited: bool  # may ham evidence give it a negative (good) value


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        stamp = value.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return stamp if stamp >= _EPOCH_FLOOR else None


def message_time(ctx: MessageContext) -> float | None:
    """When the message was received: the newest dated Received header, else its Date header."""
    for hop in ctx.received:
        stamp = _timestamp(hop.date)
        if stamp is not None:
            return stamp
    return _timestamp(parse_date(ctx.header("date")))


def _domain(text: str) -> str | None:
    """The organizational domain of ``text`` when it is a plausible DNS name, else None."""
    text = text.strip().strip("<>[]").lower().rstrip(".")
    if not text or len(text) > 253:
        return None
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if not _DOMAIN.match(text):
        return None
    try:
        ipaddress.ip_address(text)
        return None  # an address literal is no domain
    except ValueError:
        pass
    org = org_domain(text)
    return org if _DOMAIN.match(org) else None


def _sender_address(ctx: MessageContext) -> str | None:
    """MAIL FROM (else the Return-Path header), lower case, without a BATV bounce tag.
    None for the null sender <> and for anything that is not one address."""
    mail_from = ctx.envelope.mail_from
    if mail_from is None:
        paths = ctx.header_all("return-path")
        mail_from = paths[0] if paths else None
    if not mail_from or len(mail_from) > 1000:
        return None
    try:
        address = email.utils.parseaddr(mail_from)[1].strip().lower()  # "<a@b> (comment)" -> a@b
    except (TypeError, ValueError, IndexError):
        return None
    address = _BATV.sub("", address)
    if not address or len(address) > 254 or "@" not in address or any(c.isspace() or c in "<>,;" for c in address):
        return None
    return address


def _hashed(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


class ReputationScorer:
    """Decayed ham/spam counts per sending identity; one store read per scan."""

    name = "reputation"

    def __init__(
        self,
        store: Store,
        *,
        half_life_days: float = 30.0,
        horizon_days: float = 84.0,
        bucket_days: float = 7.0,
        prior: float = 4.0,
        source_weights: Mapping[str, float] | None = None,
        max_user_share: float = 0.25,
        user_allowance: float = 1.0,
        max_dkim_domains: int = 3,
        message_time: bool = True,
        trusted: Sequence[Network] | None = None,
        dkim_source: DkimSource | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 3.0,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.store = store
        self.half_life = half_life_days
        self.bucket_seconds = bucket_days * _DAY
        self.n_buckets = max(1, math.ceil(horizon_days / bucket_days))
        self.ttl = (horizon_days + bucket_days) * _DAY
        self.prior = prior
        self.source_weights = {"train": 1.0, "autolearn": 0.5, "report": 1.0, **(source_weights or {})}
        self.max_user_share = max_user_share
        self.user_allowance = user_allowance
        self.max_dkim_domains = max_dkim_domains
        self.use_message_time = message_time
        self.trusted = tuple(trusted) if trusted is not None else parse_networks(list(DEFAULT_TRUSTED_NETWORKS), "reputation")
        self.dkim_source = dkim_source
        self.clock = clock
        self._dkim_wait = max(timeout - 0.5, timeout * 0.6)  # leave time for the store read
        # the age weight of a bucket b steps back from "now"'s bucket
        step = bucket_days / half_life_days
        self._decay = [0.5 ** (age * step) for age in range(self.n_buckets)]
        weights = dict(weights or {})
        self.info = ScorerInfo(
            group="reputation",
            symbols={s: d for s, (d, _) in SYMBOLS.items()},
            default_weights={s: float(weights.get(s, w)) for s, (_, w) in SYMBOLS.items()},
            learns=True,
            seeded=True,
            timeout=timeout,
        )

    @classmethod
    def from_config(cls, section: Mapping[str, Any], services: Services) -> ReputationScorer:
        where = "[scorers.reputation]"
        unknown = set(section) - _KEYS
        if unknown:
            raise ConfigError(f"{where} unknown key(s): {', '.join(sorted(unknown))}")

        def number(key: str, default: float, *, low: float = 0.0, high: float = math.inf, low_ok: bool = False) -> float:
            value = section.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{where} {key} must be a number")
            if not (value >= low if low_ok else value > low) or value > high:
                raise ConfigError(f"{where} {key} must be {'>=' if low_ok else '>'} {low:g}" + (f" and <= {high:g}" if high < math.inf else ""))
            return float(value)

        half_life = number("half_life_days", 30.0)
        bucket = number("bucket_days", 7.0, low=1 / 24)
        horizon = number("horizon_days", 84.0)
        if horizon < bucket or horizon / bucket > _MAX_BUCKETS:
            raise ConfigError(f"{where} horizon_days must be between bucket_days and {_MAX_BUCKETS} buckets")
        prior = number("prior", 4.0)
        share = number("max_user_share", 0.25, high=1.0)
        allowance = number("user_allowance", 1.0, low_ok=True)
        timeout = number("timeout", 3.0)
        raw_weights = section.get("source_weights", {})
        if not isinstance(raw_weights, Mapping) or set(raw_weights) - set(_SOURCES) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100 for v in raw_weights.values()
        ):
            raise ConfigError(f"{where} source_weights must be a table of {', '.join(_SOURCES)} = number from 0 to 100")
        max_dkim = section.get("max_dkim_domains", 3)
        if isinstance(max_dkim, bool) or not isinstance(max_dkim, int) or not 0 <= max_dkim <= 10:
            raise ConfigError(f"{where} max_dkim_domains must be a whole number from 0 to 10")
        use_message_time = section.get("message_time", True)
        if not isinstance(use_message_time, bool):
            raise ConfigError(f"{where} message_time must be true or false")
        trusted = parse_networks(section.get("trusted_networks", list(DEFAULT_TRUSTED_NETWORKS)), f"{where} trusted_networks")
        weights = symbol_weights(section, SYMBOLS, where)
        dkim_source = _resolver_dkim(services.resolver, max(timeout - 0.5, timeout * 0.6)) if services.resolver is not None else None
        return cls(
            services.store,
            half_life_days=half_life,
            horizon_days=horizon,
            bucket_days=bucket,
            prior=prior,
            source_weights={k: float(v) for k, v in raw_weights.items()},
            max_user_share=share,
            user_allowance=allowance,
            max_dkim_domains=max_dkim,
            message_time=use_message_time,
            trusted=trusted,
            dkim_source=dkim_source,
            clock=services.clock,
            timeout=timeout,
            weights=weights,
        )

    # -- identities -----------------------------------------------------------------------

    async def _dkim(self, ctx: MessageContext) -> Sequence[DkimResult]:
        """The message's DKIM results, or none when there is no source, it fails or is late:
        then every domain identity is simply unauthenticated (never credited)."""
        if self.dkim_source is None:
            return []
        try:
            return list(await asyncio.wait_for(asyncio.shield(self.dkim_source(ctx)), self._dkim_wait))
        except asyncio.CancelledError:
            raise
        except Exception:  # a DKIM failure (or timeout) authenticates nothing; it is no reason to fail
            return []

    async def identities(self, ctx: MessageContext) -> list[Identity]:
        """Every identity of ``ctx`` this scorer keeps a reputation for."""
        found: list[Identity] = []
        relay = client_relay(ctx, self.trusted)
        if relay is not None:
            ip = ipaddress.ip_address(relay.ip.split("%")[0])  # no IPv6 zone: it names our interface
            v = ip.version
            net = ipaddress.ip_network((ip, 24 if v == 4 else 64), strict=False)
            found.append(Identity("REP_IP", f"ip{v}:{ip}", str(ip), True))
            found.append(Identity("REP_IP_NET", f"net{v}:{net}", str(net), True))
        signers: list[str] = []
        for result in await self._dkim(ctx):
            domain = _domain(result.domain) if result.result == "pass" else None
            if domain and domain not in signers:
                signers.append(domain)
        sender = _sender_address(ctx)
        sender_domain = _domain(sender.rsplit("@", 1)[1]) if sender else None
        if sender and sender_domain:
            auth = sender_domain in signers
            found.append(_split("REP_SENDER", "snd", _hashed(sender), sender, auth))
            found.append(_split("REP_ENVFROM_DOMAIN", "ed", sender_domain, sender_domain, auth))
        try:
            from_list = from_domains(ctx.header_all("from"))
        except (TypeError, ValueError, IndexError):
            from_list = []
        from_domain = _domain(from_list[0]) if len(from_list) == 1 else None
        if from_domain:
            found.append(_split("REP_FROM_DOMAIN", "fd", from_domain, from_domain, from_domain in signers))
        for domain in signers[: self.max_dkim_domains]:
            found.append(Identity("REP_DKIM_DOMAIN", f"dk:{domain}", domain, True))
        return found

    # -- time -----------------------------------------------------------------------------

    def _bucket(self, when: float) -> int:
        return int(when // self.bucket_seconds)

    def _message_time(self, ctx: MessageContext) -> float | None:
        stamp = message_time(ctx)
        if stamp is None or stamp > self.clock() + _SKEW:
            return None
        return stamp

    def now_for(self, ctx: MessageContext) -> float:
        """The "now" a scan of ``ctx`` reads the buckets at (see the module docstring)."""
        clock = self.clock()
        if self.use_message_time and not ctx.envelope.live:
            stamp = self._message_time(ctx)
            if stamp is not None:
                return min(stamp, clock)
        return clock

    def _window(self, now: float) -> list[int]:
        """The live buckets at ``now``, newest first."""
        current = self._bucket(now)
        return [current - age for age in range(self.n_buckets)]

    @staticmethod
    def _prefix(identity: Identity, kind: str) -> str:
        return f"rep:{{{identity.tag}}}:{kind}:"

    @classmethod
    def _key(cls, identity: Identity, kind: str, bucket: int) -> str:
        return cls._prefix(identity, kind) + str(bucket)

    # -- scanning -------------------------------------------------------------------------

    async def score(self, ctx: MessageContext) -> list[Hit]:
        identities = await self.identities(ctx)
        if not identities:
            return []
        buckets = [str(b) for b in self._window(self.now_for(ctx))]  # `_key` of every bucket, built once
        keyed = [(i, [self._prefix(i, "s") + b for b in buckets], [self._prefix(i, "h") + b for b in buckets]) for i in identities]
        counts = await self.store.get_counters([k for _, spam_keys, ham_keys in keyed for k in spam_keys + ham_keys])
        best: dict[str, tuple[float, Hit]] = {}  # symbol -> (evidence, hit); REP_DKIM_DOMAIN may have several
        for identity, spam_keys, ham_keys in keyed:
            if counts.keys().isdisjoint(spam_keys) and counts.keys().isdisjoint(ham_keys):
                continue  # unknown: no opinion (most identities of most mail)
            spam = sum(w * max(0.0, counts.get(k, 0.0)) for w, k in zip(self._decay, spam_keys))
            ham = sum(w * max(0.0, counts.get(k, 0.0)) for w, k in zip(self._decay, ham_keys))
            evidence = spam + ham
            if evidence <= 1e-9:
                continue  # unknown: no opinion
            value = (spam - ham) / (evidence + self.prior)
            if not identity.credited:
                value = max(0.0, value)
            if value == 0.0:
                continue
            reason = f"{identity.shown[:120]}: spam {spam:.1f}, ham {ham:.1f} (decayed)"
            if identity.symbol not in best or evidence > best[identity.symbol][0]:
                best[identity.symbol] = (evidence, Hit(identity.symbol, value, reason))
        return [hit for _, hit in best.values()]

    # -- learning -------------------------------------------------------------------------

    async def learn(self, ctx: MessageContext, label: Label, user: str | None = None, *, source: Source = "report") -> None:
        """Count ``ctx``'s identities as ``label`` in the current bucket (the message's own
        bucket for ``train``), weighted by ``source``; a user's share is capped."""
        if label not in ("spam", "ham"):
            raise ScorerError(f"reputation: label must be 'spam' or 'ham', not {label!r}")
        if source not in self.source_weights:
            raise ScorerError(f"reputation: unknown label source {source!r}")
        weight = self.source_weights[source]
        identities = await self.identities(ctx)
        if not identities:
            return
        when = (self._message_time(ctx) if source == "train" else None) or self.clock()
        bucket = self._bucket(when)
        kind = "s" if label == "spam" else "h"
        scope = canonical_user(user) if user else "*"
        record_key = f"rep:m:{{{ctx.digest}}}:{_hashed(scope)}"
        previous = _read_record(await self.store.get(record_key))
        if previous is not None and previous[0] == label:
            return  # already counted this way
        changes: dict[str, float] = {}
        if previous is not None:  # learned the other way before: take those counts back
            for key, amount in previous[1].items():
                changes[key] = changes.get(key, 0.0) - amount
        added: dict[str, float] = {}
        if weight > 0:
            if user:
                added = await self._capped(identities, kind, bucket, when, _hashed(scope), weight, changes)
            else:
                added = {self._key(i, kind, bucket): weight for i in identities}
        for key, amount in added.items():
            changes[key] = changes.get(key, 0.0) + amount
        changes = {k: v for k, v in changes.items() if v}
        if changes:
            await self.store.incr_many(changes, ttl=self.ttl)
        record = json.dumps({"label": label, "amounts": added}, separators=(",", ":")).encode()
        await self.store.set(record_key, record, ttl=self.ttl)

    async def _capped(
        self,
        identities: list[Identity],
        kind: str,
        bucket: int,
        when: float,
        user_hash: str,
        weight: float,
        pending: Mapping[str, float],
    ) -> dict[str, float]:
        """What one user may add per identity: their contribution (kept per identity) stays
        within ``max(user_allowance, max_user_share * all evidence)``."""
        window = self._window(when)
        user_keys = {i.tag: f"rep:{{{i.tag}}}:u:{user_hash}" for i in identities}
        bucket_keys = {i.tag: [self._key(i, k, b) for k in "sh" for b in window] for i in identities}
        counts = dict(await self.store.get_counters([k for keys in bucket_keys.values() for k in keys] + list(user_keys.values())))
        for key, amount in pending.items():  # counts being taken back in this same learn
            counts[key] = counts.get(key, 0.0) + amount
        added: dict[str, float] = {}
        share = self.max_user_share
        for identity in identities:
            total = sum(max(0.0, counts.get(k, 0.0)) for k in bucket_keys[identity.tag])
            mine = max(0.0, counts.get(user_keys[identity.tag], 0.0))
            room = self.user_allowance - mine
            if share < 1.0:
                room = max(room, (share * total - mine) / (1.0 - share))
            else:
                room = weight
            amount = min(weight, room)
            if amount > 1e-9:
                added[self._key(identity, kind, bucket)] = amount
                added[user_keys[identity.tag]] = amount
        return added


def _split(symbol: str, prefix: str, tag: str, shown: str, authenticated: bool) -> Identity:
    """An identity kept apart by authentication: ``<prefix>:a:`` is credited, ``<prefix>:u:`` is not."""
    if authenticated:
        return Identity(f"{symbol}_AUTH", f"{prefix}:a:{tag}", shown, True)
    return Identity(symbol, f"{prefix}:u:{tag}", shown, False)


def _read_record(raw: bytes | None) -> tuple[str, dict[str, float]] | None:
    """(label, amounts) of an earlier learn of the same message, or None if absent/unreadable."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        label = data["label"]
        amounts = data["amounts"]
        if label not in ("spam", "ham") or not isinstance(amounts, dict) or len(amounts) > _MAX_RECORD_KEYS:
            return None
        clean = {
            k: float(v)
            for k, v in amounts.items()
            if isinstance(k, str) and k.startswith("rep:{") and isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 100
        }
    except (ValueError, KeyError, TypeError):
        return None
    return label, clean


def _resolver_dkim(resolver: Resolver, budget: float, max_signatures: int = 10) -> DkimSource:
    """DKIM results through the per-message task shared with the auth scorer (whichever
    starts it first; ``max_signatures`` matches the auth scorer's default)."""

    def source(ctx: MessageContext) -> Awaitable[Sequence[DkimResult]]:
        deadline = time.monotonic() + budget

        def lookup(name: str, rdtype: str) -> Awaitable[Answer]:
            return resolver.lookup(name, rdtype, timeout=max(0.05, deadline - time.monotonic()))

        return shared_dkim_results(ctx, lookup, max_signatures)

    return source
