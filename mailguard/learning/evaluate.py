"""Quality metrics for spam filtering, with honest uncertainty.

Scores are log-odds (higher = spammier). False positives are ham at or above the
threshold; their rate gets an exact (Clopper-Pearson) 95% upper bound, since "0 of 4,150"
does not mean "never".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["clopper_pearson_upper", "quality_metrics", "roc_points"]


def clopper_pearson_upper(failures: int, trials: int, confidence: float = 0.95) -> float:
    """Upper end of the exact two-sided ``confidence`` interval of a rate."""
    if trials == 0:
        return 1.0
    if failures >= trials:
        return 1.0
    return float(beta.ppf(1 - (1 - confidence) / 2, failures + 1, trials - failures))


def quality_metrics(y: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float) -> dict[str, float]:
    """Catch rate and false positives at ``threshold``, 1-AUC, and the catch rate at zero FP."""
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=float)
    spam, ham = scores[y == 1], scores[y == 0]
    fp = int((ham >= threshold).sum())
    caught = int((spam >= threshold).sum())
    top_ham = float(ham.max()) if len(ham) else -np.inf
    order = np.sort(ham)[::-1]
    return {
        "ham": len(ham),
        "spam": len(spam),
        "threshold": threshold,
        "caught": caught,
        "catch_rate": caught / len(spam) if len(spam) else float("nan"),
        "false_positives": fp,
        "fp_rate": fp / len(ham) if len(ham) else float("nan"),
        "fp_rate_upper95": clopper_pearson_upper(fp, len(ham)),
        "false_negatives": len(spam) - caught,
        "one_minus_auc_pct": 100.0 * (1.0 - roc_auc_score(y, scores)),
        "catch_at_zero_fp": float((spam > top_ham).mean()) if len(spam) else float("nan"),
        "catch_at_two_fp": float((spam > order[2]).mean()) if len(order) > 2 else float("nan"),
        "top_ham_score": top_ham,
    }


def roc_points(y: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) points of the ROC curve."""
    fpr, tpr, _ = roc_curve(np.asarray(y), np.asarray(scores, dtype=float))
    return fpr, tpr
