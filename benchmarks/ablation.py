"""Ablation: the 5-fold quality protocol with all local scorers, and without each of them.

    python benchmarks/ablation.py [--corpora ../shared/corpora] [--jobs 2] [--out benchmarks/out]

Every fold is scanned once through the real Scanner with all scorers (model trained on the
other folds, store seeded with them only; see mailguard.learning.train). A variant without a scorer
refits the combiner on the same out-of-fold features minus that scorer's symbols and
rescores the same held-out features, which is what scanning without the scorer gives,
since scorers do not see each other's output. The first row is the quality benchmark's
headline; "bayes only" is the core classifier's protocol.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from mailguard.combine import Combiner
from mailguard.config import Config
from mailguard.learning.datasets import load_labels
from mailguard.learning.evaluate import quality_metrics
from mailguard.policy import LEVELS
from mailguard.scanner import Scanner
from mailguard.stores.memory import MemoryStore
from mailguard.learning.train import CrossValidation, cross_validate_features, symbol_directions

from common import add_corpora_option, corpus_labels  # benchmarks/common.py, beside this file

SCORERS = ("bayes", "reputation", "fingerprint", "behaviour")


def run_fold(labels: str, fold: int, k: int) -> CrossValidation:
    samples, _ = load_labels(Path(labels))
    config = Config()
    config = config.replace(scanner=dataclasses.replace(config.scanner, scorers=SCORERS))
    return cross_validate_features(samples, config=config, k=k, only_fold=fold)


def scorer_symbols() -> tuple[dict[str, set[str]], dict[str, float]]:
    """Each scorer's symbols, and every symbol's direction as the combiner's fit uses it."""
    config = Config()
    config = config.replace(scanner=dataclasses.replace(config.scanner, scorers=SCORERS, network=False))
    scanner = Scanner(config, store=MemoryStore())
    try:
        return {s.name: set(s.info.symbols) for s in scanner.scorers}, symbol_directions(config, scanner.model)
    finally:
        scanner.close()


def variant_scores(cvs: list[CrossValidation], y: np.ndarray, drop: set[str], directions: dict[str, float]) -> np.ndarray:
    """Pooled held-out scores of combiners refitted without the ``drop`` symbols."""
    scores = np.zeros(len(y))
    for cv in cvs:
        for fold, train_rows in cv.train_features.items():
            train_idx, test_idx = np.flatnonzero(cv.folds != fold), np.flatnonzero(cv.folds == fold)
            keep = lambda row: {s: v for s, v in row.items() if s not in drop}  # noqa: E731
            combiner = Combiner(directions=directions).fit([keep(r) for r in train_rows], y[train_idx])
            scores[test_idx] = combiner.decision_function([keep(r) for r in cv.test_features[fold]])
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_option(parser)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="folds run in parallel processes")
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--features", help="also write every fold's combiner inputs to this JSON file")
    args = parser.parse_args()
    labels = corpus_labels(args.corpora)
    if labels is None:
        return 2
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        cvs = list(pool.map(run_fold, [str(labels)] * args.folds, range(args.folds), [args.folds] * args.folds))
    elapsed = time.perf_counter() - started
    y = cvs[0].y
    scanned = np.zeros(len(y))
    for fold, cv in enumerate(cvs):
        idx = np.flatnonzero(cv.folds == fold)
        scanned[idx] = cv.scores[idx]
    threshold = LEVELS["medium"].required
    owners, directions = scorer_symbols()
    variants = {"all scorers (as scanned)": None, "all scorers (refitted)": set()}
    for name in SCORERS[1:]:
        variants[f"without {name}"] = owners[name]
    variants["bayes only"] = set().union(*(owners[n] for n in SCORERS[1:]))
    print(f"SpamAssassin corpus, {args.folds}-fold, pooled: {int((y == 0).sum())} ham, {int((y == 1).sum())} spam; "
          f"threshold {threshold} (medium); {elapsed:.0f} s")
    print(f"{'variant':<28} {'1-AUC %':>9} {'@0 FP':>8} {'@2 FP':>8} {'FP@3.4':>7} {'caught@3.4':>11} {'FP 95% ub':>10}")
    results = {}
    for name, drop in variants.items():
        scores = scanned if drop is None else variant_scores(cvs, y, drop, directions)
        m = quality_metrics(y, scores, threshold)
        results[name] = m
        print(f"{name:<28} {m['one_minus_auc_pct']:9.4f} {m['catch_at_zero_fp'] * 100:7.2f}% {m['catch_at_two_fp'] * 100:7.2f}% "
              f"{m['false_positives']:7d} {m['catch_rate'] * 100:10.2f}% {m['fp_rate_upper95'] * 100:9.3f}%")
    print("symbols on held-out mail (messages with the symbol: ham / spam):")
    counts: dict[str, list[int]] = {}
    for fold, cv in enumerate(cvs):
        idx = np.flatnonzero(cv.folds == fold)
        for i, row in zip(idx, cv.test_features[fold]):
            for symbol in row:
                counts.setdefault(symbol, [0, 0])[int(y[i])] += 1
    print("  " + ", ".join(f"{s} {h}/{sp}" for s, (h, sp) in sorted(counts.items())))
    ham_order = np.argsort(-np.where(y == 0, scanned, -np.inf))[:5]
    print("highest-scoring ham: " + "; ".join(f"{cvs[0].samples[i].path.parent.name}/{cvs[0].samples[i].path.name[:5]} {scanned[i]:.2f}" for i in ham_order))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"seconds": elapsed, "variants": results}, indent=1))
    if args.features:  # every fold's combiner inputs, for experiments with the combiner alone
        dump = [{"fold": f, "train": cv.train_features[f], "test": cv.test_features[f]} for f, cv in enumerate(cvs)]
        Path(args.features).write_text(json.dumps({"y": y.tolist(), "folds": cvs[0].folds.tolist(), "cv": dump}))
    with open(out / "quality_scores.csv", "w", encoding="utf-8") as fh:
        fh.write("path,label,score\n")
        fh.writelines(f"{s.path},{s.label},{v:.6f}\n" for s, v in zip(cvs[0].samples, scanned))
    return 0


if __name__ == "__main__":
    sys.exit(main())
