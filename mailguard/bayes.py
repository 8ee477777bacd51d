"""Bayesian text classifier over hashed tokens, with scikit-learn conventions.

``X`` is a sequence of documents, each the array of its distinct token ids
(`mailguard.tokenize.hash_tokens`). The fitted state is three sorted arrays (token id,
spam documents, ham documents) and two message counts: small, mergeable with per-user
deltas from the store, and saved as a plain ``.npz`` (no pickle).

Two combining rules: ``"fisher"`` (Robinson's f(w) with Fisher's chi-square combining, as
bogofilter and SpamBayes) and ``"logodds"`` (the sum of each informative token's
smoothed log-likelihood ratio, capped per token). ``decision_function`` returns log-odds
in both cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import chdtrc, expit

__all__ = ["BayesClassifier", "TokenCounts"]

TokenCounts = Mapping[int, tuple[float, float]]  # token id -> (spam docs, ham docs) to add


class BayesClassifier:
    def __init__(
        self,
        *,
        rule: str = "fisher",
        robinson_s: float = 0.45,
        robinson_x: float = 0.5,
        min_dev: float = 0.1,
        max_tokens: int = 0,
        cap: float = 4.0,
        clip: float = 30.0,
    ) -> None:
        self.rule = rule
        self.robinson_s = robinson_s
        self.robinson_x = robinson_x
        self.min_dev = min_dev
        self.max_tokens = max_tokens  # 0: every token past min_dev; else the N most extreme
        self.cap = cap
        self.clip = clip

    # -- fitting --------------------------------------------------------------------------

    def fit(self, X: Sequence[np.ndarray], y: Sequence[int] | np.ndarray) -> BayesClassifier:
        self.vocab_ = np.zeros(0, dtype=np.uint64)
        self.spam_counts_ = np.zeros(0, dtype=np.uint32)
        self.ham_counts_ = np.zeros(0, dtype=np.uint32)
        self.n_spam_ = 0
        self.n_ham_ = 0
        self.classes_ = np.array([0, 1])
        return self.partial_fit(X, y)

    def partial_fit(self, X: Sequence[np.ndarray], y: Sequence[int] | np.ndarray, classes: Sequence[int] | None = None) -> BayesClassifier:
        if not hasattr(self, "vocab_"):
            return self.fit(X, y)
        y = np.asarray(y, dtype=np.int64)
        if len(X) != len(y):
            raise ValueError("X and y have different lengths")
        if len(y) and not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0 (ham) or 1 (spam)")
        spam_ids = _count(X, y == 1)
        ham_ids = _count(X, y == 0)
        vocab = np.union1d(self.vocab_, np.union1d(spam_ids[0], ham_ids[0]))
        spam = np.zeros(len(vocab), dtype=np.uint32)
        ham = np.zeros(len(vocab), dtype=np.uint32)
        for counts, ids_counts in ((spam, (self.vocab_, self.spam_counts_)), (ham, (self.vocab_, self.ham_counts_)), (spam, spam_ids), (ham, ham_ids)):
            ids, n = ids_counts
            counts[np.searchsorted(vocab, ids)] += n.astype(np.uint32)
        self.vocab_, self.spam_counts_, self.ham_counts_ = vocab, spam, ham
        self.n_spam_ += int((y == 1).sum())
        self.n_ham_ += int((y == 0).sum())
        return self

    def prune(self, min_docs: int) -> BayesClassifier:
        """Drop tokens seen in fewer than ``min_docs`` messages (keeps the shipped model small)."""
        keep = (self.spam_counts_.astype(np.int64) + self.ham_counts_) >= min_docs
        self.vocab_, self.spam_counts_, self.ham_counts_ = self.vocab_[keep], self.spam_counts_[keep], self.ham_counts_[keep]
        return self

    # -- prediction -----------------------------------------------------------------------

    def counts_for(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(spam docs, ham docs) of each id; 0 for ids never seen."""
        pos = np.searchsorted(self.vocab_, ids)
        pos_clipped = np.minimum(pos, max(len(self.vocab_) - 1, 0))
        found = (pos < len(self.vocab_)) & (self.vocab_[pos_clipped] == ids) if len(self.vocab_) else np.zeros(len(ids), bool)
        spam = np.where(found, self.spam_counts_[pos_clipped] if len(self.vocab_) else 0, 0).astype(np.float64)
        ham = np.where(found, self.ham_counts_[pos_clipped] if len(self.vocab_) else 0, 0).astype(np.float64)
        return spam, ham

    def score_one(self, ids: np.ndarray, delta: TokenCounts | None = None, n_delta: tuple[float, float] = (0.0, 0.0)) -> float:
        """Log-odds for one document, with optional extra counts (global or per-user deltas)."""
        spam, ham = self.counts_for(ids)
        if delta:
            extra = np.array([delta.get(int(i), (0.0, 0.0)) for i in ids], dtype=np.float64).reshape(-1, 2)
            spam = spam + extra[:, 0]
            ham = ham + extra[:, 1]
        n_spam = max(self.n_spam_ + n_delta[0], 1.0)
        n_ham = max(self.n_ham_ + n_delta[1], 1.0)
        seen = (spam + ham) > 0
        spam, ham = spam[seen], ham[seen]
        if self.rule == "fisher":
            return self._fisher(spam, ham, n_spam, n_ham)
        if self.rule == "logodds":
            return self._logodds(spam, ham, n_spam, n_ham)
        raise ValueError(f"unknown rule {self.rule!r}")

    def _robinson(self, spam: np.ndarray, ham: np.ndarray, n_spam: float, n_ham: float) -> np.ndarray:
        sr = spam / n_spam
        hr = ham / n_ham
        p = sr / (sr + hr)
        n = spam + ham
        s, x = self.robinson_s, self.robinson_x
        return (s * x + n * p) / (s + n)

    def _select(self, f: np.ndarray) -> np.ndarray:
        dev = np.abs(f - 0.5)
        f = f[dev > self.min_dev]
        if self.max_tokens and len(f) > self.max_tokens:
            f = f[np.argsort(-np.abs(f - 0.5))[: self.max_tokens]]
        return f

    def _fisher(self, spam: np.ndarray, ham: np.ndarray, n_spam: float, n_ham: float) -> float:
        f = self._select(self._robinson(spam, ham, n_spam, n_ham))
        if len(f) == 0:
            return 0.0
        f = np.clip(f, 1e-9, 1 - 1e-9)
        dof = 2 * len(f)
        # chdtrc is the chi-square survival function: small when the evidence is strong.
        ham_side = chdtrc(dof, -2.0 * np.log(f).sum())  # near 0 when the tokens say spam
        spam_side = chdtrc(dof, -2.0 * np.log1p(-f).sum())  # near 0 when they say ham
        indicator = (1.0 + ham_side - spam_side) / 2.0
        # Map to log-odds; when the indicator saturates, rank by the log tail ratio instead.
        tail = np.log(max(spam_side, 1e-300)) - np.log(max(ham_side, 1e-300))
        value = float(np.log(indicator / (1 - indicator))) if 1e-6 < indicator < 1 - 1e-6 else float(-tail) / 10 + float(np.sign(indicator - 0.5)) * 14
        return float(np.clip(value, -self.clip, self.clip))

    def _logodds(self, spam: np.ndarray, ham: np.ndarray, n_spam: float, n_ham: float) -> float:
        f = self._robinson(spam, ham, n_spam, n_ham)
        keep = np.abs(f - 0.5) > self.min_dev
        f = np.clip(f[keep], 1e-9, 1 - 1e-9)
        llr = np.clip(np.log(f) - np.log1p(-f), -self.cap, self.cap)
        if self.max_tokens and len(llr) > self.max_tokens:
            llr = llr[np.argsort(-np.abs(llr))[: self.max_tokens]]
        return float(np.clip(llr.sum(), -self.clip, self.clip))

    def decision_function(self, X: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([self.score_one(ids) for ids in X])

    def predict_proba(self, X: Sequence[np.ndarray]) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Sequence[np.ndarray]) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(np.int64)

    # -- persistence ----------------------------------------------------------------------

    def get_params(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("rule", "robinson_s", "robinson_x", "min_dev", "max_tokens", "cap", "clip")}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "vocab": self.vocab_,
            "spam_counts": self.spam_counts_,
            "ham_counts": self.ham_counts_,
            "n_messages": np.array([self.n_spam_, self.n_ham_], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, object]) -> BayesClassifier:
        model = cls(**params)  # type: ignore[arg-type]
        vocab = np.asarray(arrays["vocab"], dtype=np.uint64)
        if len(vocab) > 1 and not (vocab[1:] > vocab[:-1]).all():
            raise ValueError("vocabulary is not sorted and unique")
        model.vocab_ = vocab
        model.spam_counts_ = np.asarray(arrays["spam_counts"], dtype=np.uint32)
        model.ham_counts_ = np.asarray(arrays["ham_counts"], dtype=np.uint32)
        if not (len(model.spam_counts_) == len(model.ham_counts_) == len(vocab)):
            raise ValueError("count arrays do not match the vocabulary")
        model.n_spam_, model.n_ham_ = (int(v) for v in arrays["n_messages"])
        model.classes_ = np.array([0, 1])
        return model


def _count(X: Sequence[np.ndarray], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    docs = [x for x, m in zip(X, mask) if m]
    if not docs:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    ids, counts = np.unique(np.concatenate(docs), return_counts=True)
    return ids, counts
