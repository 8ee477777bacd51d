"""Counter, key-value, set and log stores: the same behaviour from MemoryStore and SqliteStore."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from mailguard.config import StoreConfig
from mailguard.errors import ConfigError, StoreError
from mailguard.stores import MemoryStore, SqliteStore, Store, open_store
from mailguard.stores.base import shared_once, together


class Clock:
    """Injectable time: tests move it instead of sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(coro):
    return asyncio.run(coro)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "sqlite"])
def store(request, clock, tmp_path):
    if request.param == "memory":
        s = MemoryStore(clock=clock)
    else:
        s = SqliteStore(tmp_path / "store.sqlite3", clock=clock)
    yield s
    run(s.close())


def test_implements_store_protocol(store):
    assert isinstance(store, Store)


# -- counters ---------------------------------------------------------------------------


def test_incr_many_and_get_counters(store):
    run(store.incr_many({"a": 1, "b": 2.5}))
    run(store.incr_many({"a": 2, "c": -1}))
    assert run(store.get_counters(["a", "b", "c"])) == {"a": 3.0, "b": 2.5, "c": -1.0}


def test_missing_counters_left_out(store):
    run(store.incr_many({"present": 1}))
    assert run(store.get_counters(["absent", "present", "also-absent"])) == {"present": 1.0}
    assert run(store.get_counters([])) == {}


def test_empty_incr_is_noop(store):
    run(store.incr_many({}))
    assert run(store.get_counters(["x"])) == {}


def test_many_keys_beyond_one_batch(store):
    amounts = {f"bayes:tok:{i}": float(i) for i in range(1234)}
    run(store.incr_many(amounts))
    assert run(store.get_counters(list(amounts))) == amounts


def test_unicode_keys(store):
    run(store.incr_many({"tok:中文": 2}))
    assert run(store.get_counters(["tok:中文"])) == {"tok:中文": 2.0}


def test_counter_ttl_expiry(store, clock):
    run(store.incr_many({"k": 5}, ttl=10))
    clock.advance(9.9)
    assert run(store.get_counters(["k"])) == {"k": 5.0}
    clock.advance(0.2)
    assert run(store.get_counters(["k"])) == {}


def test_counter_ttl_renewed_by_increment(store, clock):
    run(store.incr_many({"k": 1}, ttl=10))
    clock.advance(8)
    run(store.incr_many({"k": 1}, ttl=10))
    clock.advance(8)  # 16 s after the first write, 8 after the renewal
    assert run(store.get_counters(["k"])) == {"k": 2.0}
    clock.advance(3)
    assert run(store.get_counters(["k"])) == {}


def test_expired_counter_restarts_from_zero(store, clock):
    run(store.incr_many({"k": 7}, ttl=5))
    clock.advance(6)
    run(store.incr_many({"k": 1}, ttl=5))
    assert run(store.get_counters(["k"])) == {"k": 1.0}


def test_counter_without_ttl_never_expires(store, clock):
    run(store.incr_many({"k": 1}))
    clock.advance(10 * 365 * 86400)
    assert run(store.get_counters(["k"])) == {"k": 1.0}


def test_ttl_only_on_some_keys(store, clock):
    run(store.incr_many({"short": 1}, ttl=1))
    run(store.incr_many({"long": 1}, ttl=100))
    clock.advance(2)
    assert run(store.get_counters(["short", "long"])) == {"long": 1.0}


# -- key-value --------------------------------------------------------------------------


def test_kv_set_get_overwrite_delete(store):
    assert run(store.get("k")) is None
    run(store.set("k", b"one"))
    assert run(store.get("k")) == b"one"
    run(store.set("k", b"\x00\xff binary"))
    assert run(store.get("k")) == b"\x00\xff binary"
    run(store.delete("k"))
    assert run(store.get("k")) is None


def test_kv_accepts_bytearray(store):
    run(store.set("k", bytearray(b"abc")))
    value = run(store.get("k"))
    assert value == b"abc" and isinstance(value, bytes)


def test_delete_missing_key_is_fine(store):
    run(store.delete("never-set"))
    assert run(store.get("never-set")) is None


