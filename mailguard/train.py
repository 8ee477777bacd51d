"""Offline training and cross-validation on a labelled corpus.

Training fits the Bayes classifier on every message, and the combiner on out-of-fold
classifier scores (inner cross-fitting), so the combiner learns how far the classifier
can be trusted on mail it has not seen. Cross-validation scores each held-out fold
through the real `Scanner`, exactly as ``mailguard scan`` would.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .bayes import BayesClassifier
from .combine import Combiner
from .config import Config, Limits, StoreConfig
from .datasets import Sample, data_hash
from .evaluate import quality_metrics
from .message import MessageContext
from .model import ModelBundle
from .scanner import Scanner
from .scorers.bayes import message_ids
from .stores.memory import MemoryStore

__all__ = ["BAYES_PARAMS", "cross_validate", "fit_model", "fold_of", "tokenize_corpus", "train"]

Progress = Callable[[int, int, str], None]

BAYES_PARAMS: dict[str, Any] = {}  # the classifier's defaults are the benchmark's choice
PRUNE_MIN_DOCS = 1  # keep every token: dropping single-message tokens cost 0.7 points at 2 FP
INNER_FOLDS = 5


def _quiet(done: int, total: int, what: str) -> None:
    pass


def read_sample(sample: Sample) -> bytes:
    with open(sample.path, "rb") as fh:
        return fh.read()


def tokenize_corpus(samples: Sequence[Sample], limits: Limits, progress: Progress = _quiet) -> tuple[list[Sample], list[np.ndarray], list[str]]:
    """Token ids of every readable sample; unreadable ones become error lines."""
    kept: list[Sample] = []
    ids: list[np.ndarray] = []
    errors: list[str] = []
    for n, sample in enumerate(samples, start=1):
        try:
            raw = read_sample(sample)
        except OSError as exc:
            errors.append(f"{sample.path}: cannot read: {exc.strerror or exc}")
            continue
        kept.append(sample)
        ids.append(message_ids(MessageContext(raw, limits=limits)))
        progress(n, len(samples), "tokenizing")
    return kept, ids, errors


def fit_model(
    ids: Sequence[np.ndarray],
    y: np.ndarray,
    *,
    params: dict[str, Any] | None = None,
    inner_folds: int = INNER_FOLDS,
    prune_min_docs: int = PRUNE_MIN_DOCS,
    combiner_C: float = 1.0,
) -> ModelBundle:
    """Classifier on all of ``ids``; combiner on out-of-fold classifier scores."""
    params = dict(BAYES_PARAMS if params is None else params)
    y = np.asarray(y)
    folds = np.arange(len(y)) % inner_folds
    oof = np.zeros(len(y))
    for k in range(inner_folds):
        train, test = folds != k, folds == k
        clf = BayesClassifier(**params).fit([ids[i] for i in np.flatnonzero(train)], y[train]).prune(prune_min_docs)
        oof[test] = clf.decision_function([ids[i] for i in np.flatnonzero(test)])
    combiner = Combiner(C=combiner_C).fit([{"BAYES": s} for s in oof], y)
    bayes = BayesClassifier(**params).fit(list(ids), y).prune(prune_min_docs)
    calibrated = combiner.decision_function([{"BAYES": s} for s in oof])
    from .policy import LEVELS

    metrics = quality_metrics(y, calibrated, LEVELS["medium"].required)
    manifest = {"metrics": {"protocol": f"{inner_folds}-fold out-of-fold scores on the training data", **metrics}}
    return ModelBundle(bayes=bayes, combiner=combiner, manifest=manifest)


def train(samples: Sequence[Sample], *, limits: Limits | None = None, progress: Progress = _quiet) -> tuple[ModelBundle, dict[str, Any], list[str]]:
    """Train on ``samples``; returns (model, manifest info, error lines)."""
    kept, ids, errors = tokenize_corpus(samples, limits or Limits(), progress)
    if not kept or len({s.label for s in kept}) < 2:
        raise ValueError("training needs readable ham and spam messages")
    y = np.array([s.y for s in kept])
    bundle = fit_model(ids, y)
    info = {
        "training_data": {
            "messages": len(kept),
            "ham": int((y == 0).sum()),
            "spam": int((y == 1).sum()),
            "sha256": data_hash(kept),
            "folds": sorted({s.fold for s in kept if s.fold is not None}),
        },
        "vocabulary": len(bundle.bayes.vocab_),
        **bundle.manifest,
    }
    return bundle, info, errors


def fold_of(raw: bytes, k: int) -> int:
    """The corpus protocol's fold: ``int(sha256(bytes)[:8], 16) % k``."""
    return int(hashlib.sha256(raw).hexdigest()[:8], 16) % k


def cross_validate(
    samples: Sequence[Sample], *, config: Config, k: int = 5, only_fold: int | None = None, progress: Progress = _quiet
) -> tuple[list[Sample], np.ndarray, np.ndarray, list[str]]:
    """k-fold cross-validation; returns (samples, labels, pooled held-out scores, errors).

    Folds come from the CSV when it has exactly k of them, else from the message bytes.
    ``only_fold`` runs one fold (the quick check); other scores are left at 0."""
    kept, ids, errors = tokenize_corpus(samples, config.limits, progress)
    given = {s.fold for s in kept}
    if None not in given and len(given) == k:
        order = sorted(given)
        folds = np.array([order.index(s.fold) for s in kept])
    else:
        folds = np.array([fold_of(read_sample(s), k) for s in kept])
    y = np.array([s.y for s in kept])
    scores = np.zeros(len(kept))
    config = config.replace(store=StoreConfig(backend="memory"))
    done = 0
    for fold in range(k) if only_fold is None else [only_fold]:
        train_idx, test_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        bundle = fit_model([ids[i] for i in train_idx], y[train_idx])
        scanner = Scanner(config, store=MemoryStore(), model=bundle)

        async def score_fold() -> None:
            nonlocal done
            for i in test_idx:
                result = await scanner.scan(read_sample(kept[i]))
                scores[i] = result.score
                done += 1
                progress(done, len(kept), f"fold {fold}")

        asyncio.run(score_fold())
    return kept, y, scores, errors
