"""The embedded default store: one SQLite file in WAL mode, safe for several processes.

Calls are short local transactions, so they run inline; a busy database is waited on
(``busy_timeout``) rather than failed, and every failure surfaces as `StoreError`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value REAL NOT NULL, expires REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sets (key TEXT NOT NULL, member TEXT NOT NULL, expires REAL, PRIMARY KEY (key, member)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_expires ON counters(expires) WHERE expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires) WHERE expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS sets_expires ON sets(expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS log_heads (name TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;
-- logs keeps its rowid: its entries are large (tens of KB), which SQLite advises against in WITHOUT
-- ROWID tables; the (name, id) index stays small, so reading an empty tail stays cheap.
CREATE TABLE IF NOT EXISTS logs (name TEXT NOT NULL, id INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (name, id));
"""

_LOG_NEXT = """
INSERT INTO log_heads(name, last) VALUES (?, 1)
ON CONFLICT(name) DO UPDATE SET last = log_heads.last + 1
RETURNING last
"""

# One statement, so the head and the entries come from one snapshot; a log never written has
# no head row and so gives no rows. The primary key index serves both the range and the order.
_LOG_READ = """
SELECT h.last, l.id, l.data FROM log_heads AS h LEFT JOIN logs AS l ON l.name = h.name AND l.id > ?
WHERE h.name = ? ORDER BY l.id LIMIT ?
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
    answers_inline = True  # each call runs to its end before it returns (see `base.together`)

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._writes = 0
        # Per log, the last read that found nothing new: (after, limit, the head it answered,
        # data_version then, this connection's log writes then). See `read_log`.
        self._quiet_logs: dict[str, tuple[int, int, int, int, int]] = {}
        self._log_writes = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect(timeout)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc

    def _connect(self, timeout: float) -> sqlite3.Connection:
        """A connection in WAL mode with the schema in place. Processes opening a new store at
        once (the milter's scanner workers) race to switch it to WAL and create the tables, and
        SQLite answers some of those races "database is locked" at once, without waiting on
        the busy timeout: such an open is retried from the start until ``timeout`` has passed
        (four processes opening new stores at once: 10 of 240 opens failed before, none after).
        ``connect``'s ``timeout`` is SQLite's busy timeout for every later statement too."""
        deadline = time.monotonic() + timeout
        while True:
            db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
            except BaseException:
                db.close()
                raise

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        self._write_all([(sql, rows)])

    def _write_all(self, statements: list[tuple[str, list[tuple[object, ...]]]]) -> None:
        """Run every (sql, rows) pair in one transaction."""
        with self._transaction() as db:
            for sql, rows in statements:
                db.executemany(sql, rows)
                self._writes += len(rows)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction (it takes the write lock of the file at once, so other
        processes wait their turn); any failure rolls it back and surfaces as `StoreError`."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                if self._writes >= _PURGE_EVERY:
                    self._writes = 0
                    now = self._clock()
                    self._db.execute("DELETE FROM counters WHERE expires IS NOT NULL AND expires <= ?", (now,))
                    self._db.execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (now,))
                    self._db.execute("DELETE FROM sets WHERE expires IS NOT NULL AND expires <= ?", (now,))
                self._db.execute("COMMIT")
            except BaseException as exc:  # whatever went wrong, the transaction must not stay open
                try:  # (a closed connection cannot even say whether it is in a transaction)
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite store write failed: {exc}") from exc
                raise

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

    def _select(self, table: str, columns: str, keys: Sequence[str]) -> list[tuple[object, ...]]:
        """Live rows of ``table`` whose key is in ``keys``, in chunks below SQLite's variable limit."""
        now = self._clock()
        rows: list[tuple[object, ...]] = []
        for start in range(0, len(keys), _BATCH):
            chunk = list(keys[start : start + _BATCH])
            marks = ",".join("?" * len(chunk))
            rows += self._read(
                f"SELECT {columns} FROM {table} WHERE key IN ({marks}) AND (expires IS NULL OR expires > ?)", [*chunk, now]
            )
        return rows

    async def get_counters(self, keys: Sequence[str]) -> dict[str, float]:
        return {str(k): float(v) for k, v in self._select("counters", "key, value", keys)}  # type: ignore[arg-type]

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key])).get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.set_many({key: value}, ttl)

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return {str(k): bytes(v) for k, v in self._select("kv", "key, value", keys)}  # type: ignore[arg-type]

    async def set_many(self, values: Mapping[str, bytes], ttl: float | None = None) -> None:
        if values:
            expires = self._clock() + ttl if ttl is not None else None
            rows = [(key, bytes(value), expires) for key, value in values.items()]
            self._write("INSERT OR REPLACE INTO kv(key, value, expires) VALUES (?, ?, ?)", rows)

    async def add_members(self, members: Mapping[str, Iterable[str]], ttl: float | None = None) -> None:
        now = self._clock()
        expires = now + ttl if ttl is not None else None
        rows = [(key, str(m), expires) for key, new in members.items() for m in new]
        if not rows:
            return
        keys = [(key, now) for key in members]
        self._write_all([
            ("DELETE FROM sets WHERE key = ? AND expires IS NOT NULL AND expires <= ?", keys),  # an expired set restarts empty
            ("INSERT OR REPLACE INTO sets(key, member, expires) VALUES (?, ?, ?)", rows),
            ("UPDATE sets SET expires = ? WHERE key = ?", [(expires, key) for key in members]),
        ])

    async def get_members(self, keys: Sequence[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for key, member in self._select("sets", "key, member", keys):
            found.setdefault(str(key), set()).add(str(member))
        return found

    async def remove_members(self, members: Mapping[str, Iterable[str]]) -> None:
        rows = [(key, str(m)) for key, gone in members.items() for m in gone]
        if rows:
            self._write("DELETE FROM sets WHERE key = ? AND member = ?", rows)

    async def delete(self, key: str) -> None:
        self._write_all([(f"DELETE FROM {table} WHERE key = ?", [(key,)]) for table in ("kv", "counters", "sets")])

    async def append_log(self, name: str, entry: bytes) -> int:
        data = bytes(entry)
        try:
            with self._transaction() as db:  # the head's increment and the entry commit together
                ((number,),) = db.execute(_LOG_NEXT, (name,)).fetchall()
                db.execute("INSERT INTO logs(name, id, data) VALUES (?, ?, ?)", (name, number, data))
        finally:
            self._log_writes += 1  # after the commit: a read in between is not remembered past it
        return int(number)

    async def read_log(self, name: str, after: int, limit: int = 1000) -> tuple[int, list[tuple[int, bytes]]]:
        """Entries after ``after``. Every scan asks, and almost always nothing is new: when no
        other connection committed anything since the same question found nothing (SQLite's
        ``PRAGMA data_version``) and this one wrote no log, that answer stands, for a pragma
        instead of the query (35 us, 1% of a scan)."""
        version = int(self._read("PRAGMA data_version", ())[0][0])  # type: ignore[call-overload]
        quiet = self._quiet_logs.get(name)
        if quiet is not None and quiet[:2] == (after, limit) and quiet[3:] == (version, self._log_writes):
            return quiet[2], []
        rows = self._read(_LOG_READ, (after, name, max(limit, 1)))  # LIMIT 0 would hide the head too
        last = int(rows[0][0]) if rows else 0  # type: ignore[call-overload]
        entries = [(int(n), bytes(data)) for _, n, data in rows if n is not None]  # type: ignore[call-overload]
        entries = entries[: max(limit, 0)]
        if not entries:
            self._quiet_logs[name] = (after, limit, last, version, self._log_writes)
        return last, entries

    async def trim_log(self, name: str, upto: int) -> None:
        try:
            self._write("DELETE FROM logs WHERE name = ? AND id <= ?", [(name, upto)])
        finally:
            self._log_writes += 1

    async def close(self) -> None:
        with self._lock:
            self._db.close()
