"""Virus scanning overhead: the corpus scanned with the virus scorer off and on, against a
private clamd on this machine (mailguard.testing.ClamdServer, test signatures only).

    python benchmarks/virus.py [--corpora ../shared/corpora] [--limit N]

Prints messages per second both ways and the per-message overhead p50/p99. The scanning
process is pinned to one core; clamd runs as its own process. With ClamAV's official
database clamd would do more work per message; that database cannot be fetched here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from mailguard.config import Config, ScannerConfig, StoreConfig
from mailguard.datasets import load_labels
from mailguard.scanner import Scanner
from mailguard.testing import ClamdServer


def timed_scans(scanner: Scanner, raws: list[bytes]) -> np.ndarray:
    async def run() -> list[float]:
        for raw in raws[:30]:  # warm-up
            await scanner.scan(raw)
        out = []
        for raw in raws:
            started = time.perf_counter()
            await scanner.scan(raw)
            out.append(time.perf_counter() - started)
        return out

    return np.array(scanner._run(run()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", "../shared/corpora"))
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    samples, _ = load_labels(Path(args.corpora) / "spamassassin" / "folds.csv")
    raws = [s.path.read_bytes() for s in (samples[: args.limit] if args.limit else samples)]
    with ClamdServer() as clamd:
        base = Config(store=StoreConfig(backend="memory"), scanner=ScannerConfig(scorers=("bayes",), network=False))
        with_virus = base.replace(scanner=ScannerConfig(scorers=("bayes", "virus"), network=False), scorers={"virus": {"socket": clamd.socket_path}})
        with Scanner(base) as off_scanner:
            off = timed_scans(off_scanner, raws)
        with Scanner(with_virus) as on_scanner:
            on = timed_scans(on_scanner, raws)
    overhead = on - off
    print(f"{len(raws)} messages (mean {np.mean([len(r) for r in raws]) / 1024:.1f} KiB), clamd {clamd.binary} with test signatures, unix socket")
    print(f"  virus scorer off  {len(raws) / off.sum():6.0f} messages/s   p50 {np.percentile(off, 50) * 1e3:.2f} ms  p99 {np.percentile(off, 99) * 1e3:.2f} ms")
    print(f"  virus scorer on   {len(raws) / on.sum():6.0f} messages/s   p50 {np.percentile(on, 50) * 1e3:.2f} ms  p99 {np.percentile(on, 99) * 1e3:.2f} ms")
    print(f"  overhead per message: p50 {np.percentile(overhead, 50) * 1e3:.2f} ms, p99 {np.percentile(overhead, 99) * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
