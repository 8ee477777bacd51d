"""Speed benchmark: scan the corpus with the shipped model, network off, on one core.

    python benchmarks/speed.py [--corpora ../shared/corpora] [--limit N] [--store sqlite|memory]

Prints messages per second, per-message latency p50/p99 (parse + every scorer + combine
+ policy, each message parsed from its bytes) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import corpus_bytes, percentiles_ms, pin_one_core, timed_scans

from mailguard.config import Config, ScannerConfig, StoreConfig
from mailguard.scanner import Scanner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", "../shared/corpora"))
    parser.add_argument("--limit", type=int, default=0, help="scan only the first N messages")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    args = parser.parse_args()
    pin_one_core()
    raws = corpus_bytes(args.corpora, args.limit)
    store = Path(tempfile.mkdtemp(prefix="mailguard-speed-")) / "store.sqlite3"
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
