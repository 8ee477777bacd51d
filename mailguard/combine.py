"""Scorer hits -> one score (log-odds) and a calibrated spam probability, every contribution kept.

The weights are a logistic regression over scorer outputs, fitted offline on out-of-fold
scorer values (so a classifier that has memorised its training mail is not trusted more
than it deserves). Symbols without a learned weight use their scorer's default weight.
Each group's total is capped so one family of evidence cannot decide alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .result import Contribution, Hit
from .scorer import ScorerInfo

__all__ = ["Combiner", "ScorerHits", "sigmoid"]

ScorerHits = tuple[str, ScorerInfo, Sequence[Hit]]  # (scorer name, its info, its hits)


def sigmoid(score: float) -> float:
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    z = math.exp(score)
    return z / (1.0 + z)


class Combiner:
    """Logistic regression over symbol values, scikit-learn style (``fit``, ``predict_proba``).

    ``X`` is a sequence of ``{symbol: value}`` mappings; absent symbols count as 0.
    """

    def __init__(self, *, C: float = 1.0, group_caps: Mapping[str, float] | None = None) -> None:
        self.C = C
        self.group_caps = dict(group_caps or {})

    def fit(self, X: Sequence[Mapping[str, float]], y: Sequence[int] | np.ndarray) -> Combiner:
        from sklearn.linear_model import LogisticRegression

        symbols = sorted({s for row in X for s in row})
        matrix = self._matrix(X, symbols)
        model = LogisticRegression(C=self.C, max_iter=1000)
        model.fit(matrix, np.asarray(y))
        self.symbols_ = symbols
        self.weights_ = {s: float(w) for s, w in zip(symbols, model.coef_[0])}
        self.intercept_ = float(model.intercept_[0])
        return self

    @staticmethod
    def _matrix(X: Sequence[Mapping[str, float]], symbols: Sequence[str]) -> np.ndarray:
        index = {s: i for i, s in enumerate(symbols)}
        matrix = np.zeros((len(X), len(symbols)))
        for row, features in enumerate(X):
            for symbol, value in features.items():
                if symbol in index:
                    matrix[row, index[symbol]] = value
        return matrix

    def decision_function(self, X: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Uncapped log-odds per row (what the regression itself predicts)."""
        w = np.array([self.weights_[s] for s in self.symbols_])
        return self._matrix(X, self.symbols_) @ w + self.intercept_

    def predict_proba(self, X: Sequence[Mapping[str, float]]) -> np.ndarray:
        from scipy.special import expit  # no overflow warning for extreme scores

        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    # -- scanning -------------------------------------------------------------------------

    def weight(self, symbol: str, info: ScorerInfo) -> float:
        learned = getattr(self, "weights_", {})
        if symbol in learned:
            return learned[symbol]
        return float(info.default_weights.get(symbol, 0.0))

    def combine(self, scorer_hits: Sequence[ScorerHits], *, skip_learning: bool = False) -> tuple[float, list[Contribution]]:
        """Score (log-odds) and contributions, biggest first. ``skip_learning`` leaves out
        scorers that learn, for autolearn decisions that must not trust their own opinion."""
        by_group: dict[str, list[Contribution]] = {}
        for name, info, hits in scorer_hits:
            if skip_learning and info.learns:
                continue
            for hit in hits:
                weight = self.weight(hit.symbol, info)
                by_group.setdefault(info.group, []).append(
                    Contribution(name, hit.symbol, hit.value, weight, weight * hit.value, hit.reason)
                )
        contributions: list[Contribution] = []
        for group, items in by_group.items():
            total = sum(c.points for c in items)
            cap = self.group_caps.get(group)
            if cap is not None and abs(total) > cap:
                scale = cap / abs(total)
                items = [Contribution(c.scorer, c.symbol, c.value, c.weight, c.points * scale, c.reason) for c in items]
            contributions.extend(items)
        contributions.sort(key=lambda c: -abs(c.points))
        score = getattr(self, "intercept_", 0.0) + sum(c.points for c in contributions)
        return score, contributions

    # -- persistence (plain JSON: nothing to unpickle) ------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "C": self.C,
            "group_caps": self.group_caps,
            "weights": getattr(self, "weights_", {}),
            "intercept": getattr(self, "intercept_", 0.0),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Combiner:
        combiner = cls(C=float(data["C"]), group_caps={str(k): float(v) for k, v in data["group_caps"].items()})
        combiner.weights_ = {str(k): float(v) for k, v in data["weights"].items()}
        combiner.symbols_ = sorted(combiner.weights_)
        combiner.intercept_ = float(data["intercept"])
        return combiner
