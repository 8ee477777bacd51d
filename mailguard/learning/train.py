"""Offline training and cross-validation on a labelled corpus.

Training runs the online text classifier over every message (the same learner a node runs
on reports, a few passes over the corpus), and fits the combiner on out-of-fold classifier
scores (inner cross-fitting), so the combiner learns how far the classifier can be trusted
on mail it has not seen. Cross-validation scores each held-out fold
through the real `Scanner`, exactly as ``mailguard scan`` would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..classifier.features import TextFeatures, text_features
from ..classifier.online import OnlineClassifier
from ..combine import Combiner
from ..config import Config, Limits, StoreConfig
from .datasets import Sample, data_hash
from .evaluate import quality_metrics
from ..message.context import MessageContext
from ..model import ModelBundle
from ..scanner import Scanner
from ..stores.memory import MemoryStore

__all__ = [
    "BAYES_PARAMS",
    "CrossValidation",
    "cross_validate",
    "cross_validate_features",
    "fit_model",
    "fit_with_features",
    "fold_of",
    "heldout_features",
    "seed",
    "symbol_directions",
    "tokenize_corpus",
    "train",
]

Progress = Callable[[int, int, str], None]

BAYES_PARAMS: dict[str, Any] = {}  # the classifier's defaults are the benchmark's choice
INNER_FOLDS = 5


def _quiet(done: int, total: int, what: str) -> None:
    pass


def read_sample(sample: Sample) -> bytes:
    with open(sample.path, "rb") as fh:
        return fh.read()


def tokenize_corpus(samples: Sequence[Sample], limits: Limits, progress: Progress = _quiet) -> tuple[list[Sample], list[TextFeatures], list[str]]:
    """Classifier features of every readable sample; unreadable ones become error lines."""
    kept: list[Sample] = []
    ids: list[TextFeatures] = []
    errors: list[str] = []
    for n, sample in enumerate(samples, start=1):
        try:
            raw = read_sample(sample)
        except OSError as exc:
            errors.append(f"{sample.path}: cannot read: {exc.strerror or exc}")
            continue
        kept.append(sample)
        ids.append(text_features(MessageContext(raw, limits=limits)))
        progress(n, len(samples), "tokenizing")
    return kept, ids, errors


Features = dict[str, float]  # one message's scorer outputs: symbol -> value


def _offline(config: Config) -> Config:
    """Training and evaluation scan with a throwaway in-memory store and no network: the
    corpus is old mail, and live DNS answers about it would be noise (and are not here)."""
    return config.replace(store=StoreConfig(backend="memory"), scanner=dataclasses.replace(config.scanner, network=False))


def uses_scanner(config: Config) -> bool:
    """Whether the combiner needs scorers other than the classifier (then features come from real scans)."""
    return tuple(config.scanner.scorers) != ("bayes",)


async def seed(scanner: Scanner, samples: Sequence[tuple[bytes, int]], progress: Progress = _quiet) -> None:
    """Teach the scanner's seeded scorers (reputation, fingerprints) the labelled messages, as
    `mailguard train` does for the store in service. The classifier is not taught: its
    training lives in the model."""
    seeded = [s for s in scanner.scorers if s.info.seeded and hasattr(s, "learn")]
    if not seeded:
        return
    for n, (raw, label) in enumerate(samples, start=1):
        ctx = scanner.context(raw)
        for scorer in seeded:
            await scorer.learn(ctx, "spam" if label else "ham", None, source="train")  # type: ignore[attr-defined]
        progress(n, len(samples), "seeding the store")


async def scan_features(scanner: Scanner, raws: Sequence[bytes]) -> tuple[np.ndarray, list[Features]]:
    """Scores and per-symbol scorer outputs of ``raws``, through `Scanner.scan`."""
    scores = np.zeros(len(raws))
    rows: list[Features] = []
    for i, raw in enumerate(raws):
        result = await scanner.scan(raw)
        scores[i] = result.score
        row: Features = {}
        for c in result.contributions:
            row[c.symbol] = row.get(c.symbol, 0.0) + c.value
        rows.append(row)
    return scores, rows


def heldout_features(
    config: Config, bundle: ModelBundle, train: Sequence[tuple[bytes, int]], test: Sequence[bytes]
) -> tuple[np.ndarray, list[Features]]:
    """Scan ``test`` with ``bundle`` and a store seeded with ``train`` only, as a node would
    that had been trained on ``train`` and then received ``test``."""

    async def run() -> tuple[np.ndarray, list[Features]]:
        scanner = Scanner(_offline(config), store=MemoryStore(), model=bundle)
        try:
            await seed(scanner, train)
            return await scan_features(scanner, test)
        finally:
            await scanner.aclose()

    return asyncio.run(run())


def symbol_directions(config: Config, bundle: ModelBundle) -> dict[str, float]:
    """+1, -1 or 0 per symbol of the configured scorers: the sign of its default weight,
    which the combiner's fit keeps (see `Combiner`)."""
    scanner = Scanner(_offline(config), store=MemoryStore(), model=bundle)
    try:
        return {
            symbol: float(np.sign(scorer.info.default_weights.get(symbol, 0.0)))
            for scorer in scanner.scorers
            for symbol in scorer.info.symbols
        }
    finally:
        scanner.close()


def fit_model(ids: Sequence[TextFeatures], y: np.ndarray, **options: Any) -> ModelBundle:
    """Classifier on all of ``ids``; combiner on out-of-fold scorer outputs (`fit_with_features`'s options)."""
    return fit_with_features(ids, y, **options)[0]


