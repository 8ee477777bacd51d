"""Fuzzy fingerprint benchmark: lookup latency and memory on a real redis-server, and how
well the LSH bands find near-duplicates.

    python benchmarks/fingerprint.py [--count 100000 1000000] [--lookups 1000] [--pairs 300]

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

import numpy as np
import redis
from common import pin_one_core

from mailguard.scorers import minhash as fp
from mailguard.message import Envelope, MessageContext
from mailguard.scorers.fingerprint import FingerprintScorer, Settings, _Fingerprint, _Record  # the layout's own code
from mailguard.stores.redis import RedisStore
from mailguard.testing import RedisServer

PREFIX = "mg:"  # RedisStore's default
TTL_MS = 30 * 86400 * 1000
VOCAB = [f"{a}{b}{c}" for a in "bcdfghjklmnprstvwz" for b in "aeiou" for c in ("", "n", "r", "st", "l", "m")]


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def load_synthetic(port: int, count: int, seed: int = 1) -> tuple[np.ndarray, float]:
    """Write ``count`` random fingerprints in the scorer's layout; returns (signatures, seconds)."""
    rng = np.random.default_rng(seed)
    sigs = rng.integers(0, 2**32, size=(count, fp.NUM_PERM), dtype=np.uint32)
    ttl = str(TTL_MS).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    replies = {"lines": 0, "errors": 0}
    expected = count * (2 * fp.BANDS + 1)

    def read() -> None:  # drain replies as they come, so Redis never buffers them
        tail = b""
        while replies["lines"] < expected:
            data = sock.recv(1 << 20)
            if not data:
                break
            replies["lines"] += data.count(b"\r\n")
            replies["errors"] += (tail + data).count(b"\r\n-")
            tail = data[-2:]

    reader = threading.Thread(target=read)
    reader.start()
    started = time.perf_counter()
    batch: list[bytes] = []
    for i in range(count):
        sig = sigs[i]
        fid = str(fp.fingerprint_id(sig)).encode()
        record = _Record("spam", 1, 1, sig).pack()
        batch.append(resp(b"SET", f"{PREFIX}v:fz:f:".encode() + fid, record, b"PX", ttl))
        for band in fp.band_hashes(sig):
            key = f"{PREFIX}s:fz:b:{band:016x}".encode()
            batch.append(resp(b"SADD", key, fid) + resp(b"PEXPIRE", key, ttl))
        if len(batch) >= 20_000:
            sock.sendall(b"".join(batch))
            batch.clear()
    sock.sendall(b"".join(batch))
    reader.join()
    sock.close()
    if replies["lines"] != expected or replies["errors"]:
        raise RuntimeError(f"load: {replies['lines']} of {expected} replies, {replies['errors']} errors")
    return sigs, time.perf_counter() - started


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


async def timed(scorers: list[FingerprintScorer], kinds: list[list[MessageContext]], symbol: str) -> list[tuple[list[float], float, float]]:
    """Seconds per score() for each kind of lookup, interleaved (one of each in turn) so that
    every kind sees the same load on this shared machine; with the share that hit ``symbol``
    and the store round trips per lookup."""
    times: list[list[float]] = [[] for _ in kinds]
    found = [0] * len(kinds)
    trips = [0] * len(kinds)
    for i in range(min(len(k) for k in kinds)):
        for k, (scorer, contexts) in enumerate(zip(scorers, kinds)):
            before = scorer.store.round_trips  # type: ignore[attr-defined]
            started = time.perf_counter()
            hits = await scorer.score(contexts[i])
            times[k].append(time.perf_counter() - started)
            trips[k] += scorer.store.round_trips - before  # type: ignore[attr-defined]
            found[k] += any(h.symbol == symbol for h in hits)
    return [(t, f / len(t), r / len(t)) for t, f, r in zip(times, found, trips)]


def run_count(count: int, lookups: int, cores: set[int]) -> dict[str, object]:
    os.sched_setaffinity(0, cores)  # redis-server inherits this: let it have every core
    with RedisServer() as server:
        pin_one_core()  # after redis-server started: it keeps both cores
        client = redis.Redis.from_url(server.url)
        before = int(client.info("memory")["used_memory"])
        sigs, load_seconds = load_synthetic(server.port, count)
        after = int(client.info("memory")["used_memory"])
        keys = int(client.dbsize())
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
                "near": (percentiles(near_r[0]), near_r[1], near_r[2]),
                "synthetic": (percentiles(synth_r[0]), synth_r[1], synth_r[2]),
                "unseen": (percentiles(unseen_r[0]), unseen_r[1], unseen_r[2]),
                "text": percentiles(text_only),
            }

        result = asyncio.run(measure())
        client.close()
    return {"count": count, "load_s": load_seconds, "bytes_per_fp": (after - before) / count, "keys": keys, **result}


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
    args = parser.parse_args()
    started = time.perf_counter()
    cores = os.sched_getaffinity(0)
    rows = [run_count(count, args.lookups, cores) for count in args.count]
    print(f"fingerprint lookups through FingerprintScorer.score() on RedisStore, redis-server on loopback, {args.lookups} each")
    print(f"{'stored':>9} | {'load':>6} | {'bytes/fp':>8} | {'keys':>9} | {'(a) near-dup of learned text':>32} | {'(a2) near-dup of synthetic':>28} | {'(b) unseen text':>28} | text→signature")
    for r in rows:
        (n50, n99), nf, nt = r["near"]  # type: ignore[misc]
        (s50, s99), sf, st = r["synthetic"]  # type: ignore[misc]
        (u50, u99), uf, ut = r["unseen"]  # type: ignore[misc]
        t50, t99 = r["text"]  # type: ignore[misc]
        print(
            f"{r['count']:>9,} | {r['load_s']:5.1f}s | {r['bytes_per_fp']:8.0f} | {r['keys']:>9,} | "
            f"p50 {n50:.2f} p99 {n99:.2f} ms, {nf:4.0%} hit, {nt:.1f} RT | "
            f"p50 {s50:.2f} p99 {s99:.2f} ms, {sf:4.0%} hit, {st:.1f} RT | "
            f"p50 {u50:.2f} p99 {u99:.2f} ms, {uf:3.0%} hit, {ut:.1f} RT | p50 {t50:.2f} p99 {t99:.2f} ms"
        )
    print()
    print(f"LSH candidate rate on {args.pairs} synthetic 200-word pairs per exact 3-shingle Jaccard (±0.03):")
    for line in recall_table(args.pairs, Settings().min_similarity):
        print("  " + line)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
