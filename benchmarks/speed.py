"""Speed benchmark: scan the corpus with the shipped model, network off, on one core.

    python benchmarks/speed.py [--corpora ../shared/corpora] [--limit N] [--store sqlite|memory] [--jobs N]

Prints messages per second, per-message latency p50/p99 (parse + every scorer + combine
+ policy, each message parsed from its bytes) and the process's peak RSS.

``--jobs N`` instead scans in N worker processes (mailguard/pool.py, as ``scan --jobs`` and
the milter's ``workers`` do), not pinned, and prints the wall-clock throughput from the
first message handed out to the last answer (worker start-up not counted) and each worker's
peak RSS. Compare ``--jobs 1`` with ``--jobs 2``: the same path, one or two processes.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import corpus_bytes, percentiles_ms, pin_one_core, timed_scans

from mailguard.config import Config, ScannerConfig, StoreConfig
from mailguard.pool import ScanPool
from mailguard.scanner import Scanner


def bench_scanner(store: str, path: str) -> Scanner:
    """Each worker's scanner (built in the worker)."""
    return Scanner(Config(scanner=ScannerConfig(network=False), store=StoreConfig(backend=store, path=Path(path))))


async def scan_one(scanner: Scanner, raw: bytes) -> float:
    await scanner.scan(raw)
    return 0.0


async def peak_rss_mb(scanner: Scanner) -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_workers(raws: list[bytes], jobs: int, store: str, path: Path) -> int:
    with ScanPool(functools.partial(bench_scanner, store, str(path)), jobs) as pool:
        for future in [pool.submit(scan_one, raw) for raw in raws[: 50 * jobs]]:  # warm-up
            future.result()
        started = time.perf_counter()
        window: collections.deque = collections.deque()
        for raw in raws:
            window.append(pool.submit(scan_one, raw))
            if len(window) > 8 * jobs:
                window.popleft().result()
        while window:
            window.popleft().result()
        wall = time.perf_counter() - started
        rss = sorted(pool.submit(peak_rss_mb).result() for _ in range(4 * jobs))[-1]
    print(f"scanned {len(raws)} messages in {jobs} worker process(es), network off, {store} store, on {os.cpu_count()} cores")
    print(f"  throughput      {len(raws) / wall:.0f} messages/s ({wall:.1f} s wall)")
    print(f"  peak RSS        {rss:.0f} MB per worker (largest seen)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", "../shared/corpora"))
    parser.add_argument("--limit", type=int, default=0, help="scan only the first N messages")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=0, help="scan in N worker processes (wall-clock throughput)")
    args = parser.parse_args()
    raws = corpus_bytes(args.corpora, args.limit)
    store = Path(tempfile.mkdtemp(prefix="mailguard-speed-")) / "store.sqlite3"
    if args.jobs:
        return in_workers(raws, args.jobs, args.store, store)
    pin_one_core()
    config = Config(scanner=ScannerConfig(network=False), store=StoreConfig(backend=args.store, path=store))
    started = time.perf_counter()
    with Scanner(config) as scanner:
        load_time = time.perf_counter() - started
        latencies = timed_scans(scanner, raws, warmup=50)
        version = scanner.model.version if scanner.model else "-"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scanned {len(raws)} messages (mean {np.mean([len(r) for r in raws]) / 1024:.1f} KiB) on one core, network off, {args.store} store, model {version}")
    print(f"  throughput      {len(raws) / latencies.sum():.0f} messages/s")
    print(f"  latency         {percentiles_ms(latencies)}, max {latencies.max() * 1000:.1f} ms")
    print(f"  peak RSS        {peak_mb:.0f} MB")
    print(f"  model load      {load_time * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
