"""RedisStore on a real Redis Cluster on loopback: three masters, three replicas.

What a cluster adds to tests/integration/test_redis_store.py: reads split by slot, scans whose
round trips stay bounded while they fan out to every master, several scanner nodes sharing
one cluster, a master killed (SIGKILL) that its replica replaces, and a frozen master. redis-server and
redis-cli are required: without them the fixture fails (scripts/system-deps installs them).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from mailguard import Config, Scanner
from mailguard.config import ScannerConfig, StoreConfig
from mailguard.errors import StoreError
from mailguard.reports.queue import ReportQueue
from mailguard.stores import open_store
from mailguard.stores.redis import RedisStore
from mailguard.testing import RedisClusterServers

from ..conftest import HAM_WORDS, SPAM_WORDS, make_message
from ..unit.test_stores import check_logs_are_separate_and_binary_safe

USER = "bob@example.net"
Run = Callable[[Any], Any]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    """One cluster for the module's tests that leave it whole (the failover test has its own)."""
    with RedisClusterServers() as running:
        yield running


@pytest.fixture()
def store(cluster: RedisClusterServers, run: Run, prefix: str) -> Iterator[RedisStore]:
    s = RedisStore(cluster.url, prefix=prefix)
    yield s
    run(s.close())


def masters(cluster: RedisClusterServers) -> list[redis.Redis]:
    """A plain client on each master (the nodes serving slots now)."""
    ports = sorted({n.port for n in cluster.nodes() if n.role == "master" and n.slots})
    return [redis.Redis(port=p) for p in ports]


def scanner_on(url: str, prefix: str, model: Any, **store: Any) -> Scanner:
    """A scanner node of its own on the cluster: default local scorers, no network."""
    config = Config(
        store=StoreConfig(backend="redis", url=url, prefix=prefix, **store), scanner=ScannerConfig(network=False)
    )
    return Scanner(config, model=model)


# -- the store on a cluster ---------------------------------------------------------------


def test_url_or_flag_selects_the_cluster_client(cluster, run, prefix):
    by_url = RedisStore(cluster.url, prefix=prefix)
    by_flag = open_store(StoreConfig(backend="redis", url=cluster.url.replace("redis+cluster", "redis"), prefix=prefix, cluster=True))
    assert by_url.cluster and isinstance(by_flag, RedisStore) and by_flag.cluster
    run(by_url.set("k", b"v"))
    assert run(by_flag.get("k")) == b"v"
    run(by_url.close())
    run(by_flag.close())


def test_counters_values_sets_across_every_master(store, run):
    amounts = {f"tok:{i}": float(i) for i in range(600)}
    run(store.incr_many(amounts, ttl=60))
    assert run(store.get_counters([*amounts, "absent"])) == amounts
    run(store.set_many({f"v{i}": b"%d" % i for i in range(50)}))
    assert run(store.get_many(["v3", "v49", "nope"])) == {"v3": b"3", "v49": b"49"}
    run(store.add_members({"s1": ["a", "b"], "s2": ["c"]}))
    run(store.remove_members({"s1": ["a"]}))
    assert run(store.get_members(["s1", "s2", "s3"])) == {"s1": {"b"}, "s2": {"c"}}
    run(store.delete("v3"))
    assert run(store.get("v3")) is None
    assert len(store.node_round_trips) == 3  # the keys are spread over every master


def test_reads_are_one_mget_per_slot(cluster, store, run, prefix):
    keys = [f"tok:{i}" for i in range(300)] + ["{alice}:a", "{alice}:b", "{alice}:c"]  # three keys on one slot
    run(store.incr_many({k: 1 for k in keys}))
    clients = masters(cluster)
    for client in clients:
        client.config_resetstat()
    before = store.round_trips
    assert run(store.get_counters(keys)) == {k: 1.0 for k in keys}
    assert store.round_trips - before == 1
    calls = sum(c.info("commandstats").get("cmdstat_mget", {}).get("calls", 0) for c in clients)
    slots = {key_slot(f"{prefix}c:{k}".encode()) for k in keys}
    assert len({key_slot(f"{prefix}c:{k}".encode()) for k in keys[-3:]}) == 1  # the tagged keys share a slot
    assert calls == len(slots)  # one MGET per slot (the random prefix decides how many collide)
    for client in clients:
        client.close()