def fit_with_features(
    ids: Sequence[TextFeatures],
    y: np.ndarray,
    *,
    raws: Sequence[bytes] | None = None,
    config: Config | None = None,
    params: dict[str, Any] | None = None,
    inner_folds: int = INNER_FOLDS,
    combiner_C: float = 1.0,
) -> tuple[ModelBundle, list[Features]]:
    """Classifier on all of ``ids``; combiner on out-of-fold scorer outputs, returned too.

    With only the classifier configured its out-of-fold scores are the features. With other
    scorers (``config`` and ``raws`` given), each inner fold is scanned by the real Scanner
    with that fold's classifier and a store seeded with the other folds, so reputation and
    fingerprints are judged on mail they have not learned, like the classifier."""
    params = dict(BAYES_PARAMS if params is None else params)
    y = np.asarray(y)
    with_scanner = config is not None and raws is not None and uses_scanner(config)
    folds = np.arange(len(y)) % inner_folds
    rows: list[Features] = [{} for _ in range(len(y))]
    for k in range(inner_folds):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        clf = OnlineClassifier(**params).fit([ids[i] for i in train], y[train])
        if with_scanner:
            assert config is not None and raws is not None
            inner = ModelBundle(bayes=clf, combiner=Combiner())
            _, fold_rows = heldout_features(config, inner, [(raws[i], int(y[i])) for i in train], [raws[i] for i in test])
        else:
            fold_rows = [{"BAYES": float(v)} for v in clf.decision_function([ids[i] for i in test])]
        for i, row in zip(test, fold_rows):
            rows[i] = row
    bayes = OnlineClassifier(**params).fit(list(ids), y)
    directions = symbol_directions(config, ModelBundle(bayes=bayes, combiner=Combiner())) if config is not None else None
    combiner = Combiner(C=combiner_C, directions=directions).fit(rows, y)
    calibrated = combiner.decision_function(rows)
    from ..policy import LEVELS

    metrics = quality_metrics(y, calibrated, LEVELS["medium"].required)
    manifest = {
        "scorers": list(config.scanner.scorers) if with_scanner and config is not None else ["bayes"],
        "metrics": {"protocol": f"{inner_folds}-fold out-of-fold scores on the training data", **metrics},
    }
    return ModelBundle(bayes=bayes, combiner=combiner, manifest=manifest), rows


def train(
    samples: Sequence[Sample], *, config: Config | None = None, progress: Progress = _quiet
) -> tuple[ModelBundle, dict[str, Any], list[str]]:
    """Train on ``samples`` for the scorers ``config`` enables; returns (model, manifest info, error lines)."""
    config = config or Config()
    kept, ids, errors = tokenize_corpus(samples, config.limits, progress)
    if not kept or len({s.label for s in kept}) < 2:
        raise ValueError("training needs readable ham and spam messages")
    y = np.array([s.y for s in kept])
    raws = [read_sample(s) for s in kept] if uses_scanner(config) else None
    bundle = fit_model(ids, y, raws=raws, config=config)
    info = {
        "training_data": {
            "messages": len(kept),
            "ham": int((y == 0).sum()),
            "spam": int((y == 1).sum()),
            "sha256": data_hash(kept),
            "folds": sorted({s.fold for s in kept if s.fold is not None}),
        },
        "vocabulary": int(np.count_nonzero(bundle.bayes.weights_)),  # buckets with a weight
        **bundle.manifest,
    }
    return bundle, info, errors


def fold_of(raw: bytes, k: int) -> int:
    """The corpus protocol's fold: ``int(sha256(bytes)[:8], 16) % k``."""
    return int(hashlib.sha256(raw).hexdigest()[:8], 16) % k


@dataclasses.dataclass
class CrossValidation:
    """Everything one k-fold run produced: pooled held-out scores, and per fold the combiner's
    training features (out-of-fold) and the held-out features, so combiners over fewer
    scorers can be refitted without scanning again (the ablation benchmark)."""

    samples: list[Sample]
    y: np.ndarray
    scores: np.ndarray
    folds: np.ndarray
    errors: list[str]
    train_features: dict[int, list[Features]] = dataclasses.field(default_factory=dict)
    test_features: dict[int, list[Features]] = dataclasses.field(default_factory=dict)


def cross_validate(
    samples: Sequence[Sample], *, config: Config, k: int = 5, only_fold: int | None = None, progress: Progress = _quiet
) -> tuple[list[Sample], np.ndarray, np.ndarray, list[str]]:
    """k-fold cross-validation; returns (samples, labels, pooled held-out scores, errors)."""
    cv = cross_validate_features(samples, config=config, k=k, only_fold=only_fold, progress=progress)
    return cv.samples, cv.y, cv.scores, cv.errors


def cross_validate_features(
    samples: Sequence[Sample], *, config: Config, k: int = 5, only_fold: int | None = None, progress: Progress = _quiet
) -> CrossValidation:
    """k-fold cross-validation through the real `Scanner`: each held-out fold is scanned with
    a model trained on the other folds and a store seeded with them only.

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
    cv = CrossValidation(kept, y, np.zeros(len(kept)), folds, errors)
    with_scanner = uses_scanner(config)
    for fold in range(k) if only_fold is None else [only_fold]:
        train_idx, test_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        raws = {int(i): read_sample(kept[i]) for i in (train_idx if with_scanner else [])}
        bundle, cv.train_features[fold] = fit_with_features(
            [ids[i] for i in train_idx], y[train_idx], raws=[raws[int(i)] for i in train_idx] if with_scanner else None, config=config
        )
        train = [(raws[int(i)], int(y[i])) for i in train_idx] if with_scanner else []
        scores, cv.test_features[fold] = heldout_features(config, bundle, train, [read_sample(kept[i]) for i in test_idx])
        cv.scores[test_idx] = scores
        progress(int(len(test_idx)), len(kept), f"fold {fold}")
    return cv