def test_delete_removes_counter_too(store):
    run(store.incr_many({"k": 3}))
    run(store.delete("k"))
    assert run(store.get_counters(["k"])) == {}


def test_kv_and_counters_are_separate(store):
    run(store.set("same", b"v"))
    run(store.incr_many({"same": 4}))
    assert run(store.get("same")) == b"v"
    assert run(store.get_counters(["same"])) == {"same": 4.0}


def test_kv_ttl(store, clock):
    run(store.set("k", b"v", ttl=30))
    clock.advance(29)
    assert run(store.get("k")) == b"v"
    clock.advance(2)
    assert run(store.get("k")) is None
    run(store.set("k", b"again"))  # re-set without TTL lives on
    clock.advance(10**6)
    assert run(store.get("k")) == b"again"


# -- SQLite specifics -------------------------------------------------------------------


def test_sqlite_two_objects_same_file_see_each_other(tmp_path, clock):
    path = tmp_path / "shared.sqlite3"
    first, second = SqliteStore(path, clock=clock), SqliteStore(path, clock=clock)
    try:
        run(first.incr_many({"c": 1}))
        run(second.incr_many({"c": 2}))
        assert run(first.get_counters(["c"])) == {"c": 3.0}
        run(second.set("k", b"from second"))
        assert run(first.get("k")) == b"from second"
        run(first.delete("k"))
        assert run(second.get("k")) is None
    finally:
        run(first.close())
        run(second.close())


def test_sqlite_log_reads_that_found_nothing_see_what_comes_after_from_any_connection(tmp_path, clock):
    """An empty read is remembered, but never past a write: another connection's, or its own."""
    path = tmp_path / "shared.sqlite3"
    first, second = SqliteStore(path, clock=clock), SqliteStore(path, clock=clock)
    try:
        assert run(first.read_log("u", 0)) == (0, [])
        assert run(first.read_log("u", 0)) == (0, [])  # remembered
        run(second.append_log("u", b"a"))
        assert run(first.read_log("u", 0)) == (1, [(1, b"a")])
        assert run(first.read_log("u", 1)) == (1, [])
        run(second.incr_many({"other": 1.0}))  # any commit elsewhere: asked again, same answer
        assert run(first.read_log("u", 1)) == (1, [])
        run(first.append_log("u", b"b"))  # its own write
        assert run(first.read_log("u", 1)) == (2, [(2, b"b")])
        assert run(first.read_log("u", 2, limit=5)) == (2, [])
        run(first.trim_log("u", 2))
        run(second.append_log("u", b"c"))
        assert run(first.read_log("u", 2, limit=5)) == (3, [(3, b"c")])
        assert run(second.read_log("u", 0)) == (3, [(3, b"c")])
    finally:
        run(first.close())
        run(second.close())


def test_sqlite_persists_across_reopen(tmp_path, clock):
    path = tmp_path / "p.sqlite3"
    s = SqliteStore(path, clock=clock)
    run(s.set("k", b"kept"))
    run(s.incr_many({"c": 2}))
    run(s.close())
    s = SqliteStore(path, clock=clock)
    try:
        assert run(s.get("k")) == b"kept"
        assert run(s.get_counters(["c"])) == {"c": 2.0}
    finally:
        run(s.close())


def test_sqlite_wal_mode(tmp_path):
    path = tmp_path / "wal.sqlite3"
    s = SqliteStore(path)
    run(s.close())
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        db.close()


def _open_and_close(path: Path, barrier, failures) -> None:
    barrier.wait()
    try:
        run(SqliteStore(path).close())
    except StoreError as exc:
        failures.put(str(exc))


