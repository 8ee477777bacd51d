"""Fuzzy fingerprint benchmark: lookup latency and memory on a real redis-server, and how
well the LSH bands find near-duplicates.

    python benchmarks/fingerprint.py [--count 100000 1000000] [--lookups 1000] [--pairs 300] [--cluster]

For each count: a fresh private redis-server (mailguard.testing.RedisServer) is filled with
that many synthetic fingerprints (random numpy signatures, written straight into the
scorer's key layout under RedisStore's prefixes, 17 commands each, over one raw pipelined
socket), then 300 real texts are learned through the scorer, and the scorer's whole
``score()`` path (normalise, min-hash, LSH, RedisStore round trips, bulk write) is timed for

  (a) a near-duplicate of a learned text (other numbers and URL, a few words changed),
  (a') a near-duplicate of a synthetic fingerprint (signature given: store path only),
  (b) an unseen text.

Memory per stored fingerprint is INFO used_memory after the load minus before, divided by
the count. The scanning process is pinned to one core; redis-server runs on the other.
With ``--cluster`` each count also runs on a private Redis Cluster (3 masters, 3 replicas,
mailguard.testing.RedisClusterServers): the load writes each key to the master of its slot,
memory is summed over the masters (the replicas hold as much again), and the round trips a
lookup costs are also counted per node.
Then, with no Redis, recall of several bands x rows choices on synthetic text pairs binned
by their exact 3-shingle Jaccard similarity.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import redis
from redis.crc import key_slot
from common import pin_one_core

from mailguard.scorers import minhash as fp
from mailguard.message import Envelope, MessageContext
from mailguard.scorers.fingerprint import FingerprintScorer, Settings, _Fingerprint, _Record  # the layout's own code
from mailguard.stores.redis import RedisStore
from mailguard.testing import RedisClusterServers, RedisServer

PREFIX = "mg:"  # RedisStore's default
TTL_MS = 30 * 86400 * 1000
VOCAB = [f"{a}{b}{c}" for a in "bcdfghjklmnprstvwz" for b in "aeiou" for c in ("", "n", "r", "st", "l", "m")]


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class _Writer:
    """One raw pipelined socket to a node; a thread drains the replies as they come, so Redis
    never buffers them, and counts lines and errors."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.batch: list[bytes] = []
        self.sent = 0
        self.expected: int | None = None  # known once everything is sent
        self.lines = self.errors = 0
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        tail = b""
        self.sock.settimeout(0.2)  # wakes up to see whether ``expected`` is known and met
        while self.expected is None or self.lines < self.expected:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                break
            self.lines += data.count(b"\r\n")
            self.errors += (tail + data).count(b"\r\n-")
            tail = data[-2:]

    def add(self, commands: bytes, n: int) -> None:
        self.batch.append(commands)
        self.sent += n
        if len(self.batch) >= 20_000:
            self.flush()

    def flush(self) -> None:
        self.sock.sendall(b"".join(self.batch))
        self.batch.clear()

    def finish(self) -> tuple[int, int, int]:
        self.flush()
        self.expected = self.sent
        self.reader.join()
        self.sock.close()
        return self.lines, self.sent, self.errors


def load_synthetic(port_of: Callable[[bytes], int], count: int, seed: int = 1) -> tuple[np.ndarray, float]:
    """Write ``count`` random fingerprints in the scorer's layout, each key to the node
    ``port_of`` names (one server: always the same); returns (signatures, seconds)."""
    rng = np.random.default_rng(seed)
    sigs = rng.integers(0, 2**32, size=(count, fp.NUM_PERM), dtype=np.uint32)
    ttl = str(TTL_MS).encode()
    writers: dict[int, _Writer] = {}

    def send(key: bytes, commands: bytes, n: int) -> None:
        port = port_of(key)
        if port not in writers:
            writers[port] = _Writer(port)
        writers[port].add(commands, n)

    started = time.perf_counter()
    for i in range(count):
        sig = sigs[i]
        fid = str(fp.fingerprint_id(sig)).encode()
        record = _Record("spam", 1, 1, sig).pack()
        key = f"{PREFIX}v:fz:f:".encode() + fid
        send(key, resp(b"SET", key, record, b"PX", ttl), 1)
        for band in fp.band_hashes(sig):
            key = f"{PREFIX}s:fz:b:{band:016x}".encode()
            send(key, resp(b"SADD", key, fid) + resp(b"PEXPIRE", key, ttl), 2)
    for port, writer in writers.items():
        lines, sent, errors = writer.finish()
        if lines != sent or errors:
            raise RuntimeError(f"load on port {port}: {lines} of {sent} replies, {errors} errors")
    return sigs, time.perf_counter() - started


