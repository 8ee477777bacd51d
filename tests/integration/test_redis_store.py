"""RedisStore against a real redis-server on loopback.

First the Store behaviour that tests/unit/test_stores.py checks for MemoryStore and
SqliteStore (TTLs are checked with PTTL, or with real TTLs of a few milliseconds), then
what only a shared network store has: coalesced round trips, failure and recovery,
several nodes on one Redis, key prefixes, and an expiry on every key written with a TTL.

redis-server is required: without it the fixture fails (scripts/system-deps installs it).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import mailguard.stores.redis as redis_module
from mailguard import Config, Hit, Scanner, ScorerInfo
from mailguard.config import ScannerConfig, StoreConfig
from mailguard.errors import ConfigError, StoreError
from mailguard.scorers.bayes import BayesScorer
from mailguard.stores import Store, open_store
from mailguard.stores.redis import RedisStore
from mailguard.testing import RedisServer
from mailguard.testing.system import free_port

from ..unit.test_stores import check_logs_are_separate_and_binary_safe

from ..conftest import HAM_WORDS, make_message

EXPIRED = 0.15  # seconds slept after a TTL of a few ms: long enough on a loaded machine

Run = Callable[[Any], Any]


# -- the Store behaviour (as tests/unit/test_stores.py) ----------------------------------


def test_implements_store_protocol(store):
    assert isinstance(store, Store)


def test_incr_many_and_get_counters(store, run):
    run(store.incr_many({"a": 1, "b": 2.5}))
    run(store.incr_many({"a": 2, "c": -1}))
    assert run(store.get_counters(["a", "b", "c"])) == {"a": 3.0, "b": 2.5, "c": -1.0}


def test_missing_counters_left_out_and_empty_calls(store, run):
    run(store.incr_many({"present": 1}))
    assert run(store.get_counters(["absent", "present", "also-absent"])) == {"present": 1.0}
    before = store.round_trips
    run(store.incr_many({}))
    assert run(store.get_counters([])) == {} and run(store.get_many([])) == {} and run(store.get_members([])) == {}
    assert store.round_trips == before  # nothing to send, nothing sent


def test_many_keys(store, run):
    amounts = {f"bayes:tok:{i}": float(i) for i in range(1234)}
    run(store.incr_many(amounts))
    assert run(store.get_counters(list(amounts))) == amounts
    keys = [f"key{i}" for i in range(1234)]
    run(store.set_many({k: k.encode() for k in keys}))
    run(store.add_members({k: [k] for k in keys}))
    assert run(store.get_many(keys)) == {k: k.encode() for k in keys}
    assert run(store.get_members(keys)) == {k: {k} for k in keys}


def test_reads_of_many_keys_are_a_few_mgets(store, run, raw):
    present = {f"tok:{i}": float(i + 1) for i in range(0, 1300, 3)}
    run(store.incr_many(present))
    raw.config_resetstat()
    asked = [f"tok:{i}" for i in range(1300)]  # present and missing keys across chunk borders
    assert run(store.get_counters(asked)) == present
    stats = raw.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == -(-1300 // redis_module._MGET_KEYS)
    assert "cmdstat_get" not in stats


def test_huge_call_split_into_bounded_pipelines(store, run):
    n = redis_module._MAX_PIPELINE + 500  # one call bigger than a pipeline may be
    amounts = {f"k{i}": float(i) for i in range(n)}
    before = store.round_trips
    run(store.incr_many(amounts))  # 2n commands: INCRBYFLOAT + PERSIST per key
    assert store.round_trips - before == -(-2 * n // redis_module._MAX_PIPELINE)
    assert run(store.get_counters(list(amounts))) == amounts


def test_unicode_and_surrogate_keys_and_members(store, run):
    odd = "tok:\udcff\udc80"  # what surrogateescape makes of undecodable bytes
    run(store.incr_many({"tok:中文": 2, odd: 1}))
    assert run(store.get_counters(["tok:中文", odd])) == {"tok:中文": 2.0, odd: 1.0}
    run(store.add_members({"s:中文": ["成员", "\udcfe"]}))
    assert run(store.get_members(["s:中文"])) == {"s:中文": {"成员", "\udcfe"}}


def test_counter_ttl_is_set_and_expires(store, run, raw, prefix):
    run(store.incr_many({"k": 5}, ttl=10))
    assert 9_000 < raw.pttl(f"{prefix}c:k") <= 10_000
    run(store.incr_many({"short": 1}, ttl=0.005))
    time.sleep(EXPIRED)
    assert run(store.get_counters(["k", "short"])) == {"k": 5.0}


def test_counter_ttl_renewed_by_increment(store, run, raw, prefix):
    run(store.incr_many({"k": 1}, ttl=10))
    run(store.incr_many({"k": 1}, ttl=1000))
    assert raw.pttl(f"{prefix}c:k") > 10_000
    assert run(store.get_counters(["k"])) == {"k": 2.0}


def test_expired_counter_restarts_from_zero(store, run):
    run(store.incr_many({"k": 7}, ttl=0.005))
    time.sleep(EXPIRED)
    run(store.incr_many({"k": 1}, ttl=5))
    assert run(store.get_counters(["k"])) == {"k": 1.0}


def test_write_without_ttl_never_expires(store, run, raw, prefix):
    """As in SqliteStore, a write without a TTL leaves the key with none (even one that had one)."""
    run(store.incr_many({"k": 1}, ttl=10))
    run(store.incr_many({"k": 1}))
    run(store.add_members({"s": ["a"]}, ttl=10))
    run(store.add_members({"s": ["b"]}))
    run(store.set("v", b"x", ttl=10))
    run(store.set("v", b"y"))
    assert [raw.pttl(f"{prefix}{kind}:{key}") for kind, key in [("c", "k"), ("s", "s"), ("v", "v")]] == [-1, -1, -1]


def test_zero_ttl_writes_nothing_that_lives(store, run):
    run(store.incr_many({"c": 1}, ttl=0))
    run(store.set("v", b"x", ttl=0))
    run(store.add_members({"s": ["m"]}, ttl=0))
    assert run(store.get_counters(["c"])) == {} and run(store.get("v")) is None and run(store.get_members(["s"])) == {}


def test_ttl_must_be_finite(store, run):
    with pytest.raises(StoreError, match="finite"):
        run(store.set("v", b"x", ttl=float("inf")))


def test_kv_set_get_overwrite_delete(store, run):
    assert run(store.get("k")) is None
    run(store.set("k", b"one"))
    assert run(store.get("k")) == b"one"
    run(store.set("k", b"\x00\xff binary"))
    assert run(store.get("k")) == b"\x00\xff binary"
    run(store.delete("k"))
    assert run(store.get("k")) is None


def test_kv_accepts_bytearray(store, run):
    run(store.set("k", bytearray(b"abc")))
    value = run(store.get("k"))
    assert value == b"abc" and isinstance(value, bytes)


def test_delete_removes_every_kind_and_missing_is_fine(store, run):
    run(store.delete("never-set"))
    run(store.incr_many({"k": 3}))
    run(store.set("k", b"v"))
    run(store.add_members({"k": ["a"]}))
    run(store.delete("k"))
    assert run(store.get_counters(["k"])) == {} and run(store.get("k")) is None and run(store.get_members(["k"])) == {}


def test_kv_counters_and_sets_are_separate(store, run):
    run(store.set("same", b"v"))
    run(store.incr_many({"same": 4}))
    run(store.add_members({"same": ["m"]}))
    assert run(store.get("same")) == b"v"
    assert run(store.get_counters(["same"])) == {"same": 4.0}
    assert run(store.get_members(["same"])) == {"same": {"m"}}


def test_kv_ttl(store, run, raw, prefix):
    run(store.set("k", b"v", ttl=30))
    assert 29_000 < raw.pttl(f"{prefix}v:k") <= 30_000
    run(store.set_many({"gone": b"v"}, ttl=0.005))
    time.sleep(EXPIRED)
    assert run(store.get_many(["k", "gone"])) == {"k": b"v"}


def test_get_many_and_set_many(store, run):
    run(store.set_many({"k1": b"one", "k2": b"two"}, ttl=10))
    run(store.set("k3", b"three"))
    assert run(store.get_many(["k1", "k2", "k3", "nope"])) == {"k1": b"one", "k2": b"two", "k3": b"three"}


def test_sets_add_read_remove(store, run):
    run(store.add_members({"s1": ["a", "b"], "s2": ["x"], "empty": []}))
    run(store.add_members({"s1": ["b", "c"]}))
    assert run(store.get_members(["s1", "s2", "s3", "empty"])) == {"s1": {"a", "b", "c"}, "s2": {"x"}}
    run(store.remove_members({"s1": ["a", "zzz"], "s2": ["x"], "s3": []}))
    assert run(store.get_members(["s1", "s2"])) == {"s1": {"b", "c"}}


def test_set_ttl_renews_whole_set_and_expired_set_restarts_empty(store, run, raw, prefix):
    run(store.add_members({"s": ["old"]}, ttl=10))
    run(store.add_members({"s": ["new"]}, ttl=1000))  # renews "old" as well
    assert raw.pttl(f"{prefix}s:s") > 10_000
    assert run(store.get_members(["s"])) == {"s": {"old", "new"}}
    run(store.add_members({"t": ["old"]}, ttl=0.005))
    time.sleep(EXPIRED)
    assert run(store.get_members(["t"])) == {}
    run(store.add_members({"t": ["fresh"]}, ttl=10))
    assert run(store.get_members(["t"])) == {"t": {"fresh"}}


# -- logs --------------------------------------------------------------------------------


def test_log_numbers_entries_from_one_and_reads_the_rest_in_order(store, run):
    assert [run(store.append_log("updates", f"e{i}".encode())) for i in range(1, 6)] == [1, 2, 3, 4, 5]
    assert run(store.read_log("updates", 0)) == (5, [(i, f"e{i}".encode()) for i in range(1, 6)])
    assert run(store.read_log("updates", 3)) == (5, [(4, b"e4"), (5, b"e5")])
    assert run(store.read_log("updates", 5)) == (5, [])
    assert run(store.read_log("updates", 9)) == (5, [])


def test_log_read_limit(store, run):
    for i in range(1, 8):
        run(store.append_log("l", bytes([i])))
    assert run(store.read_log("l", 2, limit=3)) == (7, [(3, b"\x03"), (4, b"\x04"), (5, b"\x05")])
    assert run(store.read_log("l", 5, limit=3)) == (7, [(6, b"\x06"), (7, b"\x07")])
    assert run(store.read_log("l", 0, limit=0)) == (7, [])


def test_unknown_log_is_empty_and_writes_nothing(store, run, raw, prefix):
    assert run(store.read_log("never-written", 0)) == (0, [])
    run(store.trim_log("never-written", 10))
    assert run(store.read_log("never-written", 0)) == (0, [])
    assert raw.keys(f"{prefix}*") == []


def test_trim_drops_old_entries_and_numbering_goes_on(store, run):
    for i in range(1, 6):
        run(store.append_log("l", b"e%d" % i))
    run(store.trim_log("l", 3))
    assert run(store.read_log("l", 0)) == (5, [(4, b"e4"), (5, b"e5")])
    run(store.trim_log("l", 2))
    assert run(store.append_log("l", b"e6")) == 6
    assert run(store.read_log("l", 4)) == (6, [(5, b"e5"), (6, b"e6")])
    run(store.trim_log("l", 6))
    assert run(store.read_log("l", 0)) == (6, [])
    assert run(store.append_log("l", b"e7")) == 7


def test_trim_reads_with_limit_start_at_oldest_kept_entry(store, run):
    for i in range(1, 11):
        run(store.append_log("l", b"e%d" % i))
    run(store.trim_log("l", 6))
    assert run(store.read_log("l", 0, limit=2)) == (10, [(7, b"e7"), (8, b"e8")])


def test_trim_in_chunks_from_the_mark_and_never_past_the_head(store, run, raw, prefix):
    async def fill(n: int) -> list[int]:
        return list(await asyncio.gather(*(store.append_log("l", b"%d" % i) for i in range(n))))

    assert run(fill(2500)) == list(range(1, 2501))
    entries = f"{prefix}l:{{l}}:entries"
    run(store.trim_log("l", 2100))  # three HDELs of up to 1000 numbers
    assert raw.hlen(entries) == 400 and raw.get(f"{prefix}l:{{l}}:trimmed") == b"2100"
    raw.config_resetstat()
    run(store.trim_log("l", 2100))  # nothing more to delete: no HDEL at all
    assert "cmdstat_hdel" not in raw.info("commandstats")
    run(store.trim_log("l", 10**9))  # past the head: only what exists goes
    assert raw.exists(entries) == 0 and raw.get(f"{prefix}l:{{l}}:trimmed") == b"2500"
    assert run(store.append_log("l", b"next")) == 2501
    assert run(store.read_log("l", 0)) == (2501, [(2501, b"next")])


def test_logs_are_separate_and_binary_safe(store, run):
    check_logs_are_separate_and_binary_safe(store, run)


def test_logs_never_expire_and_delete_leaves_them(store, run, raw, prefix):
    run(store.append_log("k", b"entry"))
    run(store.trim_log("k", 0))
    run(store.set("k", b"value", ttl=60))
    run(store.delete("k"))
    assert run(store.read_log("k", 0)) == (1, [(1, b"entry")])
    keys = raw.keys(f"{prefix}l:*")
    assert len(keys) == 2 and all(raw.pttl(key) == -1 for key in keys)  # head, entries (no trim happened)


def test_reading_an_empty_tail_is_one_round_trip(store, run, raw):
    run(store.append_log("l", b"x"))
    before = store.round_trips
    raw.config_resetstat()
    assert run(store.read_log("l", 1)) == (1, [])
    assert store.round_trips - before == 1
    stats = raw.info("commandstats")  # (counts the script's own calls too)
    assert stats["cmdstat_eval"]["calls"] == 1 and stats["cmdstat_get"]["calls"] == 2  # head, trimmed mark
    assert "cmdstat_hget" not in stats


def test_log_read_joins_the_scan_pipeline(store, run):
    run(store.append_log("l", b"x"))

    async def together():
        return await asyncio.gather(store.read_log("l", 0), store.get_counters(["c"]), store.get("v"))

    before = store.round_trips
    assert run(together()) == [(1, [(1, b"x")]), {}, None]
    assert store.round_trips - before == 1


def test_two_nodes_append_concurrently_without_gaps(server, run, prefix):
    first, second = RedisStore(server.url, prefix=prefix), RedisStore(server.url, prefix=prefix)

    async def node(s: RedisStore, tag: bytes) -> list[int]:
        numbers = []
        for batch in range(10):  # several pipelines, interleaved with the other node's
            numbers += await asyncio.gather(*(s.append_log("l", tag + b"%d" % i) for i in range(20)))
        return numbers

    async def both():
        return await asyncio.gather(node(first, b"A"), node(second, b"B"))

    from_first, from_second = run(both())
    assert sorted(from_first + from_second) == list(range(1, 401))
    last, entries = run(second.read_log("l", 0, limit=1000))
    assert last == 400 and [n for n, _ in entries] == list(range(1, 401))
    assert {n for n, e in entries if e.startswith(b"A")} == set(from_first)
    run(first.close())
    run(second.close())


def test_log_keys_share_one_hash_slot(store, run, raw, prefix):
    for name in ["plain", "bayes:{alice}:updates", "odd}name", "odd{name", "{}empty-tag"]:
        run(store.append_log(name, b"x"))
        run(store.trim_log(name, 1))
        run(store.append_log(name, b"y"))
    keys = [k.decode() for k in raw.keys(f"{prefix}l:*")]
    assert len(keys) == 5 * 3  # head, entries and trimmed of each
    slots: dict[str, set[int]] = {}
    for key in keys:
        slots.setdefault(key.rpartition(":")[0], set()).add(key_slot(key.encode()))
    assert all(len(found) == 1 for found in slots.values()), slots
    assert key_slot(f"{prefix}l:bayes:{{alice}}:updates:head".encode()) == key_slot(b"{alice}")  # the caller's tag
    assert f"{prefix}l:{{plain}}:entries" in keys


# -- coalescing -----------------------------------------------------------------------------


def test_concurrent_calls_in_one_tick_cost_one_round_trip(store, run):
    run(store.incr_many({"c": 1}))
    run(store.set("v", b"x"))
    run(store.add_members({"s": ["m"]}))

    async def together():
        return await asyncio.gather(
            store.get_counters(["c", "nope"]),
            store.get_many(["v"]),
            store.get_members(["s"]),
            store.incr_many({"c": 2}, ttl=60),
            store.set_many({"w": b"y"}),
            store.add_members({"s": ["n"]}),
            store.get("v"),
            store.get_counters(["c"]),  # queued after the increment, so it sees it
        )

    before = store.round_trips
    results = run(together())
    assert store.round_trips - before == 1
    assert results == [{"c": 1.0}, {"v": b"x"}, {"s": {"m"}}, None, None, None, b"x", {"c": 3.0}]
    before = store.round_trips
    run(store.get("v"))
    run(store.get("w"))
    assert store.round_trips - before == 2  # one after another: one each


def test_each_tick_makes_one_pipeline(store, run):
    """Five tasks that each make two calls in a row: two round trips in all, not ten."""

    async def worker(i: int) -> float:
        await store.incr_many({f"w{i}": i})
        return (await store.get_counters([f"w{i}"]))[f"w{i}"]

    async def main():
        return await asyncio.gather(*(worker(i) for i in range(5)))

    before = store.round_trips
    assert run(main()) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert store.round_trips - before == 2


class StoreProbe:
    """A scorer that reads the store twice in a row, as a reputation lookup would."""

    def __init__(self, name: str, store: Store) -> None:
        self.name, self.store = name, store
        self.info = ScorerInfo(group=name, symbols={"PROBE": ""}, default_weights={"PROBE": 0.0})

    async def score(self, ctx) -> list[Hit]:
        seen = await self.store.get_counters([f"probe:{self.name}"])
        await self.store.get_members([f"probe:{self.name}:set"])
        return [Hit("PROBE", 0.0, f"{len(seen)}")]


def test_one_scan_of_many_scorers_costs_three_round_trips(server, prefix, tiny_model):
    """Bayes (two reads in a row, once it has learned), five probes (two reads each), then the
    policy's read of the user's thresholds: 11 reads, three round trips a scan."""
    store = RedisStore(server.url, prefix=prefix)
    scorers = [BayesScorer(tiny_model.bayes, store), *(StoreProbe(f"probe{i}", store) for i in range(5))]
    config = Config(store=StoreConfig(backend="memory"), scanner=ScannerConfig(scorers=(), network=False))
    with Scanner(config, store=store, model=tiny_model, scorers=scorers) as scanner:
        assert scanner.learn_sync(make_message(HAM_WORDS, seed=1), "ham")  # bayes now has counts to read
        per_scan = []
        for seed in range(3):
            before = store.round_trips
            result = scanner.scan_sync(make_message(HAM_WORDS, seed=seed + 2), user="bob@example.net")
            per_scan.append(store.round_trips - before)
            assert not result.failures
    assert all(n <= 3 for n in per_scan), per_scan


# -- failures ------------------------------------------------------------------------------


def test_redis_down_mid_use_then_back(run, prefix):
    with RedisServer() as own:
        store = RedisStore(own.url, prefix=prefix, timeout=0.5)
        run(store.incr_many({"c": 1}))
        own.stop()

        async def batch():
            return await asyncio.gather(
                store.get_counters(["c"]), store.set("v", b"x"), store.get_members(["s"]), return_exceptions=True
            )

        started = time.monotonic()
        errors = run(batch())
        assert time.monotonic() - started < 1.0  # refused at once, no backoff
        assert [type(e) for e in errors] == [StoreError] * 3
        assert all(own.url in str(e) for e in errors)
        with pytest.raises(StoreError):
            run(store.incr_many({"c": 1}))
        own.start()  # same port, empty (no persistence)
        run(store.incr_many({"c": 2}))
        assert run(store.get_counters(["c"])) == {"c": 2.0}
        run(store.close())


def test_restart_between_calls_is_invisible(run, prefix):
    """Pooled sockets go stale when Redis restarts; the next call reconnects by itself."""
    with RedisServer() as own:
        store = RedisStore(own.url, prefix=prefix)
        run(store.set("v", b"x"))
        own.stop()
        own.start()
        run(store.set("v", b"y"))
        assert run(store.get("v")) == b"y"
        run(store.close())


def test_silent_server_times_out_as_store_error(run):
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        store = RedisStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.2)
        started = time.monotonic()
        with pytest.raises(StoreError, match="Timeout"):
            run(store.get("k"))
        assert time.monotonic() - started < 2.0
        run(store.close())


def test_frozen_server_times_out_and_the_next_call_gets_its_own_answer(run, prefix):
    """A pipeline cut off by its deadline must not leave replies behind for the next one."""
    with RedisServer() as own:
        store = RedisStore(own.url, prefix=prefix, timeout=0.3)
        run(store.set_many({"a": b"A", "b": b"B"}))
        own.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="no answer within 0.3 s"):
                run(store.get_many(["a"]))
            assert time.monotonic() - started < 2.0
        finally:
            own.process.send_signal(signal.SIGCONT)
        assert run(store.get_many(["b"])) == {"b": b"B"}
        assert run(store.get_counters(["none"])) == {}
        run(store.close())


def test_wait_replicas_without_a_replica_fails_only_the_writers(run, prefix):
    """WAIT 1 on a server with no replica: the write happened on the master but is not
    acknowledged (its caller gets a StoreError); reads in the same pipeline are answered.
    The store's deadline is generous (WAIT's own is half of it): a busy machine must not
    turn the missing replica into a timeout."""
    with RedisServer() as own:
        plain = RedisStore(own.url, prefix=prefix)
        store = RedisStore(own.url, prefix=prefix, timeout=2.0, wait_replicas=1)
        try:
            run(plain.set("r", b"read me"))

            async def batch():
                return await asyncio.gather(store.get("r"), store.set("w", b"x"), return_exceptions=True)

            read, written = run(batch())
            assert read == b"read me"
            assert isinstance(written, StoreError) and "not acknowledged by 1 replica(s) within 1000 ms (WAIT: 0" in str(written)
            assert run(store.get("w")) == b"x"  # on the master all the same: it may or may not survive a failover
            with pytest.raises(StoreError, match="not acknowledged"):
                run(store.append_log("l", b"entry"))
            assert run(store.read_log("l", 0)) == (1, [(1, b"entry")])  # the log read script is not a write
        finally:
            run(store.close())
            run(plain.close())


def test_error_hides_the_password(run):
    store = RedisStore(f"redis://user:s3cret@127.0.0.1:{free_port()}/0?password=s3cret")
    with pytest.raises(StoreError) as caught:
        run(store.get("k"))
    assert "s3cret" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    run(store.close())


def test_wrong_type_fails_only_its_caller(store, run, raw, prefix):
    raw.set(f"{prefix}s:intruder", b"a string where a set belongs")
    raw.set(f"{prefix}c:garbage", b"not a number")

    async def batch():
        return await asyncio.gather(store.get_members(["intruder"]), store.get("other"), return_exceptions=True)

    wrong, fine = run(batch())
    assert isinstance(wrong, StoreError) and "WRONGTYPE" in str(wrong)
    assert fine is None
    with pytest.raises(StoreError, match="not a number"):
        run(store.get_counters(["garbage"]))


def test_cancelled_caller_leaves_the_batch_intact(store, run):
    async def main():
        doomed = asyncio.ensure_future(store.get("a"))
        kept = asyncio.ensure_future(store.incr_many({"c": 1}))
        await asyncio.sleep(0)  # both queued
        doomed.cancel()
        await kept
        return await store.get_counters(["c"])

    assert run(main()) == {"c": 1.0}


def test_closed_store_refuses_and_close_twice_is_fine(server, run):
    store = RedisStore(server.url)
    run(store.set("health", b"ok", ttl=5))
    run(store.close())
    run(store.close())
    with pytest.raises(StoreError, match="closed"):
        run(store.get("health"))


def test_close_lets_queued_calls_finish(server, run, prefix):
    store = RedisStore(server.url, prefix=prefix)

    async def main():
        pending = asyncio.ensure_future(store.set("v", b"x"))
        await asyncio.sleep(0)  # queued, not yet sent
        await store.close()
        return await pending

    run(main())
    check = RedisStore(server.url, prefix=prefix)
    assert run(check.get("v")) == b"x"
    run(check.close())


def test_second_event_loop_is_refused(store, run):
    run(store.set("v", b"x"))
    with pytest.raises(StoreError, match="event loop"):
        asyncio.run(store.get("v"))
    assert run(store.get("v")) == b"x"


# -- several nodes, prefixes, expiry ------------------------------------------------------


def test_two_nodes_share_data(server, run, prefix):
    first, second = RedisStore(server.url, prefix=prefix), RedisStore(server.url, prefix=prefix)

    async def both():
        await asyncio.gather(first.incr_many({"c": 1}), second.incr_many({"c": 2}))
        await second.set("k", b"from second")
        await first.add_members({"s": ["from first"]})
        return await asyncio.gather(first.get_counters(["c"]), first.get("k"), second.get_members(["s"]))

    assert run(both()) == [{"c": 3.0}, b"from second", {"s": {"from first"}}]
    run(first.delete("k"))
    assert run(second.get("k")) is None
    run(first.close())
    run(second.close())


def test_prefix_isolates_products(server, run, raw):
    ours, theirs = RedisStore(server.url, prefix="mgA:"), RedisStore(server.url, prefix="other-product:")
    raw.delete("mgA:c:c", "other-product:c:c", "mgA:v:k")
    run(ours.incr_many({"c": 1}))
    run(theirs.incr_many({"c": 5}))
    run(ours.set("k", b"ours"))
    assert run(ours.get_counters(["c"])) == {"c": 1.0} and run(theirs.get_counters(["c"])) == {"c": 5.0}
    assert run(theirs.get("k")) is None
    assert sorted(raw.keys("mgA:*")) == [b"mgA:c:c", b"mgA:v:k"]
    run(ours.delete("k"))
    run(ours.delete("c"))
    run(theirs.delete("c"))
    assert raw.keys("mgA:*") == [] and raw.keys("other-product:*") == []
    run(ours.close())
    run(theirs.close())


def test_every_key_written_with_a_ttl_expires(store, run, raw, prefix):
    """No Redis memory that grows forever: each key a TTL write touched has an expiry."""
    run(store.incr_many({f"tok{i}": 1 for i in range(50)}, ttl=3600))
    run(store.set_many({f"v{i}": b"x" for i in range(20)}, ttl=600))
    run(store.set("one", b"x", ttl=60))
    run(store.add_members({f"s{i}": ["a", "b"] for i in range(10)}, ttl=86400))
    run(store.remove_members({"s0": ["a"]}))  # removing keeps the expiry
    keys = list(raw.scan_iter(match=f"{prefix}*", count=1000))
    assert len(keys) == 50 + 20 + 1 + 10
    assert all(raw.pttl(key) > 0 for key in keys)


# -- configuration ------------------------------------------------------------------------


def test_open_store_redis(server, run, prefix):
    store = open_store(StoreConfig(backend="redis", url=server.url, prefix=prefix, timeout=0.5))
    assert isinstance(store, RedisStore) and store.timeout == 0.5
    run(store.set("k", b"v"))
    assert run(store.get("k")) == b"v"
    run(store.close())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (StoreConfig(backend="redis"), "needs a url"),
        (StoreConfig(backend="redis", url="http://127.0.0.1/"), "not a Redis URL"),
        (StoreConfig(backend="redis", url="redis://127.0.0.1:6379/0", prefix="{mg}:"), "braces"),
        (StoreConfig(backend="redis", url="redis://127.0.0.1:6379/0", timeout=0.0), "timeout"),
        (StoreConfig(backend="redis-cluster", url="redis://127.0.0.1:6379/0"), "'sqlite', 'redis' or 'memory'"),
    ],
)
def test_open_store_redis_config_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        open_store(config)


def test_unix_socket_url_accepted():
    store = open_store(StoreConfig(backend="redis", url="unix:///run/redis/redis.sock"))
    assert isinstance(store, RedisStore)


def test_missing_redis_py_is_a_config_error(monkeypatch):
    monkeypatch.delitem(sys.modules, "mailguard.stores.redis")
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    with pytest.raises(ConfigError, match=r"mailguard\[redis\]"):
        open_store(StoreConfig(backend="redis", url="redis://127.0.0.1:6379/0"))