@pytest.mark.real_clock  # waits on its child processes with a timeout, and the retry sleeps
def test_sqlite_processes_opening_a_new_store_at_once_all_get_it(tmp_path):
    """The milter's workers open one new store together; SQLite answers some of the races to
    switch it to WAL "database is locked" without waiting (before the retry: 10 of 240 opens)."""
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    for round_ in range(30):
        path = tmp_path / f"new-{round_}.sqlite3"
        barrier = ctx.Barrier(4)
        workers = [ctx.Process(target=_open_and_close, args=(path, barrier, failures)) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert failures.empty(), failures.get()


def test_sqlite_store_locked_past_the_timeout_is_a_store_error(tmp_path):
    path = tmp_path / "held.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match="locked"):
            SqliteStore(path, timeout=0.2)
    finally:
        holder.close()


def test_sqlite_creates_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "store.sqlite3"
    s = SqliteStore(path)
    run(s.close())
    assert path.exists()


def test_sqlite_uncreatable_path_raises_store_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(StoreError, match="not-a-dir"):
        SqliteStore(blocker / "store.sqlite3")


def test_sqlite_path_is_a_directory_raises_store_error(tmp_path):
    with pytest.raises(StoreError):
        SqliteStore(tmp_path)


def test_sqlite_use_after_close_raises_store_error(tmp_path):
    s = SqliteStore(tmp_path / "closed.sqlite3")
    run(s.close())
    with pytest.raises(StoreError):
        run(s.get("k"))
    with pytest.raises(StoreError):
        run(s.incr_many({"k": 1}))


def test_sqlite_expired_rows_purged(tmp_path, clock):
    path = tmp_path / "purge.sqlite3"
    s = SqliteStore(path, clock=clock)
    try:
        run(s.incr_many({f"old{i}": 1 for i in range(10)}, ttl=1))
        clock.advance(5)
        run(s.incr_many({f"new{i}": 1 for i in range(1000)}))  # enough writes to trigger a sweep
    finally:
        run(s.close())
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT COUNT(*) FROM counters WHERE key LIKE 'old%'").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM counters WHERE key LIKE 'new%'").fetchone()[0] == 1000
    finally:
        db.close()


# -- open_store -------------------------------------------------------------------------


def test_open_store_by_config(tmp_path):
    mem = open_store(StoreConfig(backend="memory"))
    assert isinstance(mem, MemoryStore)
    sql = open_store(StoreConfig(backend="sqlite", path=Path(tmp_path / "o.sqlite3")))
    try:
        assert isinstance(sql, SqliteStore)
    finally:
        run(sql.close())
    with pytest.raises(ConfigError, match="backend"):
        open_store(StoreConfig(backend="redis-typo"))


# -- batch key-value and sets -------------------------------------------------------------


def test_get_many_and_set_many(store, clock):
    run(store.set_many({"k1": b"one", "k2": b"two"}, ttl=10))
    run(store.set("k3", b"three"))
    assert run(store.get_many(["k1", "k2", "k3", "nope"])) == {"k1": b"one", "k2": b"two", "k3": b"three"}
    clock.advance(11)
    assert run(store.get_many(["k1", "k2", "k3"])) == {"k3": b"three"}


def test_sets_add_read_remove(store):
    run(store.add_members({"s1": ["a", "b"], "s2": ["x"]}))
    run(store.add_members({"s1": ["b", "c"]}))
    assert run(store.get_members(["s1", "s2", "s3"])) == {"s1": {"a", "b", "c"}, "s2": {"x"}}
    run(store.remove_members({"s1": ["a", "zzz"], "s2": ["x"]}))
    assert run(store.get_members(["s1", "s2"])) == {"s1": {"b", "c"}}


def test_set_ttl_renews_whole_set_and_expired_set_restarts_empty(store, clock):
    run(store.add_members({"s": ["old"]}, ttl=10))
    clock.advance(8)
    run(store.add_members({"s": ["new"]}, ttl=10))  # renews "old" as well
    clock.advance(8)
    assert run(store.get_members(["s"])) == {"s": {"old", "new"}}
    clock.advance(3)
    assert run(store.get_members(["s"])) == {}
    run(store.add_members({"s": ["fresh"]}, ttl=10))
    assert run(store.get_members(["s"])) == {"s": {"fresh"}}


def test_delete_removes_sets_too(store):
    run(store.add_members({"s": ["a"]}))
    run(store.delete("s"))
    assert run(store.get_members(["s"])) == {}


def test_many_keys_beyond_one_sqlite_batch(store):
    keys = [f"key{i}" for i in range(1234)]
    run(store.set_many({k: k.encode() for k in keys}))
    run(store.add_members({k: [k] for k in keys}))
    assert len(run(store.get_many(keys))) == 1234
    assert len(run(store.get_members(keys))) == 1234