def cluster_router(cluster: RedisClusterServers) -> Callable[[bytes], int]:
    """Key -> port of the master serving its slot, from the cluster's own slot table."""
    owner = np.zeros(16384, dtype=np.int32)
    for node in cluster.nodes():
        for first, last in node.slots if node.role == "master" else ():
            owner[first : last + 1] = node.port
    return lambda key: int(owner[key_slot(key)])


def text(rng: random.Random, n: int = 150) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def near_duplicate(body: str, rng: random.Random, changes: int = 3) -> str:
    words = body.split()
    for _ in range(changes):
        words[rng.randrange(len(words))] = rng.choice(VOCAB) + "q"
    return f"Order {rng.randint(1, 99999)}: " + " ".join(words) + f" https://t{rng.randint(1, 999)}.example.com/{rng.random()}"


class GivenSignature(FingerprintScorer):
    """The scorer with the text step skipped: the signature comes with the message."""

    given: dict[int, _Fingerprint] = {}

    def fingerprint(self, ctx: MessageContext) -> _Fingerprint | None:
        return self.given.get(id(ctx))


def percentiles(seconds: list[float]) -> tuple[float, float]:
    a = np.array(seconds) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


async def timed(
    scorers: list[FingerprintScorer], kinds: list[list[MessageContext]], symbol: str
) -> list[tuple[list[float], float, float, float]]:
    """Seconds per score() for each kind of lookup, interleaved (one of each in turn) so that
    every kind sees the same load on this shared machine; with the share that hit ``symbol``,
    the store round trips per lookup and the requests to nodes they made (one server: the same;
    a cluster: one per master a round trip reached)."""
    times: list[list[float]] = [[] for _ in kinds]
    found = [0] * len(kinds)
    trips = [0] * len(kinds)
    node_trips = [0] * len(kinds)
    for i in range(min(len(k) for k in kinds)):
        for k, (scorer, contexts) in enumerate(zip(scorers, kinds)):
            store: RedisStore = scorer.store  # type: ignore[assignment]
            before, nodes_before = store.round_trips, sum(store.node_round_trips.values())
            started = time.perf_counter()
            hits = await scorer.score(contexts[i])
            times[k].append(time.perf_counter() - started)
            trips[k] += store.round_trips - before
            node_trips[k] += sum(store.node_round_trips.values()) - nodes_before
            found[k] += any(h.symbol == symbol for h in hits)
    return [(t, f / len(t), r / len(t), n / len(t)) for t, f, r, n in zip(times, found, trips, node_trips)]


