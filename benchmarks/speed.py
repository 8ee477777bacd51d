"""Speed benchmark: scan the corpus with the shipped model, network off, on one core.

    python benchmarks/speed.py [--corpora ../shared/corpora] [--limit N]

Prints messages per second, per-message latency p50/p99 (parse + every scorer + combine
+ policy, each message parsed from its bytes) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from mailguard.config import Config, ScannerConfig, StoreConfig
from mailguard.datasets import load_labels
from mailguard.scanner import Scanner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", "../shared/corpora"))
    parser.add_argument("--limit", type=int, default=0, help="scan only the first N messages")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    samples, _ = load_labels(Path(args.corpora) / "spamassassin" / "folds.csv")
    if args.limit:
        samples = samples[: args.limit]
    raws = [s.path.read_bytes() for s in samples]
    store_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"mailguard-speed-{os.getpid()}"
    config = Config(
        scanner=ScannerConfig(network=False),
        store=StoreConfig(backend=args.store, path=store_dir / "store.sqlite3"),
    )
    started_load = time.perf_counter()
    scanner = Scanner(config)
    load_time = time.perf_counter() - started_load

    async def run() -> list[float]:
        latencies = []
        for raw in raws[:50]:  # warm-up: imports, caches
            await scanner.scan(raw)
        for raw in raws:
            t = time.perf_counter()
            await scanner.scan(raw)
            latencies.append(time.perf_counter() - t)
        return latencies

    started = time.perf_counter()
    latencies = np.array(scanner._run(run()))
    wall = time.perf_counter() - started
    scanner.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size_kb = np.mean([len(r) for r in raws]) / 1024
    print(f"scanned {len(raws)} messages (mean {size_kb:.1f} KiB) on one core, network off, {args.store} store, model {scanner.model.version if scanner.model else '-'}")
    print(f"  throughput      {len(raws) / latencies.sum():.0f} messages/s (wall incl. warm-up {len(raws) / wall:.0f}/s)")
    print(f"  latency         p50 {np.percentile(latencies, 50) * 1000:.2f} ms, p99 {np.percentile(latencies, 99) * 1000:.2f} ms, max {latencies.max() * 1000:.1f} ms")
    print(f"  peak RSS        {peak_mb:.0f} MB")
    print(f"  model load      {load_time * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