# -- logs -----------------------------------------------------------------------------------


def test_log_numbers_entries_from_one_and_reads_the_rest_in_order(store):
    assert [run(store.append_log("updates", f"e{i}".encode())) for i in range(1, 6)] == [1, 2, 3, 4, 5]
    assert run(store.read_log("updates", 0)) == (5, [(i, f"e{i}".encode()) for i in range(1, 6)])
    assert run(store.read_log("updates", 3)) == (5, [(4, b"e4"), (5, b"e5")])
    assert run(store.read_log("updates", 5)) == (5, [])  # nothing new: the usual case
    assert run(store.read_log("updates", 9)) == (5, [])


def test_log_read_limit(store):
    for i in range(1, 8):
        run(store.append_log("l", bytes([i])))
    assert run(store.read_log("l", 2, limit=3)) == (7, [(3, b"\x03"), (4, b"\x04"), (5, b"\x05")])
    assert run(store.read_log("l", 5, limit=3)) == (7, [(6, b"\x06"), (7, b"\x07")])
    assert run(store.read_log("l", 0, limit=0)) == (7, [])


def test_unknown_log_is_empty(store):
    assert run(store.read_log("never-written", 0)) == (0, [])
    run(store.trim_log("never-written", 10))
    assert run(store.read_log("never-written", 0)) == (0, [])


def test_trim_drops_old_entries_and_numbering_goes_on(store):
    for i in range(1, 6):
        run(store.append_log("l", b"e%d" % i))
    run(store.trim_log("l", 3))
    assert run(store.read_log("l", 0)) == (5, [(4, b"e4"), (5, b"e5")])  # first is not 1: fell behind
    run(store.trim_log("l", 2))  # already gone: nothing changes
    assert run(store.append_log("l", b"e6")) == 6
    assert run(store.read_log("l", 4)) == (6, [(5, b"e5"), (6, b"e6")])
    run(store.trim_log("l", 6))
    assert run(store.read_log("l", 0)) == (6, [])  # none returned although last > after
    assert run(store.append_log("l", b"e7")) == 7


def test_trim_reads_with_limit_start_at_oldest_kept_entry(store):
    for i in range(1, 11):
        run(store.append_log("l", b"e%d" % i))
    run(store.trim_log("l", 6))
    assert run(store.read_log("l", 0, limit=2)) == (10, [(7, b"e7"), (8, b"e8")])


def test_logs_are_separate_and_binary_safe(store):
    check_logs_are_separate_and_binary_safe(store, run)


def check_logs_are_separate_and_binary_safe(store, run) -> None:
    """Also run against a real redis-server (tests/integration/test_redis_store.py)."""
    entry = bytes(range(256)) * 200 + b"\x00"  # 50 KB with NUL bytes
    assert run(store.append_log("a", entry)) == 1
    assert run(store.append_log("b", bytearray(b"\x00\x00"))) == 1
    assert run(store.append_log("a", b"")) == 2
    assert run(store.read_log("a", 0)) == (2, [(1, entry), (2, b"")])
    last, entries = run(store.read_log("b", 0))
    assert (last, entries) == (1, [(1, b"\x00\x00")]) and type(entries[0][1]) is bytes


def test_logs_do_not_expire_and_delete_leaves_them(store, clock):
    run(store.append_log("k", b"entry"))
    run(store.set("k", b"value", ttl=1))
    clock.advance(10 * 365 * 86400)
    run(store.delete("k"))
    assert run(store.read_log("k", 0)) == (1, [(1, b"entry")])


def test_sqlite_two_objects_same_file_append_to_one_log(tmp_path, clock):
    path = tmp_path / "log.sqlite3"
    first, second = SqliteStore(path, clock=clock), SqliteStore(path, clock=clock)
    try:
        numbers = [run((first if i % 2 else second).append_log("l", b"%d" % i)) for i in range(10)]
        assert numbers == list(range(1, 11))
        expected = (10, [(n, b"%d" % (n - 1)) for n in numbers])
        assert run(first.read_log("l", 0)) == run(second.read_log("l", 0)) == expected
        run(second.trim_log("l", 4))
        assert run(first.read_log("l", 0))[1][0] == (5, b"4")
    finally:
        run(first.close())
        run(second.close())


