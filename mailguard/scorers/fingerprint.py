"""Fuzzy fingerprints as a scorer: near-duplicates of learned spam or ham, bulk mail, and
attachments learned as spam or ham (the rspamd fuzzy_check idea on our own store).

Store layout (every key has a TTL; ``<band>`` is a band hash in hex, ids are integers so
that Redis keeps these sets compact)::

    fz:b:<band>            set    ids of learned fingerprints with this band  (learn TTL)
    fz:f:<id>              value  record: label, source, count, 32-value signature  (learn TTL)
    fz:a:<sha256[:32]>     value  record of an attachment digest: label, source, count  (learn TTL)
    fz:r:<band>:<bucket>   set    recipient slots seen in one time bucket by mail sharing this
                                  band (the first ``bulk_bands`` bands only)  (bulk window + one bucket)

A scan is at most two store round trips: (1) the band sets, the bulk sets and the
attachment records, with this message's recipients added to the current bulk buckets in
the same event-loop tick (a coalescing store sends them together); (2) the records of the
best candidates (by number of shared bands, at most ``max_candidates``). The whole lookup is
per message, not per recipient, so it runs once as a task shared through ``ctx.cached``
that the per-recipient scans all wait on: a message is counted for bulk once.

Bounded by construction, whatever the input: a band set gets no new id once it holds
``max_band_members`` (checked at learn time); a bulk set holds recipient *slots*
(hash mod ``bulk_slots``), never more than ``bulk_slots`` members, and the number of
distinct recipients is estimated from the share of occupied slots (linear counting),
which also makes adding blind (no read first) safe.

Cost, measured with benchmarks/fingerprint.py on RedisStore: the store client spends about
30 us per command, so the command count is the latency. Defaults give 8 band reads, 6 bulk
reads and 2 bulk writes (each SADD + PEXPIRE) in the first round trip: bulk clusters on 2
bands, not all 8, because near-duplicate copies share any one band with the same odds and
the maximum over more bands adds little count but 5 commands per band.

Recipients for bulk: the envelope's RCPT TO list, else the scanned user, else one
anonymous recipient derived from the message digest (the same bytes seen twice count once).

Learning is global, except a user's own report (``user`` given, source "report"): that goes
into the user's own index (``fz:u:{<user hash>}:...``), read only when that user's mail is
scanned, so the next copy of a campaign they reported is recognised for them at once while
one user's opinion of a mailing never marks it for everyone (the scanner learns a report
globally once enough users agree). A later opposite label for the same fingerprint replaces
the earlier one, except that autolearn never overturns a label from training or a report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import timezone
from typing import Any

import numpy as np
from xxhash import xxh3_64_intdigest

from . import minhash as fp
from ..errors import ConfigError, MailguardError, ScorerError, StoreError
from ..message.context import MessageContext
from ..policy import canonical_user
from ..result import Hit
from ..scorer import Label, ScorerInfo, Services, Source
from ..stores.base import Store, shared_once, together

__all__ = ["FingerprintScorer", "Settings"]

_DAY, _HOUR = 86400.0, 3600.0
_WHERE = "[scorers.fingerprint]"

SYMBOLS: dict[str, tuple[str, float]] = {
    "FUZZY_SPAM": ("text is a near-duplicate of mail learned as spam (value: estimated similarity)", 3.0),
    "FUZZY_HAM": ("text is a near-duplicate of mail learned as ham (value: estimated similarity)", -3.0),
    "FUZZY_BULK": ("near-duplicates went to many distinct recipients lately (value: log2(1 + recipients))", 0.2),
    "ATTACH_SPAM": ("an attachment identical to one learned as spam", 3.0),
    "ATTACH_HAM": ("an attachment identical to one learned as ham", -1.5),
}

# Record: version, label, source rank, count; then the signature (fingerprints only).
_RECORD = struct.Struct("<BBBH")
_VERSION = 1
_LABELS = {"spam": 1, "ham": 2}
_LABEL_NAMES = {v: k for k, v in _LABELS.items()}
_RANK = {"autolearn": 0, "train": 1, "report": 2}  # a human's label outranks the filter's own
_MAX_COUNT = 0xFFFF
_BULK_TIMES = ("auto", "clock", "received")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The scorer's tunables; see from_config for their ranges."""

    min_words: int = 10  # shorter texts are not fingerprinted
    max_words: int = fp.DEFAULT_MAX_WORDS
    min_similarity: float = 0.5  # FUZZY_SPAM/HAM only from this estimated Jaccard similarity up
    learn_ttl_days: float = 30.0
    max_candidates: int = 16  # learned records read per lookup
    max_band_members: int = 32  # learned ids kept per band
    bulk: bool = True
    bulk_window_hours: float = 24.0
    bulk_buckets: int = 3  # the window slides by window/buckets: a count spans (buckets-1)/buckets of it to all of it
    bulk_bands: int = 2  # the first this many LSH bands are the bulk clusters (each: one read per bucket, one write)
    bulk_slots: int = 256  # recipient slots per bulk set (Redis keeps <= 512 small ints compact)
    bulk_min_recipients: int = 5  # FUZZY_BULK from this many distinct recipients up
    bulk_time: str = "auto"  # "clock", "received", or "auto" (clock for live SMTP, else receive time)
    min_attachment_bytes: int = 256  # smaller attachments (spacer images, empty files) are ignored
    max_attachments: int = 20  # attachment digests looked up per message
    timeout: float = 2.0


