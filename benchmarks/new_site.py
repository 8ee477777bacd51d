"""A site whose mail the shipped model never saw: start, let users report, retrain.

    python benchmarks/new_site.py --corpora "$(../shared/corpora/unpack)" [--corpus trec06c-zh]
        [--users 50] [--holdout-fold 0]

The README's path for a non-English site, run end to end on trec06c-zh (Chinese mail):

1. **start**: the shipped model (SpamAssassin corpus only) and an empty SQLite store scan the
   held-out fold (``--holdout-fold``), network off;
2. **report**: the site's ``--users`` users report every other message of the corpus with its
   true label through ``Scanner.report`` (each message by one user, spread evenly, ham and spam
   in a shuffled order, ``--seed``), exactly what ``mailguard report`` does;
3. **retrain**: ``retrain`` (``mailguard retrain``) on the SpamAssassin corpus as the base plus
   those reports, behind its promotion gate, into a versioned model directory;
4. the promoted model scans the held-out fold again with an empty store;
5. beside it, the **site-trained** model: ``mailguard train`` on the same reported messages alone.

Prints ham flagged, spam caught, errors and 1-AUC at the default threshold for each model on
the held-out fold. The TREC corpora are licensed for research: every model here lives in a
temporary directory and is deleted with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mailguard.config import Config, ModelConfig, StoreConfig, default_model_dir
from mailguard.learning.datasets import Sample, load_labels
from mailguard.learning.evaluate import quality_metrics
from mailguard.learning.retrain import RetrainSettings, format_comparison, retrain
from mailguard.learning.train import train
from mailguard.model import save_model
from mailguard.policy import LEVELS
from mailguard.scanner import Scanner

from common import add_corpora_option, corpus_labels  # benchmarks/common.py, beside this file


def site_config(store: Path, model: Path) -> Config:
    """The default scorers, network off, the given store and model."""
    config = Config(store=StoreConfig(backend="sqlite", path=store), model=ModelConfig(path=model))
    return config.replace(scanner=dataclasses.replace(config.scanner, network=False))


def scan_fold(config: Config, raws: list[bytes], y: np.ndarray) -> dict:
    """Scan the held-out messages once with an empty store; metrics at the default threshold."""
    with Scanner(config) as scanner:
        scores = np.array([scanner.scan_sync(raw).score for raw in raws])
    m = quality_metrics(y, scores, LEVELS["medium"].required)
    m["errors"] = m["false_positives"] + m["false_negatives"]
    return m


def report_all(config: Config, reported: list[Sample], users: int) -> float:
    """Each message reported once, by one of ``users`` users in turn; seconds taken."""
    started = time.perf_counter()
    with Scanner(config) as scanner:

        async def run() -> None:
            for n, sample in enumerate(reported):
                await scanner.report(sample.path.read_bytes(), sample.label, user=f"user{n % users}@site.example", source="benchmark")
                if (n + 1) % 2000 == 0:
                    print(f"  reported {n + 1} of {len(reported)}", file=sys.stderr, flush=True)

        scanner._run(run())
    return time.perf_counter() - started


def row(name: str, m: dict) -> str:
    return (
        f"| {name} | {m['false_positives']} of {m['ham']} ({m['fp_rate'] * 100:.2f}%) | {m['catch_rate'] * 100:.2f}% "
        f"| {m['errors']} ({m['errors'] / (m['ham'] + m['spam']) * 100:.3f}%) | {m['one_minus_auc_pct']:.4f}% |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_option(parser)
    parser.add_argument("--corpus", default="trec06c-zh", choices=("trec06c-zh", "trec06p"))
    parser.add_argument("--users", type=int, default=50, help="reporting users at the site")
    parser.add_argument("--holdout-fold", type=int, default=0, help="the fold nobody reports, scanned before and after")
    parser.add_argument("--seed", type=int, default=0, help="the order the messages are reported in")
    args = parser.parse_args()
    labels, base_labels = corpus_labels(args.corpora, args.corpus), corpus_labels(args.corpora)
    if labels is None or base_labels is None or args.users < 1:
        return 2
    samples, errors = load_labels(labels)
    base, base_errors = load_labels(base_labels)
    for line in errors + base_errors:
        print(line, file=sys.stderr)
    held = [s for s in samples if s.fold == args.holdout_fold]
    reported = [s for s in samples if s.fold != args.holdout_fold]
    random.Random(args.seed).shuffle(reported)  # ham and spam reported interleaved, as users would
    raws = [s.path.read_bytes() for s in held]
    y = np.array([s.y for s in held])
    print(
        f"{args.corpus}: {len(reported)} messages reported by {args.users} users, fold {args.holdout_fold} held out "
        f"({int((y == 0).sum())} ham, {int(y.sum())} spam); base corpus for retrain: SpamAssassin ({len(base)} messages)\n"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="mg-new-site-") as tmp:
        work = Path(tmp)
        shipped = site_config(work / "start.sqlite3", default_model_dir())
        rows.append(row("shipped model, the first day", scan_fold(shipped, raws, y)))

        site = site_config(work / "site.sqlite3", default_model_dir())
        seconds = report_all(site, reported, args.users)
        print(f"reports: {len(reported)} in {seconds:.0f} s ({seconds / len(reported) * 1e3:.1f} ms each)")

        started = time.perf_counter()
        result = retrain(base, out=work / "models", config=site, settings=RetrainSettings(), labels_source=str(base_labels))
        print(f"retrain: {time.perf_counter() - started:.0f} s")
        print(format_comparison(result))
        if result.promoted:
            after = site_config(work / "after.sqlite3", work / "models")
            rows.append(row(f"after `mailguard retrain` ({result.version}, promoted)", scan_fold(after, raws, y)))
        else:
            rows.append(f"| after `mailguard retrain` ({result.version}) | refused by the gate | | | |")

        started = time.perf_counter()
        bundle, info, _ = train(reported, config=site_config(work / "train.sqlite3", default_model_dir()))
        save_model(bundle, work / "site-trained", info)
        print(f"site-trained model (`mailguard train` on the reported messages alone): {time.perf_counter() - started:.0f} s")
        trained = site_config(work / "trained.sqlite3", work / "site-trained")
        rows.append(row("site-trained (`mailguard train` on the same messages)", scan_fold(trained, raws, y)))

    print(f"\nfold {args.holdout_fold} of {args.corpus}, default scorers, network off, an empty store, threshold {LEVELS['medium'].required}:")
    print("| model | ham flagged | spam caught | errors | 1-AUC |\n|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
