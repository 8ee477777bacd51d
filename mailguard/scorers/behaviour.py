"""Structure and sending behaviour: header hygiene, sender and HELO consistency, subject
and body shape, links, attachments, recipient counts, and per-sender / per-IP sending rate.

The features themselves are pure functions in `mailguard.scorers.behaviour_features`; this module adds the
configuration and the sending rate, the only part that needs the store.

Sending rate: time-bucketed counters (``rate_buckets`` buckets covering ``rate_window``
seconds, each with TTL = the window), so the window slides by one bucket at a time. Each
parsed message is counted once: the increment and the read of the whole window are one
task shared through ``ctx.cached``, so the per-recipient rescans of one message wait for
the same answer instead of counting it again; a re-scan of mail already counted
(``ctx.arriving`` False, a report's) reads the window without counting. ``incr_many`` and ``get_counters`` are issued
in the same event-loop tick (one ``gather``), which a coalescing store (Redis) sends in one
round trip; the count read includes this message.

Which "now" places a message in a bucket (``rate_time``):

* ``"clock"``: the injected clock (wall time);
* ``"received"``: the message's receive time (see `mailguard.scorers.behaviour_features.receive_time`;
  the clock when no Received header has a date),
  so that replaying a 2002 corpus spreads messages over their own hours instead of piling
  them all into the present one;
* ``"auto"`` (default): the clock when the envelope comes from a live SMTP session
  (it has a client IP), the receive time otherwise (library, CLI and corpus replay).

Bucket TTLs run on the store's own clock, which is what keeps replayed buckets alive
during a replay and lets them expire after it.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .behaviour_features import DEFAULT_SHORTENERS, SYMBOLS, Settings, ip_rate_key, receive_time, static_hits
from ..errors import ConfigError, MailguardError, StoreError
from ..message.context import MessageContext
from ..message.relay import DEFAULT_TRUSTED_NETWORKS, Network, client_relay, parse_networks
from ..result import Hit
from ..scorer import ScorerInfo, Services
from ..stores.base import Store, shared_once, together

__all__ = ["BehaviourScorer"]

log = logging.getLogger(__name__)

_KEYS = {
    "trusted_networks",
    "shorteners",
    "max_recipients",
    "rate",
    "rate_window",
    "rate_buckets",
    "rate_min_count",
    "rate_time",
    "timeout",
    "weights",
}
_RATE_TIMES = ("auto", "clock", "received")
_MAX_RATE_VALUE = 20.0  # log2 of about a million messages per window
_WHERE = "[scorers.behaviour]"


class BehaviourScorer:
    """Structure and sending features (see `mailguard.scorers.behaviour_features`) plus sending rate."""

    name = "behaviour"

    def __init__(
        self,
        store: Store,
        *,
        trusted: Sequence[Network] | None = None,
        shorteners: Sequence[str] = DEFAULT_SHORTENERS,
        max_recipients: int = 10,
        rate: bool = True,
        rate_window: float = 3600.0,
        rate_buckets: int = 6,
        rate_min_count: int = 10,
        rate_time: str = "auto",
        timeout: float = 2.0,
        weights: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if trusted is None:
            trusted = parse_networks(list(DEFAULT_TRUSTED_NETWORKS), _WHERE)
        self.store = store
        self.clock = clock
        self.settings = Settings(
            trusted=tuple(trusted),
            shorteners=frozenset(s.lower().rstrip(".") for s in shorteners),
            max_recipients=max_recipients,
            clock=clock,
        )
        self.rate = rate
        self.rate_window = float(rate_window)
        self.rate_buckets = rate_buckets
        self.rate_min_count = rate_min_count
        self.rate_time = rate_time
        weights = dict(weights or {})
        self.info = ScorerInfo(
            group="behaviour",
            symbols={s: d for s, (d, _) in SYMBOLS.items()},
            default_weights={s: float(weights.get(s, w)) for s, (_, w) in SYMBOLS.items()},
            network=False,
            learns=False,
            timeout=timeout,
        )

    @classmethod
    def from_config(cls, section: Mapping[str, Any], services: Services) -> BehaviourScorer:
        unknown = set(section) - _KEYS
        if unknown:
            raise ConfigError(f"{_WHERE} unknown key(s): {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {}
        if "trusted_networks" in section:
            kw["trusted"] = parse_networks(section["trusted_networks"], f"{_WHERE} trusted_networks")
        if "shorteners" in section:
            kw["shorteners"] = _domains(section["shorteners"], "shorteners")
        if "rate" in section:
            if not isinstance(section["rate"], bool):
                raise ConfigError(f"{_WHERE} rate must be true or false")
            kw["rate"] = section["rate"]
        for key, low, high in (("max_recipients", 1, 100000), ("rate_buckets", 1, 60), ("rate_min_count", 1, 10**9)):
            if key in section:
                kw[key] = _integer(section[key], key, low, high)
        for key, least, most in (("rate_window", 60.0, 7 * 86400.0), ("timeout", 0.01, 60.0)):
            if key in section:
                kw[key] = _number(section[key], key, least, most)
        if "rate_time" in section:
            if section["rate_time"] not in _RATE_TIMES:
                raise ConfigError(f"{_WHERE} rate_time must be one of {', '.join(_RATE_TIMES)}")
            kw["rate_time"] = section["rate_time"]
        if "weights" in section:
            weights = section["weights"]
            if not isinstance(weights, Mapping) or set(weights) - set(SYMBOLS):
                raise ConfigError(f"{_WHERE} weights must map this scorer's symbols to numbers")
            kw["weights"] = {s: _number(w, f"weights.{s}", -100.0, 100.0) for s, w in weights.items()}
        return cls(services.store, clock=services.clock, **kw)

    async def score(self, ctx: MessageContext) -> list[Hit]:
        # the same for every recipient of a message: computed once, shared by the per-recipient scans
        hits = list(ctx.cached(f"behaviour.static:{id(self)}", lambda: static_hits(ctx, self.settings)))
        if self.rate:
            hits += await self._rate_hits(ctx)
        return hits

    # -- sending rate ---------------------------------------------------------------------

    def _now(self, ctx: MessageContext) -> float:
        if self.rate_time == "clock" or (self.rate_time == "auto" and ctx.envelope.live):
            return self.clock()
        received = receive_time(ctx, self.settings.trusted)
        if received is None:
            return self.clock()
        try:
            return received.timestamp()
        except (OverflowError, ValueError, OSError):
            return self.clock()

    def _identities(self, ctx: MessageContext) -> dict[str, str]:
        """Rate key prefix -> the reason's wording, for the sender and the client IP."""
        found = {}
        sender = ctx.envelope.mail_from
        if sender is None:  # no SMTP session: the delivering MTA's Return-Path, else From
            sender = next((v for v in ctx.header_all("return-path")[:1]), None) or ctx.header("from")
        sender = _bare_address(sender)
        if sender:
            found["bhv:rate:s:" + hashlib.blake2b(sender.encode(), digest_size=10).hexdigest()] = f"sender {sender[:80]!r}"
        relay = client_relay(ctx, self.settings.trusted)
        if relay is not None:
            found["bhv:rate:ip:" + ip_rate_key(relay.ip)] = f"client {relay.ip}"
        return found

    async def _rate_hits(self, ctx: MessageContext) -> list[Hit]:
        identities = self._identities(ctx)
        if not identities:
            return []
        span = self.rate_window / self.rate_buckets
        bucket = math.floor(self._now(ctx) / span)
        window = range(bucket - self.rate_buckets + 1, bucket + 1)
        increments = {f"{p}:{bucket}": 1.0 for p in identities} if ctx.arriving else {}
        counts = await self._count_once(ctx, increments, [f"{p}:{b}" for p in identities for b in window])
        if counts is None:
            return []
        hits = []
        for prefix, who in identities.items():
            total = sum(counts.get(f"{prefix}:{b}", 0.0) for b in window)
            if total >= self.rate_min_count:
                symbol = "RATE_IP" if prefix.startswith("bhv:rate:ip:") else "RATE_SENDER"
                value = min(_MAX_RATE_VALUE, math.log2(total))
                hits.append(Hit(symbol, value, f"{total:.0f} messages from {who} in {self.rate_window / 60:.0f} min"))
        return hits

    async def _count_once(self, ctx: MessageContext, increments: dict[str, float], keys: list[str]) -> dict[str, float] | None:
        """Count this message and read the window, once per parsed message however many
        per-recipient scans ask. None when the shared task cannot be waited on here."""
        shared: dict[str, asyncio.Future[dict[str, float]]] = ctx.cached("behaviour.rate", dict)
        loop = asyncio.get_running_loop()
        task = shared.get("task")
        if task is None:
            task = await shared_once(self.store, shared, "task", lambda: self._incr_and_read(increments, keys))
        elif task.cancelled() or (not task.done() and task.get_loop() is not loop):
            return None  # counted (or not) in a scan that was cancelled, or in another event loop
        return await asyncio.shield(task)  # one waiter's timeout does not cancel the others' answer

    async def _incr_and_read(self, increments: dict[str, float], keys: list[str]) -> dict[str, float]:
        try:
            _, counts = await together(
                self.store, self.store.incr_many(increments, ttl=self.rate_window), self.store.get_counters(keys)
            )
        except MailguardError:
            raise
        except Exception as exc:  # a store breaking its contract still fails as ours
            raise StoreError(f"rate counters: {type(exc).__name__}: {exc}") from exc
        return counts


def _bare_address(value: str) -> str:
    """``"Name" <A@Example.ORG>`` -> ``a@example.org``; '' for the null sender or no address."""
    address = email.utils.parseaddr(value[:1000])[1].strip().lower()
    return address if "@" in address and len(address) <= 320 else ""


def _integer(value: object, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{_WHERE} {key} must be a whole number from {low} to {high}")
    return value


def _number(value: object, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{_WHERE} {key} must be a number from {low:g} to {high:g}")
    return float(value)


def _domains(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and "." in v and " " not in v.strip() for v in value):
        raise ConfigError(f"{_WHERE} {key} must be a list of domain names like \"bit.ly\"")
    return tuple(v.strip().lower().rstrip(".") for v in value)