_INTS = {
    "min_words": (3, 10_000),
    "max_words": (10, 100_000),
    "max_candidates": (1, 256),
    "max_band_members": (1, 1024),
    "bulk_buckets": (1, 48),
    "bulk_bands": (1, fp.BANDS),
    "bulk_slots": (16, 512),
    "bulk_min_recipients": (1, 1_000_000),
    "min_attachment_bytes": (0, 1 << 30),
    "max_attachments": (0, 100),
}
_FLOATS = {
    "min_similarity": (0.05, 1.0),
    "learn_ttl_days": (1 / 24, 3650.0),
    "bulk_window_hours": (1 / 60, 24 * 30.0),
    "timeout": (0.01, 60.0),
}


@dataclasses.dataclass(frozen=True)
class _Record:
    label: str
    rank: int
    count: int
    signature: np.ndarray | None = None

    def pack(self) -> bytes:
        head = _RECORD.pack(_VERSION, _LABELS[self.label], self.rank, min(self.count, _MAX_COUNT))
        return head + (fp.signature_to_bytes(self.signature) if self.signature is not None else b"")

    @staticmethod
    def unpack(data: bytes) -> _Record | None:
        """None for anything that is not a record we wrote (old version, truncated, foreign)."""
        if len(data) < _RECORD.size:
            return None
        version, label, rank, count = _RECORD.unpack_from(data)
        if version != _VERSION or label not in _LABEL_NAMES:
            return None
        rest = data[_RECORD.size :]
        signature = fp.signature_from_bytes(rest) if rest else None
        if rest and signature is None:
            return None
        return _Record(_LABEL_NAMES[label], rank, count, signature)

    def merged(self, label: str, rank: int) -> _Record:
        """This record after learning ``label`` once more from a source of ``rank``."""
        if label == self.label:
            return dataclasses.replace(self, rank=max(rank, self.rank), count=min(self.count + 1, _MAX_COUNT))
        if rank < self.rank:  # autolearn does not overturn a trained or reported label
            return self
        return dataclasses.replace(self, label=label, rank=rank, count=1)


@dataclasses.dataclass(frozen=True)
class _Fingerprint:
    signature: np.ndarray
    id: int
    bands: tuple[str, ...]  # band hashes as hex, in band order


