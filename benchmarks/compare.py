"""Side by side: mailguard and bogofilter on the same 5 folds of the public corpus.

    python benchmarks/compare.py [--corpora ../shared/corpora] [--corpus spamassassin] [--cpu-only]
        [--scores benchmarks/out/quality-trec06p_scores.csv]

bogofilter (Debian's package, if installed) is trained on four folds with -s/-n in bulk
mode (-b) and scores the fifth (-T), with its own default configuration; mailguard runs the
same protocol through `mailguard.learning.train.cross_validate`. Each filter is judged at its own
default threshold and on threshold-free metrics (1-AUC, catch at 0 and 2 FP). ``--scores``
takes mailguard's pooled scores from a `quality.py` run of the same folds instead of training
again (the trec06p 5-fold takes about an hour on this machine; bogofilter's, minutes).

Then CPU time side by side over the same files (``--cpu-only``: this part alone): bogofilter
trained on the whole corpus scoring every file in one bulk run (``-T -b``, its CPU from
getrusage of the child), and mailguard's shipped model scanning the same files in this
process (default scorers, network off, SQLite store, model load not counted).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from mailguard.config import Config, ScannerConfig, StoreConfig
from mailguard.learning.datasets import Sample, load_labels
from mailguard.learning.evaluate import quality_metrics
from mailguard.policy import LEVELS
from mailguard.learning.train import cross_validate
from mailguard.scanner import Scanner

from common import add_corpora_option, bogofilter_cutoff, corpus_labels  # benchmarks/common.py, beside this file


def bogofilter(db: str, flags: list[str], files: list[str]) -> subprocess.CompletedProcess[str]:
    """bogofilter in bulk mode over ``files``, their names on stdin (``-b``: no limit on how
    many, where ``-B`` and the argument list stop near 35,000 corpus paths)."""
    return subprocess.run(["bogofilter", "-d", db, *flags, "-b"], input="\n".join(files) + "\n", capture_output=True, text=True)


def bogofilter_cv(samples: list[Sample]) -> tuple[np.ndarray, float, float]:
    """Pooled held-out bogofilter spamicity per sample, its spam_cutoff, and seconds spent scoring."""
    scores = np.zeros(len(samples))
    index = {str(s.path): i for i, s in enumerate(samples)}
    scoring = 0.0
    for fold in sorted({s.fold for s in samples}):
        db = tempfile.mkdtemp(prefix="mg-bogo-")
        try:
            train = [s for s in samples if s.fold != fold]
            for flag, label in (("-s", "spam"), ("-n", "ham")):
                files = [str(s.path) for s in train if s.label == label]
                bogofilter(db, [flag], files).check_returncode()
            test = [str(s.path) for s in samples if s.fold == fold]
            started = time.perf_counter()
            # bogofilter's exit status is its verdict (0 spam, 1 ham, 2 unsure); 3 is an error
            proc = bogofilter(db, ["-T"], test)
            scoring += time.perf_counter() - started
            if proc.returncode == 3:
                raise RuntimeError(f"bogofilter failed on fold {fold}: {proc.stderr[:500]}")
            lines = proc.stdout.splitlines()
            if len(lines) != len(test):
                raise RuntimeError(f"bogofilter scored {len(lines)} of {len(test)} messages in fold {fold}")
            for line in lines:
                path, _, score = line.rsplit(" ", 2)
                scores[index[path]] = float(score)
        finally:
            shutil.rmtree(db, ignore_errors=True)
    return scores, bogofilter_cutoff(), scoring


def scores_from(path: str, samples: list[Sample]) -> tuple[list[Sample], np.ndarray, np.ndarray]:
    """The samples quality.py scored (its CSV names each as folder/file), their labels and scores."""
    by_name = {f"{s.path.parent.name}/{s.path.name}": s for s in samples}
    kept, y, scores = [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh.read().splitlines()[1:]:
            name, label, score = line.rsplit(",", 2)
            sample = by_name[name]
            if sample.label != label:
                raise ValueError(f"{path}: {name} is {label} there, {sample.label} in the corpus")
            kept.append(sample)
            y.append(sample.y)
            scores.append(float(score))
    if len(kept) != len(samples):
        print(f"note: {path} scores {len(kept)} of the corpus's {len(samples)} messages (the rest did not read)", file=sys.stderr)
    return kept, np.array(y), np.array(scores)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_side_by_side(samples: list[Sample]) -> None:
    """CPU seconds per message: bogofilter's bulk scoring against mailguard's scans, same files."""
    files = [str(s.path) for s in samples]
    db = tempfile.mkdtemp(prefix="mg-bogo-cpu-")
    try:
        for flag, label in (("-s", "spam"), ("-n", "ham")):
            bogofilter(db, [flag], [str(s.path) for s in samples if s.label == label]).check_returncode()
        before = children_cpu()
        proc = bogofilter(db, ["-T"], files)
        bogo = children_cpu() - before
        if proc.returncode == 3:
            raise RuntimeError(f"bogofilter failed: {proc.stderr[:500]}")
    finally:
        shutil.rmtree(db, ignore_errors=True)
    raws = [s.path.read_bytes() for s in samples]
    with tempfile.TemporaryDirectory(prefix="mg-cpu-") as tmp:
        config = Config(scanner=ScannerConfig(network=False), store=StoreConfig(backend="sqlite", path=f"{tmp}/store.sqlite3"))
        with Scanner(config) as scanner:
            started = time.process_time()
            for raw in raws:
                scanner.scan_sync(raw)
            ours = time.process_time() - started
    n = len(samples)
    print(f"\nCPU over the same {n} files (bogofilter trained on all of them, bulk mode; mailguard's shipped model, default scorers):")
    print("| filter | CPU time | per message |\n|---|---|---|")
    print(f"| bogofilter -T -b | {bogo:.1f} s | {bogo / n * 1000:.2f} ms |")
    print(f"| mailguard | {ours:.1f} s | {ours / n * 1000:.2f} ms |")
    print(f"mailguard takes {ours / bogo:.1f}x bogofilter's CPU (target: within 3.5x)")


def row(name: str, m: dict[str, float], speed: str) -> str:
    return (
        f"| {name} | {m['one_minus_auc_pct']:.4f}% | {m['catch_at_zero_fp'] * 100:.1f}% | {m['catch_at_two_fp'] * 100:.1f}% "
        f"| {m['false_positives']} FP, {m['catch_rate'] * 100:.1f}% caught (threshold {m['threshold']:g}) | {speed} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_option(parser)
    parser.add_argument("--corpus", default="spamassassin", choices=("spamassassin", "trec06p", "trec06c-zh"))
    parser.add_argument("--cpu-only", action="store_true", help="only the CPU side by side, not the 5-fold quality")
    parser.add_argument("--scores", help="mailguard's pooled 5-fold scores (quality.py's *_scores.csv) instead of training again")
    args = parser.parse_args()
    labels = corpus_labels(args.corpora, args.corpus)
    if labels is None:
        return 2
    samples, _ = load_labels(labels)
    if args.cpu_only:
        if shutil.which("bogofilter") is None:
            print("bogofilter is not installed (apt-get install bogofilter)", file=sys.stderr)
            return 2
        cpu_side_by_side(samples)
        return 0
    started = time.perf_counter()
    if args.scores:
        kept, y, ours = scores_from(args.scores, samples)
        ours_source = f"scores of {args.scores}"
    else:
        kept, y, ours, _ = cross_validate(samples, config=Config(), k=5)
        ours_source = f"{time.perf_counter() - started:.0f} s train+scan, 5 folds"
    print(f"{args.corpus}: {len(kept)} messages, 5 folds, pooled held-out scores\n")
    print("| filter | 1-AUC | caught at 0 FP | caught at 2 FP | at its default threshold | time |")
    print("|---|---|---|---|---|---|")
    print(row("mailguard", quality_metrics(y, ours, LEVELS["medium"].required), ours_source))
    if shutil.which("bogofilter") is None:
        print("| bogofilter | not installed (apt-get install bogofilter) | | | | |")
        return 0
    version = subprocess.run(["bogofilter", "-V"], capture_output=True, text=True).stdout.split("\n")[0]
    bogo, cutoff, scoring = bogofilter_cv(kept)
    print(row(version, quality_metrics(y, bogo, cutoff), f"{len(kept) / scoring:.0f} msg/s scoring (bulk, 2 cores)"))
    cpu_side_by_side(kept)
    return 0


if __name__ == "__main__":
    sys.exit(main())
