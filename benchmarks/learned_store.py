"""Scan latency once the store has learned: every scan then reads the learned counts of its
tokens (a few hundred counters) besides the shipped model.

    python benchmarks/learned_store.py [--corpora ../shared/corpora] [--learn 3000] [--scan 400]

A fixed random ``--learn`` messages of the corpus are learned globally through
`Scanner.learn` (a third as spam, the rest as ham: the labels do not matter for the cost),
and ``--scan`` other messages are scanned before and after, on the SQLite store and on a
private redis-server (mailguard.testing.RedisServer), with bayes alone and with the default
scorers. Prints scan latency p50/p99 and the learning rate. One core for the scanner.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import add_corpora_option, corpus_bytes, percentiles_ms, pin_one_core, timed_scans

from mailguard.config import Config, ScannerConfig, StoreConfig
from mailguard.scanner import Scanner
from mailguard.testing import RedisServer


def run(store: StoreConfig, scorers: tuple[str, ...] | None, learn: list[bytes], scan: list[bytes]) -> str:
    scanner_config = ScannerConfig(network=False, **({"scorers": scorers} if scorers else {}))
    with Scanner(Config(scanner=scanner_config, store=store)) as scanner:
        before = timed_scans(scanner, scan)
        started = time.perf_counter()
        for n, raw in enumerate(learn):
            scanner.learn_sync(raw, "spam" if n % 3 == 0 else "ham")
        rate = len(learn) / (time.perf_counter() - started)
        after = timed_scans(scanner, scan)
    return f"before: {percentiles_ms(before)} | learned {len(learn)} at {rate:.0f}/s | after: {percentiles_ms(after)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_option(parser)
    parser.add_argument("--learn", type=int, default=3000)
    parser.add_argument("--scan", type=int, default=400)
    args = parser.parse_args()
    pin_one_core()
    raws = corpus_bytes(args.corpora)
    order = np.random.default_rng(1).permutation(len(raws))
    learn = [raws[i] for i in order[: args.learn]]
    scan = [raws[i] for i in order[args.learn : args.learn + args.scan]]
    for label, scorers in (("bayes only", ("bayes",)), ("default scorers", None)):
        sqlite = StoreConfig(backend="sqlite", path=Path(tempfile.mkdtemp(prefix="mailguard-learned-")) / "store.sqlite3")
        print(f"{label:16} sqlite | {run(sqlite, scorers, learn, scan)}", flush=True)
        with RedisServer() as server:
            print(f"{label:16} redis  | {run(StoreConfig(backend='redis', url=server.url), scorers, learn, scan)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
