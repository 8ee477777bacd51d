"""Fuzz every parsing entry point with many hostile inputs; print what escaped, the slowest
scan and peak RSS.

    .venv/bin/python benchmarks/fuzz.py [--count 100000] [--seed 1] [--big 0.002] [--corpora DIR]

Inputs: mailguard/testing/fuzz.py's generated messages and mutations of the sample messages
plus 300 SpamAssassin corpus messages (when the corpora are there); a share ``--big`` of
them is 7 to 8.9 MB, around the 8 MiB parse bound. Each goes through FuzzTargets.check:
MessageContext and its views, Scanner.scan (shipped model, network off, in-memory store),
the report readers (file, Maildir, mbox, stdin, ARF) and the milter's headers and replies.
Targets: 0 escaped exceptions, slowest scan <= 2 s. Failing inputs are saved under
benchmarks/out/crashers/ (keep the synthetic ones in tests/fuzz/crashers/).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import add_corpora_option, corpus_labels

# benchmarks/milter.py would shadow pymilter's C module `milter` (imported by `Milter`)
sys.path.remove(str(Path(__file__).resolve().parent))

from mailguard import Scanner
from mailguard.config import Config, PolicyConfig, ScannerConfig, StoreConfig
from mailguard.learning.datasets import load_labels
from mailguard.testing.fuzz import FuzzFailure, FuzzTargets, hostile_message

OUT = Path(__file__).resolve().parent / "out" / "crashers"
SAMPLES = Path(__file__).resolve().parents[1] / "datasets" / "samples"


def seeds(corpora: str, seed: int) -> list[bytes]:
    found = [p.read_bytes() for p in sorted(SAMPLES.glob("*.eml"))]
    labels = corpus_labels(corpora)
    if labels is not None:
        samples, _ = load_labels(labels)
        found += [s.path.read_bytes() for s in random.Random(seed).sample(samples, 300)]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big", type=float, default=0.002, help="share of inputs near the 8 MiB parse bound")
    add_corpora_option(parser)
    args = parser.parse_args()
    warnings.simplefilter("error")  # as the test suite: a warning on some input is a finding
    config = Config(store=StoreConfig(backend="memory"), scanner=ScannerConfig(network=False), policy=PolicyConfig(subject_tag="[SPAM] "))
    rng = random.Random(args.seed)
    pool = seeds(args.corpora, args.seed)
    escaped: dict[tuple[str, str], int] = {}
    slowest = (0.0, 0, "")
    big_seen = 0
    started = time.perf_counter()
    with Scanner(config) as scanner, tempfile.TemporaryDirectory() as work:
        targets = FuzzTargets(scanner, work)
        for n in range(1, args.count + 1):
            raw = hostile_message(rng, pool, big=args.big)
            big_seen += len(raw) > 7_000_000
            try:
                took = targets.check(raw)["scan_seconds"]  # any exception comes out as FuzzFailure
                if took > slowest[0]:
                    slowest = (took, len(raw), hashlib.sha256(raw).hexdigest()[:12])
                    if took > 2.0:
                        _save(raw, "slow")
            except FuzzFailure as failure:
                key = (failure.target, failure.detail[:100])
                if key not in escaped:
                    print(f"input {n}: {failure} (saved {_save(raw, failure.target)})", flush=True)
                escaped[key] = escaped.get(key, 0) + 1
            if n % 1000 == 0:
                print(f"{n} inputs, {time.perf_counter() - started:.0f} s, {sum(escaped.values())} escaped", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"inputs: {args.count} (seed {args.seed}; {big_seen} of 7 MB or more) in {elapsed:.0f} s")
    print(f"exceptions escaped: {sum(escaped.values())} ({len(escaped)} distinct)")
    for (target, detail), count in sorted(escaped.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {target}: {detail}")
    print(f"slowest scan: {slowest[0]:.2f} s ({slowest[1]} bytes, sha256 {slowest[2]})")
    print(f"peak RSS: {peak_mib:.0f} MiB")
    return 1 if escaped else 0


def _save(raw: bytes, what: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{what}-{hashlib.sha256(raw).hexdigest()[:12]}.eml"
    path.write_bytes(raw)
    return path


if __name__ == "__main__":
    sys.exit(main())