class FingerprintScorer:
    """Near-duplicate (min-hash + LSH), bulk and attachment-digest evidence from the store."""

    name = "fingerprint"

    def __init__(self, store: Store, settings: Settings | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.clock = clock
        s = self.settings
        self.learn_ttl = s.learn_ttl_days * _DAY
        self.bulk_window = s.bulk_window_hours * _HOUR
        self.bucket_span = self.bulk_window / s.bulk_buckets
        self.info = ScorerInfo(
            group="fingerprint",
            symbols={sym: desc for sym, (desc, _) in SYMBOLS.items()},
            default_weights={sym: w for sym, (_, w) in SYMBOLS.items()},
            learns=True,
            seeded=True,
            timeout=s.timeout,
        )

    @classmethod
    def from_config(cls, section: Mapping[str, Any], services: Services) -> FingerprintScorer:
        known = set(_INTS) | set(_FLOATS) | {"bulk", "bulk_time"}
        unknown = set(section) - known
        if unknown:
            raise ConfigError(f"{_WHERE} unknown key(s): {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {}
        for key, (low, high) in _INTS.items():
            if key in section:
                value = section[key]
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    raise ConfigError(f"{_WHERE} {key} must be a whole number from {low} to {high}")
                kw[key] = value
        for key, (flow, fhigh) in _FLOATS.items():
            if key in section:
                value = section[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not flow <= value <= fhigh:
                    raise ConfigError(f"{_WHERE} {key} must be a number from {flow:g} to {fhigh:g}")
                kw[key] = float(value)
        if "bulk" in section:
            if not isinstance(section["bulk"], bool):
                raise ConfigError(f"{_WHERE} bulk must be true or false")
            kw["bulk"] = section["bulk"]
        if "bulk_time" in section:
            if section["bulk_time"] not in _BULK_TIMES:
                raise ConfigError(f"{_WHERE} bulk_time must be one of {', '.join(_BULK_TIMES)}")
            kw["bulk_time"] = section["bulk_time"]
        settings = Settings(**kw)
        if settings.max_words < settings.min_words:
            raise ConfigError(f"{_WHERE} max_words must not be below min_words")
        return cls(services.store, settings, clock=services.clock)

    # -- per-message views ---------------------------------------------------------------

    def fingerprint(self, ctx: MessageContext) -> _Fingerprint | None:
        """The message text's fingerprint (None when too short), computed once per message."""
        s = self.settings
        return ctx.cached(f"fingerprint.fp:{s.min_words}:{s.max_words}", lambda: self._build_fingerprint(ctx))

    def _build_fingerprint(self, ctx: MessageContext) -> _Fingerprint | None:
        try:
            sig = fp.signature_of_text(ctx.text, min_words=self.settings.min_words, max_words=self.settings.max_words)
        except (ValueError, TypeError, UnicodeError, OverflowError, MemoryError, IndexError) as exc:
            raise ScorerError(f"fingerprint: {type(exc).__name__}: {exc}") from exc
        if sig is None:
            return None
        return _Fingerprint(sig, fp.fingerprint_id(sig), tuple(f"{h:016x}" for h in fp.band_hashes(sig)))

    def _attachment_keys(self, ctx: MessageContext) -> dict[str, str]:
        """Record key -> a short description, for the attachments worth a lookup."""
        keys: dict[str, str] = {}
        for att in ctx.attachments:
            if len(keys) >= self.settings.max_attachments:
                break
            if att.size >= max(1, self.settings.min_attachment_bytes):
                keys.setdefault(f"fz:a:{att.sha256[:32]}", f"{att.filename[:60] or att.declared_type} ({att.size} bytes)")
        return keys

    def _recipient_slots(self, ctx: MessageContext) -> set[int]:
        addresses = ctx.envelope.rcpt_to or ((ctx.user,) if ctx.user else ())
        names = [canonical_user(a).encode("utf-8", "surrogatepass") for a in addresses[:1000]]
        if not names:
            names = [b"anonymous:" + ctx.digest.encode()]
        return {xxh3_64_intdigest(n) % self.settings.bulk_slots for n in names}

    def _now(self, ctx: MessageContext) -> float:
        """Which time places the message in a bulk bucket; see Settings.bulk_time."""
        mode = self.settings.bulk_time
        if mode == "clock" or (mode == "auto" and ctx.envelope.live):
            return self.clock()
        for hop in ctx.received:
            try:
                when = hop.date
                if when is not None:
                    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
            except (OverflowError, ValueError, OSError):
                continue
        return self.clock()

    # -- scoring -------------------------------------------------------------------------

    async def score(self, ctx: MessageContext) -> list[Hit]:
        """Look the message up once (shared by its per-recipient scans) and return the hits."""
        # one lookup per message and user (a user's own index changes the answer)
        shared: dict[str | None, asyncio.Future[list[Hit]]] = ctx.cached(f"fingerprint.score:{id(self)}", dict)
        loop = asyncio.get_running_loop()
        task = shared.get(ctx.user)
        if task is None or task.cancelled() or task.get_loop() is not loop:
            task = await shared_once(self.store, shared, ctx.user, lambda: self._lookup(ctx))
        return list(await asyncio.shield(task))  # one waiter's timeout does not cancel the others' answer

    async def _lookup(self, ctx: MessageContext) -> list[Hit]:
        try:
            return await self._lookup_unguarded(ctx)
        except MailguardError:
            raise
        except Exception as exc:  # a store breaking its contract still fails as ours
            raise StoreError(f"fingerprint lookup: {type(exc).__name__}: {exc}") from exc

    async def _lookup_unguarded(self, ctx: MessageContext) -> list[Hit]:
        s = self.settings
        fprint = self.fingerprint(ctx)
        attachments = self._attachment_keys(ctx)
        if fprint is None and not attachments:
            return []
        set_keys: list[str] = []
        bulk_keys: dict[str, list[str]] = {}
        own_slots: set[int] = set()
        adds: dict[str, list[str]] = {}
        spaces = ["fz"] + ([_user_space(ctx.user)] if ctx.user else [])
        if fprint is not None:
            set_keys += [f"{space}:b:{band}" for space in spaces for band in fprint.bands]
            if s.bulk:
                bucket = math.floor(self._now(ctx) / self.bucket_span)
                window = range(bucket - s.bulk_buckets + 1, bucket + 1)
                clusters = fprint.bands[: s.bulk_bands]
                bulk_keys = {band: [f"fz:r:{band}:{b}" for b in window] for band in clusters}
                set_keys += [k for keys in bulk_keys.values() for k in keys]
                own_slots = self._recipient_slots(ctx)
                recorded: set[int] = ctx.cached(f"fingerprint.bulk_recorded:{id(self)}", set)
                new = own_slots - recorded if ctx.arriving else set()  # a re-scan reads, never recounts
                if new:  # claimed before any await: a concurrent per-recipient scan adds nothing twice
                    recorded |= new
                    members = [str(m) for m in sorted(new)]
                    adds = {f"fz:r:{band}:{bucket}": members for band in clusters}
        # Round trip 1: every read that needs nothing else first, and the bulk write, in one tick.
        calls: list[Any] = [self.store.get_members(set_keys) if set_keys else _none({})]
        calls.append(self.store.get_many(list(attachments)) if attachments else _none({}))
        if adds:
            calls.append(self.store.add_members(adds, ttl=self.bulk_window + self.bucket_span))
        found_sets, found_attachments, *_ = await together(self.store, *calls)

        hits: list[Hit] = []
        if fprint is not None:
            record_keys = [f"{space}:f:{c}" for space in spaces for c in self._candidates(fprint, found_sets, space)]
            if record_keys:  # round trip 2: the best candidates' records
                records = await self.store.get_many(record_keys)
                hits += self._similar_hits(fprint, records)
            if bulk_keys:
                hits += self._bulk_hits(bulk_keys, found_sets, own_slots)
        hits += self._attachment_hits(attachments, found_attachments)
        return hits

    def _candidates(self, fprint: _Fingerprint, found: Mapping[str, set[str]], space: str = "fz") -> list[int]:
        """Learned ids sharing a band with this message, most shared bands first, capped."""
        votes: Counter[int] = Counter()
        for band in fprint.bands:
            for member in list(found.get(f"{space}:b:{band}", ()))[: self.settings.max_band_members * 4]:
                if member.isdigit() and len(member) <= 19:
                    votes[int(member)] += 1
        ranked = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))
        return [fid for fid, _ in ranked[: self.settings.max_candidates]]

    def _similar_hits(self, fprint: _Fingerprint, records: Mapping[str, bytes]) -> list[Hit]:
        best: dict[str, tuple[float, _Record, str]] = {}
        for key, data in records.items():
            record = _Record.unpack(data)
            if record is None or record.signature is None:
                continue
            sim = fp.similarity(fprint.signature, record.signature)
            if sim >= self.settings.min_similarity and sim > best.get(record.label, (-1.0, record, key))[0]:
                best[record.label] = (sim, record, key)
        hits = []
        for label, symbol in (("spam", "FUZZY_SPAM"), ("ham", "FUZZY_HAM")):
            if label in best:
                sim, record, key = best[label]
                how = "exact" if sim == 1.0 else f"{sim:.2f} similar"
                whose = "you reported" if key.startswith("fz:u:") else "learned"
                hits.append(Hit(symbol, sim, f"{how} to a text {whose} as {label} ({_learned(record)})"))
        return hits

    def _bulk_hits(self, bulk_keys: Mapping[str, list[str]], found: Mapping[str, set[str]], own: set[int]) -> list[Hit]:
        slots = self.settings.bulk_slots
        best = 0.0
        for keys in bulk_keys.values():
            occupied = set(own)
            for key in keys:
                occupied.update(int(m) for m in found.get(key, ()) if m.isdigit() and len(m) <= 4 and int(m) < slots)
            best = max(best, _linear_count(len(occupied), slots))
        if best < self.settings.bulk_min_recipients:
            return []
        hours = self.settings.bulk_window_hours
        return [Hit("FUZZY_BULK", math.log2(1.0 + best), f"near-duplicates to about {best:.0f} recipients in {hours:g} h")]

    def _attachment_hits(self, described: Mapping[str, str], found: Mapping[str, bytes]) -> list[Hit]:
        hits = []
        seen: set[str] = set()
        for key, data in found.items():
            record = _Record.unpack(data)
            if record is None:
                continue
            symbol = "ATTACH_SPAM" if record.label == "spam" else "ATTACH_HAM"
            if symbol not in seen:  # one hit per symbol; the first attachment names it
                seen.add(symbol)
                hits.append(Hit(symbol, 1.0, f"{described.get(key, 'attachment')} learned as {record.label} ({_learned(record)})"))
        return hits

    # -- learning ------------------------------------------------------------------------

    async def learn(self, ctx: MessageContext, label: Label, user: str | None = None, *, source: Source = "report") -> None:
        """Index the message's fingerprint and attachment digests as ``label``: globally, or
        in ``user``'s own index for that user's report (other per-user labels are ignored)."""
        if label not in _LABELS or (user is not None and source != "report"):
            return
        space = _user_space(user) if user is not None else "fz"
        rank = _RANK.get(source, 0)
        fprint = self.fingerprint(ctx)
        attachments = list(self._attachment_keys(ctx)) if user is None else []  # attachment digests stay global
        record_keys = ([f"{space}:f:{fprint.id}"] if fprint is not None else []) + attachments
        if not record_keys:
            return
        band_keys = [f"{space}:b:{band}" for band in fprint.bands] if fprint is not None else []
        try:
            members, old = await together(
                self.store, self.store.get_members(band_keys) if band_keys else _none({}), self.store.get_many(record_keys)
            )
            records: dict[str, bytes] = {}
            for key in record_keys:
                previous = _Record.unpack(old[key]) if key in old else None
                signature = fprint.signature if fprint is not None and key.startswith(f"{space}:f:") else None
                record = previous.merged(label, rank) if previous is not None else _Record(label, rank, 1)
                records[key] = dataclasses.replace(record, signature=signature).pack()
            adds: dict[str, list[str]] = {}
            if fprint is not None:
                me = str(fprint.id)
                for key in band_keys:
                    present = members.get(key, set())
                    if me in present or len(present) < self.settings.max_band_members:
                        adds[key] = [me]  # re-adding renews the set's TTL
            writes: list[Any] = [self.store.set_many(records, ttl=self.learn_ttl)]
            if adds:
                writes.append(self.store.add_members(adds, ttl=self.learn_ttl))
            await together(self.store, *writes)
        except MailguardError:
            raise
        except Exception as exc:
            raise StoreError(f"fingerprint learn: {type(exc).__name__}: {exc}") from exc
        ctx.cached(f"fingerprint.score:{id(self)}", dict).clear()  # a later score of this message sees it


def _user_space(user: str) -> str:
    """Key prefix of one user's own index; the hash tag keeps it on one Redis Cluster slot."""
    digest = xxh3_64_intdigest(canonical_user(user).encode("utf-8", "surrogatepass"))
    return f"fz:u:{{{digest:016x}}}"


async def _none(value: Any) -> Any:
    return value


def _learned(record: _Record) -> str:
    source = {0: "autolearn", 1: "training", 2: "report"}.get(record.rank, "?")
    return f"{record.count}x, {source}"


def _linear_count(occupied: int, slots: int) -> float:
    """Distinct items estimated from ``occupied`` of ``slots`` hash slots (linear counting);
    a full table is read as slots * ln(slots), the most it can tell apart."""
    if occupied >= slots:
        return slots * math.log(slots)
    return -slots * math.log1p(-occupied / slots)