def test_sqlite_concurrent_appends_through_separate_connections(tmp_path):
    """Each thread has its own connection to the file, as separate processes would."""
    path = tmp_path / "race.sqlite3"
    stores = [SqliteStore(path) for _ in range(4)]
    got: list[int] = []

    def writer(s: SqliteStore) -> None:
        async def append() -> list[int]:
            return [await s.append_log("l", b"x" * 1000) for _ in range(50)]

        got.extend(asyncio.run(append()))

    threads = [threading.Thread(target=writer, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(got) == list(range(1, 201))
        last, entries = run(stores[0].read_log("l", 0, limit=500))
        assert last == 200 and [n for n, _ in entries] == list(range(1, 201))
    finally:
        for s in stores:
            run(s.close())


def test_sqlite_log_after_close_raises_store_error(tmp_path):
    s = SqliteStore(tmp_path / "closed-log.sqlite3")
    run(s.close())
    with pytest.raises(StoreError):
        run(s.append_log("l", b"x"))
    with pytest.raises(StoreError):
        run(s.read_log("l", 0))


def test_a_read_sees_the_writes_issued_before_it(store):
    """Concurrent callers (a scorer counting a message, then reading its window) see the
    store in the order they called it (behaviour's rate counters rely on it; a store that
    queues writes, as RedisStore does, must keep that order)."""

    async def count_then_read() -> tuple[object, dict[str, float]]:
        return await asyncio.gather(store.incr_many({"rate:1": 1.0}), store.get_counters(["rate:1"]))

    assert run(count_then_read())[1] == {"rate:1": 1.0}
    assert run(count_then_read())[1] == {"rate:1": 2.0}


def test_together_awaits_an_inline_stores_calls_in_order_and_fails_as_gather_does(store):
    """Every call still runs when one fails before it, and the first error is raised."""

    async def boom():
        raise StoreError("first")

    async def calls():
        with pytest.raises(StoreError, match="first"):
            await together(store, boom(), store.incr_many({"after": 1.0}), store.set("later", b"x"))
        return await together(store, store.get_counters(["after"]), store.get("later"))

    assert store.answers_inline
    assert run(calls()) == [{"after": 1.0}, b"x"]


def test_together_gathers_the_calls_of_a_store_that_waits():
    events: list[str] = []

    class Waiting:  # a store whose calls wait for the network: they must be in flight together
        async def call(self, name: str) -> str:
            events.append(f"{name}-start")
            await asyncio.sleep(0)
            events.append(f"{name}-end")
            return name

    waiting = Waiting()
    assert run(together(waiting, waiting.call("a"), waiting.call("b"))) == ["a", "b"]
    assert events == ["a-start", "b-start", "a-end", "b-end"]


def test_shared_once_computes_inline_for_a_store_that_answers_inline(store):
    calls: list[str] = []

    async def lookup() -> str:
        calls.append("lookup")
        return "answer"

    async def failing() -> str:
        raise StoreError("down")

    async def scan() -> None:
        shared: dict = {}
        first = await shared_once(store, shared, "k", lookup)
        assert not isinstance(first, asyncio.Task) and first.done()  # no task, no turn of the loop
        assert shared["k"] is first and await asyncio.shield(first) == "answer" == await asyncio.shield(shared["k"])
        failed = await shared_once(store, shared, "bad", failing)
        with pytest.raises(StoreError, match="down"):
            await asyncio.shield(failed)

    run(scan())
    assert calls == ["lookup"]


def test_shared_once_runs_in_a_task_for_a_store_that_waits():
    class Waiting:  # answers_inline unset: its calls wait for the network
        pass

    async def lookup() -> str:
        await asyncio.sleep(0)
        return "answer"

    async def scan() -> None:
        shared: dict = {}
        task = await shared_once(Waiting(), shared, "k", lookup)
        assert isinstance(task, asyncio.Task) and not task.done()
        assert await asyncio.shield(task) == "answer"

    run(scan())
