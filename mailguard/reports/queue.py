"""The report queue: users' spam/ham reports, kept durably in the store for later retraining.

Only the `Store` protocol is used (key-value, sets), so the queue is shared by every node
that shares the store (SQLite file, Redis). Keys, all expiring after the retention period:

* ``report:rec:<digest>:<user>``  the report (JSON: label, time, source, size). One key per
  message and user: the same user reporting the same message twice counts once, a later
  opposite report by that user overwrites it, and two nodes writing the same report write
  the same key (they converge);
* ``report:msg:<digest>``  the message, once per digest whoever reported it: zlib-compressed,
  cut to ``max_stored_bytes``;
* ``report:day:<YYYYMMDD>``  a set of ``<digest>:<user>`` per UTC day, so that reports since
  a time can be listed without scanning the store;
* ``report:user:<user>:<label>:<YYYYMM>``  a set of digests per UTC month of the report, for
  counts per user and label. Per month, because a write renews a whole set's expiry: one set
  per user would never expire while its user keeps reporting, and would grow for ever
  (found while making benchmarks/soak.py);
* ``report:n:<digest>:<label>``  a counter: how many distinct users report the message that
  way now (a replaced report moves its user from one counter to the other), so that
  `ReportQueue.tally` can tell when enough users agree to learn a message globally.

The digest is `mailguard.reports.sources.report_digest` (normalised, so copies that travelled
differently agree); users are expected in canonical form (`mailguard.message.addresses`).

Limits, said plainly: the store has no compare-and-set, so two nodes taking the *same*
new report within the same few milliseconds may both answer "new" (the stored report is
still one); a report replaced by its opposite leaves what was learned from the first label
in the scorers' counts, because they cannot un-learn.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..config import UsersConfig
from .sources import report_digest
from ..scorer import Label
from ..stores.base import Store

__all__ = ["Report", "ReportOutcome", "ReportQueue", "ReportStatus", "check_source"]

DAY = 86400.0
_MONTH = 31 * DAY  # a month's set of a user's reports lives until its last report is past the retention
_CHUNK = 500  # keys per get_many
_FORMAT = b"\x01"  # first byte of a stored message: zlib follows
_SOURCE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_LABELS = ("spam", "ham")


class ReportStatus(enum.StrEnum):
    NEW = "new"  # first report of this message by this user
    DUPLICATE = "duplicate"  # this user already reported this message the same way
    REPLACED = "replaced"  # this user had reported it the other way; this report replaces that one
    STALE = "stale"  # older than this user's stored opposite report (clock skew, old imports): ignored


@dataclasses.dataclass(frozen=True, kw_only=True)
class Report:
    digest: str
    user: str
    label: Label
    time: float  # seconds since the epoch
    source: str  # cli, api, arf, imapsieve, ...
    size: int  # bytes of the message as reported (the stored copy may be cut)

    def to_json(self) -> bytes:
        data = {"label": self.label, "time": self.time, "source": self.source, "size": self.size}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, digest: str, user: str, blob: bytes) -> Report | None:
        """The stored report, or None for a value that is not one (never raises)."""
        try:
            data = json.loads(blob)
            label = data["label"]
            if label not in _LABELS:
                return None
            return cls(
                digest=digest, user=user, label=label, time=float(data["time"]), source=str(data["source"]), size=int(data["size"])
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportOutcome:
    status: ReportStatus
    report: Report  # the report now stored (for duplicate and stale: the one already there)
    previous: Label | None = None  # for replaced: the label it replaced
    learned: bool = False  # set by Scanner.report when the scorers learned from it
    learned_globally: bool = False  # set by Scanner.report when enough users agreed to learn it for all

    @property
    def digest(self) -> str:
        return self.report.digest

    @property
    def changed(self) -> bool:
        """The queue now says something new about this message and user: learn it."""
        return self.status in (ReportStatus.NEW, ReportStatus.REPLACED)


def check_source(source: str) -> str:
    """``source`` if it is a short lower-case name (cli, api, arf, imapsieve...), else ValueError."""
    if not isinstance(source, str) or not _SOURCE.fullmatch(source):
        raise ValueError(f"report source must be a short lower-case name such as cli, api, arf or imapsieve, not {source!r}")
    return source


class ReportQueue:
    """Users' reports in the store; see the module docstring for the keys."""

    def __init__(
        self,
        store: Store,
        *,
        retention_days: float = 180.0,
        max_stored_bytes: int = 2 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_days <= 0 or max_stored_bytes <= 0:
            raise ValueError("retention_days and max_stored_bytes must be positive")
        self.store = store
        self.retention = retention_days * DAY
        self.max_stored_bytes = max_stored_bytes
        self._clock = clock

    @classmethod
    def from_config(cls, store: Store, users: UsersConfig, **kw: Any) -> ReportQueue:
        return cls(store, retention_days=users.report_retention_days, max_stored_bytes=users.report_max_bytes, **kw)

    async def add(self, raw: bytes, user: str, label: Label, source: str, now: float | None = None) -> ReportOutcome:
        """Record that ``user`` (canonical) says ``raw`` is ``label``."""
        if label not in _LABELS:
            raise ValueError(f"label must be 'spam' or 'ham', not {label!r}")
        if not isinstance(user, str) or not user or len(user) > 1000 or any(c in user for c in "\r\n\0"):
            raise ValueError("user must be a canonical address")
        check_source(source)
        raw = bytes(raw)
        now = self._clock() if now is None else float(now)
        digest = report_digest(raw)
        rec_key = _rec_key(digest, user)
        blob = await self.store.get(rec_key)
        existing = Report.from_json(digest, user, blob) if blob is not None else None
        if existing is not None and existing.label == label:
            return ReportOutcome(status=ReportStatus.DUPLICATE, report=existing)
        if existing is not None and existing.time > now:
            return ReportOutcome(status=ReportStatus.STALE, report=existing)
        report = Report(digest=digest, user=user, label=label, time=now, source=source, size=len(raw))
        # index first: a report that can be read is always listed (a listed one that cannot is skipped)
        await self.store.add_members(
            {_day_key(now): [f"{digest}:{user}"], _user_key(user, label, now): [digest]}, ttl=self.retention + _MONTH
        )
        await self.store.set_many(
            {rec_key: report.to_json(), _msg_key(digest): _FORMAT + zlib.compress(raw[: self.max_stored_bytes])},
            ttl=self.retention,
        )
        votes = {_count_key(digest, label): 1.0}
        if existing is not None:
            votes[_count_key(digest, existing.label)] = -1.0
        await self.store.incr_many(votes, ttl=self.retention)
        if existing is None:
            return ReportOutcome(status=ReportStatus.NEW, report=report)
        await self.store.remove_members({_user_key(user, existing.label, existing.time): [digest]})
        return ReportOutcome(status=ReportStatus.REPLACED, report=report, previous=existing.label)

    async def get(self, digest: str, user: str) -> Report | None:
        blob = await self.store.get(_rec_key(digest, user))
        return Report.from_json(digest, user, blob) if blob is not None else None

    async def message(self, digest: str) -> bytes | None:
        """The stored copy of a reported message (cut to ``max_stored_bytes``), or None."""
        blob = await self.store.get(_msg_key(digest))
        return self._decompress(blob) if blob is not None else None

    async def counts(self, user: str) -> dict[str, int]:
        """How many messages ``user`` reported as spam and as ham within the retention period
        (rounded out to whole months)."""
        now = self._clock()
        months = {_month(t) for t in _steps(now - self.retention, now + DAY, 28 * DAY)} | {_month(now + DAY)}
        keys = {label: [f"report:user:{user}:{label}:{m}" for m in months] for label in _LABELS}
        found = await self.store.get_members([k for ks in keys.values() for k in ks])
        return {label: len(set().union(*(found.get(k, set()) for k in ks))) for label, ks in keys.items()}

    async def tally(self, digest: str) -> dict[str, int]:
        """How many distinct users report the message ``digest`` as spam and as ham: one read.
        Counted from the reports made while this counter existed (it lives for the retention
        period after the latest report of the message)."""
        keys = {label: _count_key(digest, label) for label in _LABELS}
        found = await self.store.get_counters(list(keys.values()))
        return {label: max(0, round(found.get(key, 0.0))) for label, key in keys.items()}

    async def iter_reports(self, since: float | None = None) -> AsyncIterator[tuple[Report, bytes]]:
        """Every current report made at or after ``since`` (default: the whole retention
        period) with its stored message, oldest day first; within a day in time order.
        A report replaced by its opposite is listed once, as it is now."""
        now = self._clock()
        start = now - self.retention - DAY if since is None else max(float(since), now - self.retention - DAY)
        first, last = int(start // DAY), int(now // DAY) + 1  # +1: a node whose clock runs ahead
        for day in range(first, last + 1):
            key = _day_key(day * DAY)
            members = sorted((await self.store.get_members([key])).get(key, ()))
            for start_at in range(0, len(members), _CHUNK):
                reports = await self._reports(members[start_at : start_at + _CHUNK])
                current = sorted(
                    (r for r in reports if r.time >= start and int(r.time // DAY) == day), key=lambda r: (r.time, r.digest, r.user)
                )
                blobs = await self.store.get_many(list(dict.fromkeys(_msg_key(r.digest) for r in current)))
                for report in current:
                    blob = blobs.get(_msg_key(report.digest))
                    raw = self._decompress(blob) if blob is not None else None
                    if raw is not None:
                        yield report, raw

    async def _reports(self, members: list[str]) -> list[Report]:
        pairs = [m.split(":", 1) for m in members if ":" in m]
        blobs = await self.store.get_many([_rec_key(d, u) for d, u in pairs])
        reports = []
        for digest, user in pairs:
            blob = blobs.get(_rec_key(digest, user))
            report = Report.from_json(digest, user, blob) if blob is not None else None
            if report is not None:
                reports.append(report)
        return reports

    def _decompress(self, blob: bytes) -> bytes | None:
        """The message, or None for a value that is not one; never inflates past the bound."""
        if not blob.startswith(_FORMAT):
            return None
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(blob[1:], self.max_stored_bytes)
        except zlib.error:
            return None
        return raw


def _rec_key(digest: str, user: str) -> str:
    return f"report:rec:{digest}:{user}"


def _msg_key(digest: str) -> str:
    return f"report:msg:{digest}"


def _user_key(user: str, label: str, when: float) -> str:
    return f"report:user:{user}:{label}:{_month(when)}"


def _month(when: float) -> str:
    return time.strftime("%Y%m", time.gmtime(max(when, 0.0)))


def _steps(start: float, stop: float, step: float) -> list[float]:
    """``start``, ``start + step``, ... up to ``stop``: a time in every month between them."""
    return [start + k * step for k in range(int((stop - start) // step) + 1)]


def _count_key(digest: str, label: str) -> str:
    return f"report:n:{digest}:{label}"


def _day_key(when: float) -> str:
    return "report:day:" + time.strftime("%Y%m%d", time.gmtime(when))
