"""The embedded default store: one SQLite file in WAL mode, safe for several processes.

Calls are short local transactions, so they run inline; a busy database is waited on
(``busy_timeout``) rather than failed, and every failure surfaces as `StoreError`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..errors import StoreError

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value REAL NOT NULL, expires REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_expires ON counters(expires) WHERE expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires) WHERE expires IS NOT NULL;
"""

_UPSERT = """
INSERT INTO counters(key, value, expires) VALUES (?, ?, ?)
ON CONFLICT(key) DO UPDATE SET
  value = CASE WHEN counters.expires IS NOT NULL AND counters.expires <= ? THEN excluded.value
               ELSE counters.value + excluded.value END,
  expires = excluded.expires
"""

_BATCH = 500  # keys per IN (...) query, below SQLite's variable limit
_PURGE_EVERY = 1000  # writes between sweeps of expired rows


class SqliteStore:
    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._writes = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
                self._writes += len(rows)
                if self._writes >= _PURGE_EVERY:
                    self._writes = 0
                    now = self._clock()
                    self._db.execute("DELETE FROM counters WHERE expires IS NOT NULL AND expires <= ?", (now,))
                    self._db.execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (now,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                try:  # (a closed connection cannot even say whether it is in a transaction)
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StoreError(f"SQLite store write failed: {exc}") from exc

    def _read(self, sql: str, params: Sequence[object]) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store read failed: {exc}") from exc

    async def incr_many(self, amounts: Mapping[str, float], ttl: float | None = None) -> None:
        if not amounts:
            return
        now = self._clock()
        expires = now + ttl if ttl is not None else None
        self._write(_UPSERT, [(key, float(v), expires, now) for key, v in amounts.items()])

    async def get_counters(self, keys: Sequence[str]) -> dict[str, float]:
        now = self._clock()
        found: dict[str, float] = {}
        for start in range(0, len(keys), _BATCH):
            chunk = list(keys[start : start + _BATCH])
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT key, value FROM counters WHERE key IN ({marks}) AND (expires IS NULL OR expires > ?)",
                [*chunk, now],
            )
            found.update((str(k), float(v)) for k, v in rows)  # type: ignore[arg-type]
        return found

    async def get(self, key: str) -> bytes | None:
        rows = self._read("SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)", [key, self._clock()])
        return bytes(rows[0][0]) if rows else None  # type: ignore[arg-type]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        expires = self._clock() + ttl if ttl is not None else None
        self._write("INSERT OR REPLACE INTO kv(key, value, expires) VALUES (?, ?, ?)", [(key, bytes(value), expires)])

    async def delete(self, key: str) -> None:
        with self._lock:
            try:
                self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
                self._db.execute("DELETE FROM counters WHERE key = ?", (key,))
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store delete failed: {exc}") from exc

    async def close(self) -> None:
        with self._lock:
            self._db.close()
