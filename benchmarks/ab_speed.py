"""Scan CPU of two versions of mailguard on the same messages, in interleaved batches.

    git archive REV mailguard models | tar -x -C /tmp/before   # a tree: mailguard/ and models/
    python benchmarks/ab_speed.py [--corpora ../shared/corpora] [--batch 100] [--learn] /tmp/before .

This machine's speed moves by 25-50% within an evening, more than most changes to the scan
path are worth, so two `speed.py` runs an hour apart compare the machine, not the code. Here
each tree scans in its own process (its own package and its own models/default, network
off, its own SQLite store) and the two take turns: batch by batch, alternating which goes
first, each timing its own CPU. Both see the same machine within a second of each other.
``--learn``: each message is scanned and then learned with its true label (one parse), as a
site with immediate feedback does. Prints each tree's CPU per message and B's over A's, in total and as the median of the
batches. Run it both ways round (A B, then B A) and take both: on this machine the tree
given second came out 2-3% slower than the same tree given first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from mailguard.learning.datasets import load_labels

from common import add_corpora_option, corpus_labels  # benchmarks/common.py, beside this file

# Runs inside each tree's process: reads the corpus (paths and labels) and whether to learn on
# stdin's first line, then scans the batch "FIRST LAST" of each following line and answers
# with its CPU seconds.
WORKER = r"""
import json, sys, tempfile, time
from pathlib import Path
from mailguard import Scanner
from mailguard.config import Config, ScannerConfig, StoreConfig
corpus, learn = json.loads(sys.stdin.readline())
raws = [(Path(path).read_bytes(), label) for path, label in corpus]
store = Path(tempfile.mkdtemp(prefix="mailguard-ab-")) / "store.sqlite3"
scanner = Scanner(Config(store=StoreConfig(backend="sqlite", path=store), scanner=ScannerConfig(network=False)))

def run(batch):
    for raw, label in batch:
        ctx = scanner.context(raw)
        scanner.scan_sync(ctx)
        if learn:
            scanner.learn_sync(ctx, label, source="report")

run(raws[:30])
print("ready", flush=True)
for line in sys.stdin:
    first, last = map(int, line.split())
    started = time.process_time()
    run(raws[first:last])
    print(json.dumps(time.process_time() - started), flush=True)
"""


def start(tree: Path, corpus: list[tuple[str, str]], learn: bool) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(tree), MAILGUARD_MODEL=str(tree / "models" / "default"))
    proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps([corpus, learn]) + "\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{tree}: the scanner did not start")
    return proc


def scan(proc: subprocess.Popen[str], first: int, last: int) -> float:
    assert proc.stdin and proc.stdout
    proc.stdin.write(f"{first} {last}\n")
    proc.stdin.flush()
    return float(json.loads(proc.stdout.readline()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_option(parser)
    parser.add_argument("--batch", type=int, default=100, help="messages per turn")
    parser.add_argument("--limit", type=int, default=0, help="only the first N messages of folds.csv")
    parser.add_argument("--learn", action="store_true", help="scan, then learn each message's true label")
    parser.add_argument("a", type=Path, help="a tree holding mailguard/ and models/default")
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    labels = corpus_labels(args.corpora)
    if labels is None:
        return 2
    samples, _ = load_labels(labels)
    corpus = [(str(sample.path.resolve()), sample.label) for sample in samples]
    corpus = corpus[: args.limit] if args.limit else corpus
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    procs = {name: start(tree, corpus, args.learn) for name, tree in trees.items()}
    totals = {"A": 0.0, "B": 0.0}
    ratios = []
    for turn, first in enumerate(range(0, len(corpus), args.batch)):
        last = min(len(corpus), first + args.batch)
        cpu = {name: scan(procs[name], first, last) for name in (("A", "B") if turn % 2 == 0 else ("B", "A"))}
        totals["A"] += cpu["A"]
        totals["B"] += cpu["B"]
        ratios.append(cpu["B"] / cpu["A"])
    for proc in procs.values():
        proc.communicate()
    for name, tree in trees.items():
        print(f"{name} {tree}: {1e3 * totals[name] / len(corpus):.3f} ms CPU per message ({len(corpus) / totals[name]:.0f} messages/s per core)")
    print(f"B / A: {totals['B'] / totals['A']:.3f} in total, median of {len(ratios)} batches {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
