"""The text classifier alone, k-fold: how its scoring parameters trade, in seconds, not hours.

    python benchmarks/classifier.py [--corpora ../shared/corpora] [--corpus spamassassin]
        [--grid fisher_weight=0.1,0.2,0.3 --grid temperature=1,2] [--fit passes=5]

Each fold's `OnlineClassifier` is fitted once (`mailguard train`'s parameters, or ``--fit``
overrides), then its held-out fold is scored under every combination of ``--grid`` values.
Only parameters read when scoring can be gridded (the blend of the two halves and the Fisher
half's own: ``fisher_weight``, ``temperature``, ``robinson_s``, ``robinson_s_untrained``,
``robinson_x``, ``min_dev``); the fit does not depend on them. No combiner, no other scorer:
the full pipeline's numbers come from ``quality.py`` and ``replay.py``; this is for choosing
what those then confirm.
Prints 1-AUC and the spam caught at 0 and 2 false positives, pooled over the folds.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np

from mailguard.classifier.features import TextFeatures, text_features
from mailguard.classifier.online import OnlineClassifier
from mailguard.learning.datasets import load_labels
from mailguard.learning.evaluate import quality_metrics
from mailguard.learning.train import BAYES_PARAMS
from mailguard.message.context import MessageContext

from common import add_corpora_option, corpus_labels  # benchmarks/common.py, beside this file

SCORING = ("fisher_weight", "temperature", "robinson_s", "robinson_s_untrained", "robinson_x", "min_dev")


def parse_values(option: str) -> tuple[str, list[float]]:
    """``name=v1,v2,...`` -> (name, [v1, v2, ...])."""
    name, sep, values = option.partition("=")
    if not sep or not values:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,VALUE...], got {option!r}")
    try:
        return name, [float(v) for v in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option!r}: values must be numbers") from None


def fold_scores(
    features: list[TextFeatures], y: np.ndarray, folds: np.ndarray, fit_params: dict, grid: list[dict[str, float]]
) -> list[np.ndarray]:
    """Held-out scores of every fold, one array (in corpus order) per grid point."""
    scores = [np.zeros(len(y)) for _ in grid]
    for k in np.unique(folds):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        model = OnlineClassifier(**fit_params).fit([features[i] for i in train], y[train])
        for point, out in zip(grid, scores):
            for name, value in point.items():
                setattr(model, name, value)
            out[test] = [model.score(features[i])[0] for i in test]
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpora_option(parser)
    parser.add_argument("--corpus", default="spamassassin", choices=("spamassassin", "trec06p", "trec06c-zh"))
    parser.add_argument("--grid", type=parse_values, action="append", default=[], help="a scoring parameter and its values")
    parser.add_argument("--fit", type=parse_values, action="append", default=[], help="a training parameter's one value")
    args = parser.parse_args()
    for name, _ in args.grid:
        if name not in SCORING:
            parser.error(f"--grid {name}: only scoring parameters can be gridded ({', '.join(SCORING)})")
    fit_params = dict(BAYES_PARAMS)
    for name, values in args.fit:
        if name not in OnlineClassifier._PARAMS or len(values) != 1:
            parser.error(f"--fit {name}: one value of a parameter of OnlineClassifier")
        fit_params[name] = type(OnlineClassifier().get_params()[name])(values[0])
    labels = corpus_labels(args.corpora, args.corpus)
    if labels is None:
        return 2
    samples, errors = load_labels(labels)
    if errors or any(s.fold is None for s in samples):
        print(f"{labels}: every row needs a fold ({len(errors)} bad rows)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    model = OnlineClassifier(**fit_params)
    features = [text_features(MessageContext(s.path.read_bytes()), model.gram_window) for s in samples]
    y = np.array([s.y for s in samples])
    folds = np.array([s.fold for s in samples])
    names = [name for name, _ in args.grid]
    grid = [dict(zip(names, values)) for values in itertools.product(*(v for _, v in args.grid))] or [{}]
    scores = fold_scores(features, y, folds, fit_params, grid)
    print(
        f"{args.corpus}, classifier alone, {len(np.unique(folds))}-fold pooled ({int((y == 0).sum())} ham, {int(y.sum())} spam), "
        f"fitted with {', '.join(f'{k}={v:g}' for k, v in model.get_params().items() if k not in SCORING)}; "
        f"{time.perf_counter() - started:.0f} s\n"
    )
    columns = [name for name in SCORING if name not in names]
    print("| " + " | ".join(names or ["as trained"]) + " | 1-AUC | caught at 0 FP | caught at 2 FP |")
    print("|" + "---|" * (max(1, len(names)) + 3))
    for point, s in zip(grid, scores):
        m = quality_metrics(y, s, threshold=0.0)
        cells = [f"{point[n]:g}" for n in names] or [", ".join(f"{n}={getattr(model, n):g}" for n in columns)]
        print(f"| {' | '.join(cells)} | {m['one_minus_auc_pct']:.4f}% | {m['catch_at_zero_fp']:.1%} | {m['catch_at_two_fp']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