def test_logs_keep_their_keys_on_one_slot(store, run):
    assert [run(store.append_log("bayes:{alice}:updates", b"e%d" % i)) for i in range(1, 4)] == [1, 2, 3]
    run(store.trim_log("bayes:{alice}:updates", 1))
    assert run(store.read_log("bayes:{alice}:updates", 0)) == (3, [(2, b"e2"), (3, b"e3")])
    check_logs_are_separate_and_binary_safe(store, run)


def test_concurrent_calls_share_one_pipeline_fanned_out_per_node(store, run):
    async def together():
        return await asyncio.gather(*(store.incr_many({f"c{i}": i}) for i in range(40)))

    before, nodes_before = store.round_trips, Counter(store.node_round_trips)
    run(together())
    assert store.round_trips - before == 1
    assert all(n == 1 for n in (store.node_round_trips - nodes_before).values())


def test_wrong_type_fails_only_its_caller(cluster, store, run, prefix):
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.live_ports()[0])
    client.set(f"{prefix}s:intruder", b"a string where a set belongs")
    client.close()

    async def batch():
        return await asyncio.gather(store.get_members(["intruder"]), store.get("other"), return_exceptions=True)

    wrong, fine = run(batch())
    assert isinstance(wrong, StoreError) and "WRONGTYPE" in str(wrong)
    assert fine is None


# -- scanner nodes on one cluster ----------------------------------------------------------


def test_two_scanner_nodes_share_what_they_learn(cluster, prefix, tiny_model):
    """A report on node A is seen by the next scan on node B (nothing but the cluster between them)."""
    message = make_message(SPAM_WORDS + HAM_WORDS, subject="quarterly figures", seed=7)
    with scanner_on(cluster.url, prefix, tiny_model) as a, scanner_on(cluster.url, prefix, tiny_model) as b:
        before = b.scan_sync(message, user=USER)
        outcome = a.report_sync(message, "spam", user=USER)
        after = b.scan_sync(message, user=USER)
        assert outcome.status == "new" and outcome.learned
        assert not before.failures and not after.failures
        assert after.score > before.score + 1.0, (before.score, after.score)
        assert b.report_sync(message, "spam", user=USER).status == "duplicate"  # B finds A's report too


def test_a_scan_costs_bounded_round_trips_per_node_and_slot(cluster, prefix, tiny_model, capsys):
    """Every local scorer, once the store has learned: the calls of a scan are coalesced into
    a few pipelines, and each reaches a node (and a slot) at most once."""
    with scanner_on(cluster.url, prefix, tiny_model) as scanner:
        store = scanner.store
        assert isinstance(store, RedisStore)
        for seed in range(3):  # the store learns senders, fingerprints, tokens and a user report
            scanner.learn_sync(make_message(SPAM_WORDS, seed=seed), "spam", user=USER)
        scanner.report_sync(make_message(SPAM_WORDS, seed=3), "spam", user=USER)
        per_scan = []
        for seed in range(4, 8):
            trips, nodes, slots = store.round_trips, Counter(store.node_round_trips), Counter(store.slot_round_trips)
            result = scanner.scan_sync(make_message(SPAM_WORDS, seed=seed), user=USER)
            assert not result.failures
            per_scan.append((store.round_trips - trips, store.node_round_trips - nodes, store.slot_round_trips - slots))
    with capsys.disabled():
        for trips, nodes, slots in per_scan:
            print(f"\nscan: {trips} round trips; per node {sorted(nodes.values())}; {len(slots)} slots, "
                  f"at most {max(slots.values())} per slot")
    for trips, nodes, slots in per_scan:
        assert trips <= 3
        assert len(nodes) == 3  # a scan reaches every master ...
        assert max(nodes.values()) <= trips and max(slots.values()) <= trips  # ... once per pipeline at most


# -- failover -------------------------------------------------------------------------------


