"""Quality benchmark: 5-fold cross-validation on the SpamAssassin public corpus, pooled.

    python benchmarks/quality.py [--corpora ../shared/corpora] [--corpus spamassassin] [--out benchmarks/out]

``--corpus trec06p`` or ``--corpus trec06c-zh`` runs the same protocol on a TREC corpus
(``--corpora "$(../shared/corpora/unpack)"``): what a site that trains on its own mail gets.

Prints spam caught and ham false positives at the default threshold (with the exact 95%
upper bound of the false-positive rate), 1-AUC, and spam caught at zero and two false
positives; writes the pooled scores, the metrics as JSON and a ROC curve as PNG.

When ``--corpora`` also holds trec06c-zh (``--corpora "$(../shared/corpora/unpack)"``), the
shipped model then scans all of it as a new site would (default scorers, network off, an
empty store, nothing learned): Chinese ham flagged and spam caught, mail in a script the
shipped model saw only in spam.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import dataclasses

import numpy as np

from mailguard.cli import format_metrics
from mailguard.config import Config, StoreConfig
from mailguard.learning.datasets import load_labels
from mailguard.learning.evaluate import quality_metrics, roc_points
from mailguard.policy import LEVELS
from mailguard.learning.train import cross_validate
from mailguard.scanner import Scanner

from common import add_corpora_option, corpus_labels  # benchmarks/common.py, beside this file


def plot_roc(y: np.ndarray, scores: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr = roc_points(y, scores)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(np.maximum(fpr, 1e-5), 1 - tpr, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ham misfiled (false-positive rate, log)")
    ax.set_ylabel("spam missed (false-negative rate, log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_option(parser)
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--corpus", default="spamassassin", choices=("spamassassin", "trec06p", "trec06c-zh"))
    args = parser.parse_args()
    labels = corpus_labels(args.corpora, args.corpus)
    if labels is None:
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples, errors = load_labels(labels)
    if errors:
        print("\n".join(errors), file=sys.stderr)
    started = time.perf_counter()
    kept, y, scores, read_errors = cross_validate(samples, config=Config(), k=args.folds)
    elapsed = time.perf_counter() - started
    threshold = LEVELS["medium"].required
    metrics = quality_metrics(y, scores, threshold)
    metrics["seconds"] = elapsed
    errors = metrics["false_positives"] + metrics["false_negatives"]
    metrics["error_rate"] = errors / len(y)
    print(format_metrics(metrics, f"{args.corpus} corpus, {args.folds}-fold cross-validation, pooled"))
    print(f"  errors at the default threshold: {errors} of {len(y)} ({metrics['error_rate'] * 100:.3f}%)")
    for level, t in LEVELS.items():
        m = quality_metrics(y, scores, t.required)
        print(f"  level {level:<6} (required {t.required:5.2f}): caught {m['catch_rate'] * 100:6.2f}%, false positives {m['false_positives']}")
    ham_order = np.argsort(-np.where(y == 0, scores, -np.inf))[:5]
    print("  highest-scoring ham: " + "; ".join(f"{kept[i].path.parent.name}/{kept[i].path.name[:5]} {scores[i]:.2f}" for i in ham_order))
    spam_order = np.argsort(np.where(y == 1, scores, np.inf))[:5]
    print("  lowest-scoring spam: " + "; ".join(f"{kept[i].path.parent.name}/{kept[i].path.name[:5]} {scores[i]:.2f}" for i in spam_order))
    print(f"  ({elapsed:.0f} s for training and scoring all folds)")
    stem = "quality" if args.corpus == "spamassassin" else f"quality-{args.corpus}"
    with open(out / f"{stem}_scores.csv", "w", encoding="utf-8") as fh:
        fh.write("path,label,score\n")
        fh.writelines(f"{s.path.parent.name}/{s.path.name},{s.label},{v:.6f}\n" for s, v in zip(kept, scores))
    (out / f"{stem}.json").write_text(json.dumps(metrics, indent=1) + "\n")
    roc = "roc.png" if args.corpus == "spamassassin" else f"roc-{args.corpus}.png"
    plot_roc(y, scores, out / roc, f"mailguard, {args.corpus} corpus, {args.folds}-fold (1-AUC {metrics['one_minus_auc_pct']:.4f}%)")
    print(f"  wrote {out / (stem + '.json')}, {out / (stem + '_scores.csv')}, {out / roc}")
    chinese = Path(args.corpora) / "trec06c-zh" / "folds.csv"
    if args.corpus == "spamassassin" and chinese.exists():
        shipped_on(chinese)
    return 0


def shipped_on(labels: Path) -> None:
    """The shipped model scanning a whole corpus it was not trained on, nothing learned."""
    samples, _ = load_labels(labels)
    config = Config(store=StoreConfig(backend="memory"))
    config = config.replace(scanner=dataclasses.replace(config.scanner, network=False))
    flagged, scores = [], []
    with Scanner(config) as scanner:
        for sample in samples:
            result = scanner.scan_sync(sample.path.read_bytes())
            flagged.append(result.verdict.is_spam)
            scores.append(result.score)
    y = np.array([s.y for s in samples])
    hit = np.array(flagged)
    m = quality_metrics(y, np.array(scores), LEVELS["medium"].required)
    print(
        f"{labels.parent.name}, shipped model, default scorers, network off, nothing learned: ham flagged "
        f"{int(hit[y == 0].sum())} of {int((y == 0).sum())} ({hit[y == 0].mean() * 100:.2f}%), spam caught "
        f"{hit[y == 1].mean() * 100:.1f}%, 1-AUC {m['one_minus_auc_pct']:.3f}%"
    )


if __name__ == "__main__":
    sys.exit(main())
