"""Bayesian text classifier over hashed tokens, with scikit-learn conventions.

``X`` is a sequence of documents, each the array of its distinct token ids
(`mailguard.classifier.tokens.hash_tokens`); ``y`` is 1 for spam, 0 for ham. The fitted state is
sorted arrays: token id, spam and ham document counts, and one logistic-regression weight
per token. It merges with per-user deltas from the store and saves as a plain ``.npz``.

The score blends two views of the same counts, as the 5-fold benchmark chose
(benchmarks/README.md has the comparison):

* the Robinson/Fisher chi-square indicator (bogofilter's rule and parameters): robust,
  and it follows every count update at once (``partial_fit``, per-user deltas);
* a logistic regression on naive-Bayes-weighted features (each present token's
  |log count ratio|, L2-normalised per message): discriminative, it ranks the
  hard cases. Its weights are refitted only by ``fit`` (offline retraining); tokens it
  has no weight for still count through the Fisher side and their NB values.

``decision_function`` returns the log-odds of ``w * fisher + (1 - w) * sigmoid(z / T)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse
from scipy.special import chdtrc, expit, logit

__all__ = ["BayesClassifier", "TokenCounts"]

TokenCounts = Mapping[int, tuple[float, float]]  # token id -> (spam docs, ham docs) to add


class BayesClassifier:
    def __init__(
        self,
        *,
        robinson_s: float = 0.0178,
        robinson_x: float = 0.52,
        min_dev: float = 0.375,
        lr_C: float = 1000.0,
        fisher_weight: float = 0.3,
        lr_temperature: float = 2.0,
        clip: float = 35.0,
    ) -> None:
        self.robinson_s = robinson_s
        self.robinson_x = robinson_x
        self.min_dev = min_dev
        self.lr_C = lr_C  # 0 turns the regression off (pure Fisher)
        self.fisher_weight = fisher_weight
        self.lr_temperature = lr_temperature
        self.clip = clip

    def get_params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("robinson_s", "robinson_x", "min_dev", "lr_C", "fisher_weight", "lr_temperature", "clip")}

    # -- fitting --------------------------------------------------------------------------

    def fit(self, X: Sequence[np.ndarray], y: Sequence[int] | np.ndarray) -> BayesClassifier:
        """Count tokens, then fit the regression on the same documents."""
        self.vocab_ = np.zeros(0, dtype=np.uint64)
        self.spam_counts_ = np.zeros(0, dtype=np.uint32)
        self.ham_counts_ = np.zeros(0, dtype=np.uint32)
        self.weights_ = np.zeros(0, dtype=np.float32)
        self.intercept_ = 0.0
        self.n_spam_ = 0
        self.n_ham_ = 0
        self.classes_ = np.array([0, 1])
        self.partial_fit(X, y)
        if self.lr_C > 0 and self.n_spam_ and self.n_ham_:
            self._fit_regression(X, np.asarray(y))
        return self

    def partial_fit(self, X: Sequence[np.ndarray], y: Sequence[int] | np.ndarray, classes: Sequence[int] | None = None) -> BayesClassifier:
        """Add documents to the counts (the regression weights are kept as they are)."""
        if not hasattr(self, "vocab_"):
            return self.fit(X, y)
        y = np.asarray(y, dtype=np.int64)
        if len(X) != len(y):
            raise ValueError("X and y have different lengths")
        if len(y) and not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0 (ham) or 1 (spam)")
        new_spam = _doc_counts(X, y == 1)
        new_ham = _doc_counts(X, y == 0)
        vocab = np.union1d(self.vocab_, np.union1d(new_spam[0], new_ham[0]))
        old = np.searchsorted(vocab, self.vocab_)
        spam = np.zeros(len(vocab), dtype=np.uint32)
        ham = np.zeros(len(vocab), dtype=np.uint32)
        weights = np.zeros(len(vocab), dtype=np.float32)
        spam[old], ham[old], weights[old] = self.spam_counts_, self.ham_counts_, self.weights_
        spam[np.searchsorted(vocab, new_spam[0])] += new_spam[1].astype(np.uint32)
        ham[np.searchsorted(vocab, new_ham[0])] += new_ham[1].astype(np.uint32)
        self.vocab_, self.spam_counts_, self.ham_counts_, self.weights_ = vocab, spam, ham, weights
        self.n_spam_ += int((y == 1).sum())
        self.n_ham_ += int((y == 0).sum())
        return self

    def _nb_values(self, spam: np.ndarray, ham: np.ndarray, n_spam: float, n_ham: float) -> np.ndarray:
        """|log count ratio| of each token (Laplace smoothing): the regression's feature values."""
        return np.abs(np.log((spam + 1.0) / (n_spam + 2.0)) - np.log((ham + 1.0) / (n_ham + 2.0)))

    def _fit_regression(self, X: Sequence[np.ndarray], y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        values = self._nb_values(self.spam_counts_.astype(np.float64), self.ham_counts_.astype(np.float64), self.n_spam_, self.n_ham_)
        lengths = np.array([len(x) for x in X])
        rows = np.repeat(np.arange(len(X)), lengths)
        cols = np.searchsorted(self.vocab_, np.concatenate(X)) if len(rows) else np.zeros(0, dtype=np.int64)
        matrix = sparse.csr_matrix((values[cols], (rows, cols)), shape=(len(X), len(self.vocab_)))
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        matrix = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix
        model = LogisticRegression(C=self.lr_C, solver="liblinear").fit(matrix, y)
        self.weights_ = model.coef_.ravel().astype(np.float32)
        self.intercept_ = float(model.intercept_[0])

    def prune(self, min_docs: int) -> BayesClassifier:
        """Drop tokens seen in fewer than ``min_docs`` training messages (a smaller model)."""
        keep = (self.spam_counts_.astype(np.int64) + self.ham_counts_) >= min_docs
        self.vocab_, self.spam_counts_, self.ham_counts_, self.weights_ = (
            self.vocab_[keep],
            self.spam_counts_[keep],
            self.ham_counts_[keep],
            self.weights_[keep],
        )
        return self

    # -- prediction -----------------------------------------------------------------------

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(spam docs, ham docs, regression weight) of each id; zeros for ids never seen."""
        n = len(self.vocab_)
        if n == 0:
            zeros = np.zeros(len(ids))
            return zeros, zeros, zeros
        pos = np.minimum(np.searchsorted(self.vocab_, ids), n - 1)
        found = self.vocab_[pos] == ids
        spam = np.where(found, self.spam_counts_[pos], 0).astype(np.float64)
        ham = np.where(found, self.ham_counts_[pos], 0).astype(np.float64)
        weights = np.where(found, self.weights_[pos], 0).astype(np.float64)
        return spam, ham, weights

    def score_one(
        self,
        ids: np.ndarray,
        delta: TokenCounts | None = None,
        n_delta: tuple[float, float] = (0.0, 0.0),
        looked_up: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> float:
        """Log-odds for one document, with optional extra counts (global or per-user deltas);
        ``looked_up`` is `lookup(ids)` when the caller has it already."""
        spam, ham, weights = self.lookup(ids) if looked_up is None else looked_up
        if delta:
            extra = np.array([delta.get(int(i), (0.0, 0.0)) for i in ids], dtype=np.float64).reshape(-1, 2)
            spam = spam + extra[:, 0]
            ham = ham + extra[:, 1]
        n_spam = max(self.n_spam_ + n_delta[0], 1.0)
        n_ham = max(self.n_ham_ + n_delta[1], 1.0)
        seen = (spam + ham) > 0
        spam, ham, weights = spam[seen], ham[seen], weights[seen]
        blend = self.fisher_weight * self._fisher(spam, ham, n_spam, n_ham)
        if self.fisher_weight < 1.0:
            values = self._nb_values(spam, ham, n_spam, n_ham)
            norm = float(np.sqrt((values * values).sum())) or 1.0
            z = self.intercept_ + float((weights * values).sum()) / norm
            blend += (1.0 - self.fisher_weight) * float(expit(z / self.lr_temperature))
        return float(np.clip(logit(blend), -self.clip, self.clip))

    def _fisher(self, spam: np.ndarray, ham: np.ndarray, n_spam: float, n_ham: float) -> float:
        """Robinson's f(w) per token, Fisher's chi-square combining; 0.5 means no opinion."""
        spam_rate = spam / n_spam
        p = spam_rate / (spam_rate + ham / n_ham)
        n = spam + ham
        s, x = self.robinson_s, self.robinson_x
        f = (s * x + n * p) / (s + n)
        f = np.clip(f[np.abs(f - 0.5) > self.min_dev], 1e-9, 1 - 1e-9)
        if len(f) == 0:
            return 0.5
        dof = 2 * len(f)
        hammy = chdtrc(dof, -2.0 * np.log(f).sum())  # near 0 when the tokens say ham
        spammy = chdtrc(dof, -2.0 * np.log1p(-f).sum())  # near 0 when they say spam
        return float((1.0 + hammy - spammy) / 2.0)

    def decision_function(self, X: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([self.score_one(ids) for ids in X])

    def predict_proba(self, X: Sequence[np.ndarray]) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Sequence[np.ndarray]) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(np.int64)

    # -- persistence ----------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "vocab": self.vocab_,
            "spam_counts": self.spam_counts_,
            "ham_counts": self.ham_counts_,
            "weights": self.weights_,
            "scalars": np.array([self.n_spam_, self.n_ham_, self.intercept_], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, float]) -> BayesClassifier:
        model = cls(**params)
        vocab = np.asarray(arrays["vocab"], dtype=np.uint64)
        if len(vocab) > 1 and not (vocab[1:] > vocab[:-1]).all():
            raise ValueError("vocabulary is not sorted and unique")
        model.vocab_ = vocab
        model.spam_counts_ = np.asarray(arrays["spam_counts"], dtype=np.uint32)
        model.ham_counts_ = np.asarray(arrays["ham_counts"], dtype=np.uint32)
        model.weights_ = np.asarray(arrays["weights"], dtype=np.float32)
        if not (len(model.spam_counts_) == len(model.ham_counts_) == len(model.weights_) == len(vocab)):
            raise ValueError("count and weight arrays do not match the vocabulary")
        n_spam, n_ham, intercept = (float(v) for v in arrays["scalars"])
        model.n_spam_, model.n_ham_, model.intercept_ = int(n_spam), int(n_ham), intercept
        model.classes_ = np.array([0, 1])
        return model


def _doc_counts(X: Sequence[np.ndarray], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    docs = [x for x, m in zip(X, mask) if m]
    if not docs:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    ids, counts = np.unique(np.concatenate(docs), return_counts=True)
    return ids, counts