def test_master_killed_fails_over_and_acknowledged_reports_survive(run, prefix, tiny_model):
    """SIGKILL the master holding a report acknowledged with WAIT 1: scans meanwhile report
    store failures and still end in a verdict; once the replica took over the report is there.
    The new master has no replica until the old one comes back, and writes to it are not
    acknowledged meanwhile; after the old master rejoins (as a replica) they are again."""
    message = make_message(SPAM_WORDS, subject="cheap offer", seed=11)
    with RedisClusterServers(node_timeout_ms=1000) as cluster:
        durable = {"wait_replicas": 1, "timeout": 2.0}  # WAIT gets 1 s: a loaded machine delays a replica's ack
        with scanner_on(cluster.url, prefix, tiny_model, **durable) as a, scanner_on(cluster.url, prefix, tiny_model, **durable) as b:
            assert not b.scan_sync(message, user=USER).failures
            outcome = a.report_sync(message, "spam", user=USER)
            assert outcome.status == "new"  # acknowledged: WAIT said a replica has every write
            victim = cluster.master_of(f"{prefix}v:report:rec:{outcome.digest}:{USER}")
            successor = cluster.replicas_of(victim)[0]
            cluster.kill(victim)

            meanwhile = []
            while not cluster.serving():  # polled: failover takes a few node timeouts
                meanwhile.append(b.scan_sync(message, user=USER))
                assert len(meanwhile) < 10_000, "no failover"
            assert meanwhile and all(r.verdict is not None for r in meanwhile)
            assert any(r.failures for r in meanwhile)
            failed = {f.scorer for r in meanwhile for f in r.failures}
            assert failed & {"reputation", "fingerprint", "bayes"}, failed
            assert cluster.master_of(f"{prefix}v:report:rec:{outcome.digest}:{USER}") == successor

            # the acknowledged report outlived its master (read-only: the new master has no replica yet)
            check = RedisStore(cluster.url, prefix=prefix, **durable)  # a fresh client: the new slot map
            kept = run(ReportQueue(check).get(outcome.digest, USER))
            assert kept is not None and kept.label == "spam"
            deadline = time.monotonic() + 30
            while True:  # B's client takes the new slot map after a failed call (at most one per pipeline)
                try:
                    assert b.report_sync(message, "spam", user=USER).status == "duplicate"
                    break
                except StoreError:
                    assert time.monotonic() < deadline, "node B did not recover after the failover"

            # a write to the master without a replica is not acknowledged ...
            key = next(f"k{i}" for i in range(1000) if cluster.master_of(f"{prefix}v:k{i}") == successor)
            with pytest.raises(StoreError, match="not acknowledged by 1 replica"):
                run(check.set(key, b"x"))
            # ... until the killed master is back, as its replica
            cluster.restart(victim)
            cluster.wait_until_serving(replicas=1)
            assert victim in cluster.replicas_of(successor)
            run(check.set(key, b"y"))
            assert run(check.get(key)) == b"y"
            # node A sat the failover out: its pipelines go by the old slot map until one fails
            # and redis-py refreshes it (at most once a second); none of them is acknowledged
            deadline = time.monotonic() + 30
            while a.scan_sync(message, user=USER).failures:
                assert time.monotonic() < deadline, "node A did not recover after the failover"
            assert a.report_sync(make_message(SPAM_WORDS, seed=12), "spam", user=USER).status == "new"
            run(check.close())


def test_frozen_master_times_out_and_the_next_call_gets_its_own_answer(run, prefix):
    """A master that stops answering (SIGSTOP) costs the pipeline its deadline, and the replies
    it sends once it wakes up are not taken for the next pipeline's. A long node timeout, so
    the cluster does not fail the frozen master over meanwhile."""
    with RedisClusterServers(node_timeout_ms=10_000) as cluster:
        store = RedisStore(cluster.url, prefix=prefix, timeout=0.3)
        keys = [f"k{i}" for i in range(30)]
        run(store.set_many({k: k.encode() for k in keys}))
        frozen = cluster.processes[cluster.master_of(f"{prefix}v:k0")]
        frozen.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(StoreError, match="no answer within 0.3 s"):
                run(store.get_many(keys))
        finally:
            frozen.send_signal(signal.SIGCONT)
        assert run(store.get_many(keys[::-1])) == {k: k.encode() for k in keys}
        assert run(store.get_counters(["none"])) == {} and run(store.get_members(["none"])) == {}
        run(store.close())