def run_count(count: int, lookups: int, cores: set[int], cluster: bool = False) -> dict[str, object]:
    os.sched_setaffinity(0, cores)  # redis-server inherits this: let it have every core
    servers: AbstractContextManager[RedisServer | RedisClusterServers] = RedisClusterServers() if cluster else RedisServer()
    with servers as server:
        pin_one_core()  # after redis-server started: it keeps both cores
        if isinstance(server, RedisClusterServers):
            ports = sorted({n.port for n in server.nodes() if n.role == "master" and n.slots})
            port_of = cluster_router(server)
        else:
            assert server.port is not None
            ports, single = [server.port], server.port
            port_of = lambda key: single  # noqa: E731
        clients = [redis.Redis(port=p) for p in ports]
        before = sum(int(c.info("memory")["used_memory"]) for c in clients)
        sigs, load_seconds = load_synthetic(port_of, count)
        after = sum(int(c.info("memory")["used_memory"]) for c in clients)
        keys = sum(int(c.dbsize()) for c in clients)
        rng = random.Random(count)
        learned = [text(rng) for _ in range(300)]

        async def measure() -> dict[str, object]:
            store = RedisStore(server.url, prefix=PREFIX, timeout=5.0)
            scorer = FingerprintScorer(store, Settings())
            given = GivenSignature(store, Settings())
            for i, body in enumerate(learned):
                await scorer.learn(MessageContext(_mail(body, i)), "spam", source="train")
            near, unseen, synthetic = [], [], []
            for i in range(lookups):
                envelope = Envelope(rcpt_to=(f"user{i}@example.net",))
                near.append(MessageContext(_mail(near_duplicate(learned[i % len(learned)], rng), 10_000 + i), envelope))
                unseen.append(MessageContext(_mail(text(rng), 20_000 + i), envelope))
                sig = sigs[rng.randrange(count)].copy()
                sig[rng.sample(range(fp.NUM_PERM), 4)] = rng.getrandbits(32)  # about 0.88 similar
                ctx = MessageContext(b"Subject: x\r\n\r\nx\r\n", envelope)
                GivenSignature.given[id(ctx)] = _Fingerprint(sig, fp.fingerprint_id(sig), tuple(f"{h:016x}" for h in fp.band_hashes(sig)))
                synthetic.append(ctx)
            for ctx in near + unseen:
                _ = ctx.text  # MIME parsing is not the fingerprint's cost
            warm = [MessageContext(_mail(text(rng), 30_000 + i)) for i in range(50)]
            await timed([scorer], [warm], "FUZZY_SPAM")
            near_r, unseen_r, synth_r = await timed([scorer, scorer, given], [near, unseen, synthetic], "FUZZY_SPAM")
            text_only = []
            for ctx in unseen[:200]:
                started = time.perf_counter()
                fp.signature_of_text(ctx.text)
                text_only.append(time.perf_counter() - started)
            await store.close()
            return {
                "near": (percentiles(near_r[0]), *near_r[1:]),
                "synthetic": (percentiles(synth_r[0]), *synth_r[1:]),
                "unseen": (percentiles(unseen_r[0]), *unseen_r[1:]),
                "text": percentiles(text_only),
            }

        result = asyncio.run(measure())
        for c in clients:
            c.close()
    return {"count": count, "where": "cluster 3+3" if cluster else "one server", "load_s": load_seconds, "bytes_per_fp": (after - before) / count, "keys": keys, **result}


def _mail(body: str, seed: int) -> bytes:
    return f"From: a@example.org\r\nSubject: offer {seed}\r\nMessage-ID: <{seed}@example.org>\r\n\r\n{body}\r\n".encode()


# -- recall of the banding -----------------------------------------------------------------


def exact_jaccard(a: list[str], b: list[str]) -> float:
    sa = {tuple(a[i : i + 3]) for i in range(len(a) - 2)}
    sb = {tuple(b[i : i + 3]) for i in range(len(b) - 2)}
    return len(sa & sb) / len(sa | sb)


def pairs_near(target: float, n: int, rng: random.Random, width: float = 0.03) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """``n`` text pairs whose exact shingle Jaccard is within ``width`` of ``target``."""
    out = []
    while len(out) < n:
        base = [rng.choice(VOCAB) for _ in range(200)]
        other = list(base)
        changes = max(0, int(round(200 * (1 - target) / (3 * (1 + target)) + rng.uniform(-2, 2))))
        for _ in range(changes):
            other[rng.randrange(200)] = rng.choice(VOCAB) + "q"
        j = exact_jaccard(base, other)
        if abs(j - target) <= width:
            a = fp.signature(fp.shingle_hashes(fp.normalise(" ".join(base))))
            b = fp.signature(fp.shingle_hashes(fp.normalise(" ".join(other))))
            out.append((a, b, j))
    return out


def recall_table(n: int, min_similarity: float) -> list[str]:
    rng = random.Random(5)
    targets = (0.3, 0.5, 0.7, 0.9)
    sets = {t: pairs_near(t, n, rng) for t in targets}
    unrelated = []
    for _ in range(n):
        a = fp.signature(fp.shingle_hashes([rng.choice(VOCAB) for _ in range(200)]))
        b = fp.signature(fp.shingle_hashes([rng.choice(VOCAB) for _ in range(200)]))
        unrelated.append((a, b, 0.0))
    lines = ["bands x rows | " + " | ".join(f"J={t}" for t in targets) + " | unrelated | band keys per fingerprint"]
    for bands, rows in ((8, 4), (10, 3), (16, 2), (4, 8), (6, 5)):
        cells = []
        for t in targets:
            found = np.mean([bool(set(fp.band_hashes(a, bands=bands, rows=rows)) & set(fp.band_hashes(b, bands=bands, rows=rows))) for a, b, _ in sets[t]])
            cells.append(f"{found:5.1%} (theory {fp.candidate_probability(t, bands=bands, rows=rows):5.1%})")
        false = np.mean([bool(set(fp.band_hashes(a, bands=bands, rows=rows)) & set(fp.band_hashes(b, bands=bands, rows=rows))) for a, b, _ in unrelated])
        mark = " (chosen)" if (bands, rows) == (fp.BANDS, fp.ROWS) else ""
        lines.append(f"{bands:2d} x {rows}{mark:9s} | " + " | ".join(cells) + f" | {false:5.1%} | {bands}")
    hits = []
    for t in targets:
        ok = [
            bool(set(fp.band_hashes(a)) & set(fp.band_hashes(b))) and fp.similarity(a, b) >= min_similarity for a, b, _ in sets[t]
        ]
        est = np.mean([fp.similarity(a, b) for a, b, _ in sets[t]])
        hits.append(f"J={t}: {np.mean(ok):5.1%} (mean estimate {est:.2f})")
    lines.append(f"FUZZY_SPAM/HAM hit rate with the chosen bands and min_similarity {min_similarity}: " + ", ".join(hits))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, nargs="+", default=[100_000, 1_000_000], help="stored fingerprints (one run each)")
    parser.add_argument("--lookups", type=int, default=1000, help="timed lookups of each kind")
    parser.add_argument("--pairs", type=int, default=300, help="synthetic pairs per similarity for the recall table")
    parser.add_argument("--cluster", action="store_true", help="each count also on a Redis Cluster of 3 masters and 3 replicas")
    args = parser.parse_args()
    started = time.perf_counter()
    cores = os.sched_getaffinity(0)
    rows = [run_count(count, args.lookups, cores, cluster) for cluster in ([False, True] if args.cluster else [False]) for count in args.count]
    print(f"fingerprint lookups through FingerprintScorer.score() on RedisStore, Redis on loopback, {args.lookups} each")
    print("RT: store round trips per lookup (node requests: one per node a round trip reached)")
    print(f"{'redis':>11} | {'stored':>9} | {'load':>6} | {'bytes/fp':>8} | {'keys':>9} | {'(a) near-dup of learned text':>32} | {'(a2) near-dup of synthetic':>28} | {'(b) unseen text':>28} | text→signature")
    for r in rows:
        (n50, n99), nf, nt, nn = r["near"]  # type: ignore[misc]
        (s50, s99), sf, st, sn = r["synthetic"]  # type: ignore[misc]
        (u50, u99), uf, ut, un = r["unseen"]  # type: ignore[misc]
        t50, t99 = r["text"]  # type: ignore[misc]
        print(
            f"{r['where']:>11} | {r['count']:>9,} | {r['load_s']:5.1f}s | {r['bytes_per_fp']:8.0f} | {r['keys']:>9,} | "
            f"p50 {n50:.2f} p99 {n99:.2f} ms, {nf:4.0%} hit, {nt:.1f} RT ({nn:.1f} node) | "
            f"p50 {s50:.2f} p99 {s99:.2f} ms, {sf:4.0%} hit, {st:.1f} RT ({sn:.1f} node) | "
            f"p50 {u50:.2f} p99 {u99:.2f} ms, {uf:3.0%} hit, {ut:.1f} RT ({un:.1f} node) | p50 {t50:.2f} p99 {t99:.2f} ms"
        )
    print()
    print(f"LSH candidate rate on {args.pairs} synthetic 200-word pairs per exact 3-shingle Jaccard (±0.03):")
    for line in recall_table(args.pairs, Settings().min_similarity):
        print("  " + line)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
