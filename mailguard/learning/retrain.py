"""Offline retraining from the base corpus plus users' reports, behind a promotion gate.

``mailguard retrain`` rebuilds the classifier and the combiner weights, and puts the result
in service only if it is no worse than the model in service on held-out mail, so that a
bad batch of reports (mistaken or malicious) cannot silently make filtering worse.

1. Base corpus: one fold is held out (``--holdout-fold``, default 0 when the CSV has folds;
   without folds, the corpus protocol's ``fold_of(bytes, 5)``); the rest is training data.
2. Reports (`ReportQueue` in the configured store), made robust against poisoning, in order:

   a. a report on a message of the base holdout (same `report_digest`) is dropped, so the
      evaluation never sees mail the candidate was trained on;
   b. reliability: on messages that others reported too, each user agrees or disagrees with
      the other reporters' majority; the user's weight is ``(agree + 1) / (agree + disagree
      + 1)`` (1 with no overlap, small for one who keeps contradicting others). A user below
      ``distrust_below`` (0.5: contradicted others at least twice more than agreed) is
      *distrusted*: messages only distrusted users reported are dropped;
   c. share cap: each user counts at most ``max_user_share`` of the report data used, and at
      most that share of all training data (base + reports). With fewer than
      ``1 / max_user_share`` reporters the first bound would starve everyone, so it is then
      an equal share each (``1 / users``). A user over the cap keeps a deterministic sample:
      the reports with the smallest ``sha256(user, digest)``, the same on every run;
   d. vote: a message's label is the weighted majority of its remaining reporters, kept only
      when the winner has ``min_agreement`` (2/3) of the weight; ties and contested messages
      are dropped;
   e. the newest ``holdout_reports`` share of the labelled messages (by their newest report)
      is held out for evaluation, the rest is training data.

3. The candidate is trained with `mailguard.learning.train.train` on base training data + reports.
4. Candidate and model in service (the config's model path) are scanned through the real
   `Scanner` on each held-out set, each with a fresh store seeded with the candidate's
   training data (the same seeding for both, so only the models differ), at the policy's
   default threshold. When the model in service was trained on the whole base corpus (its
   manifest's training-data hash; the shipped model is), it has learned the base holdout and
   its score there is in-sample: its training redone on the base training part stands in for
   it on that set (one more training), and the comparison says so.
5. Gate: on *each* held-out set (base holdout, newest reports) the candidate must have no
   more false positives and a catch rate no lower than the service's minus ``tolerance``.
   Each set separately, not pooled: report labels are what an attacker controls, and a
   candidate trained on poisoned reports looks good on poisoned held-out reports; the base
   holdout is the trusted yardstick. With no model in service the candidate must pass a
   sanity check (catch at least half the held-out spam, at most 1% false positives).

The candidate is always written as a new version (``<out>/v<N>``) with its manifest (data,
evaluation, gate decision and reasons); only a promoted one becomes ``CURRENT``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, UsersConfig
from .datasets import Sample, data_hash
from ..errors import ModelError
from .evaluate import quality_metrics
from ..model import ModelBundle, current_version, history, is_versioned, load_model, promote, save_version
from ..policy import LEVELS
from ..reports.queue import Report, ReportQueue
from ..reports.sources import report_digest
from ..scorer import Label
from ..stores import Store, open_store
from .train import Progress, fold_of, heldout_features, read_sample, train, uses_scanner

__all__ = [
    "LabelledReport",
    "RetrainResult",
    "RetrainSettings",
    "aggregate_reports",
    "format_comparison",
    "gate",
    "retrain",
    "user_cap",
]

EXIT_REFUSED = 3  # `mailguard retrain`: the gate refused the candidate (it is kept, not promoted)
SANITY_MIN_CATCH = 0.5
SANITY_MAX_FP_RATE = 0.01
BASE_SET, REPORT_SET = "base holdout", "newest reports"
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _quiet(done: int, total: int, what: str) -> None:
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrainSettings:
    """Knobs of one retraining run (the CLI's options); see the module docstring."""

    holdout_fold: int | None = None  # None: 0 when the CSV has folds, else fold_of(bytes, folds) == 0
    folds: int = 5  # for a CSV without folds
    use_reports: bool = True
    since: float | None = None  # reports made at or after this time (epoch s); None: the whole retention
    max_reports: int = 200_000  # newest reports read; older ones beyond this are ignored
    holdout_reports: float = 0.2
    max_user_share: float = 0.1
    min_agreement: float = 2 / 3
    distrust_below: float = 0.5
    tolerance: float = 0.0  # catch-rate points (0.01 = 1%) the candidate may lose
    force: bool = False

    def __post_init__(self) -> None:
        for name in ("holdout_reports", "max_user_share", "tolerance"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name.replace('_', '-')} must be at least 0 and below 1")
        if self.max_user_share <= 0:
            raise ValueError("max-user-share must be above 0")
        if not 0.5 < self.min_agreement <= 1.0:
            raise ValueError("min_agreement must be above 0.5 and at most 1")
        if self.max_reports < 1 or self.folds < 2:
            raise ValueError("max_reports must be at least 1 and folds at least 2")
        if self.holdout_fold is not None and self.holdout_fold < 0:
            raise ValueError("holdout-fold must not be negative")


@dataclasses.dataclass(frozen=True)
class LabelledReport:
    """A reported message with the label its reporters agreed on."""

    digest: str
    label: Label
    time: float  # newest counted report
    users: tuple[str, ...]  # reporters counted (after the share cap)


# -- poisoning resistance -------------------------------------------------------------------


def user_cap(counts: Mapping[str, int], share: float, base: int = 0) -> int | None:
    """The most reports one user may count, or None when nobody is over it.

    The largest C with, for the capped counts ``min(c, C)``: C <= max(share, 1/users) * their
    sum, and C <= share * (base + their sum). Both sides are concave in C and hold at 0, so
    the feasible C form an interval and a binary search finds its end. At least 1."""
    if not counts:
        return None
    values = sorted(counts.values())
    equal = max(share, 1.0 / len(values))

    def fits(c: int) -> bool:
        used = sum(min(v, c) for v in values)
        return c <= equal * used + 1e-9 and c <= share * (base + used) + 1e-9

    top = values[-1]
    if fits(top):
        return None
    lo, hi = 1, top  # hi does not fit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _sample_key(user: str, digest: str) -> str:
    return hashlib.sha256(f"{user}\n{digest}".encode()).hexdigest()


def user_weights(reports: Iterable[Report]) -> dict[str, float]:
    """Each user's weight: ``(agree + 1) / (agree + disagree + 1)`` against the other
    reporters' majority on the messages others reported too (ties among the others skipped)."""
    by_digest: dict[str, list[Report]] = defaultdict(list)
    for r in reports:
        by_digest[r.digest].append(r)
    agree: dict[str, int] = defaultdict(int)
    disagree: dict[str, int] = defaultdict(int)
    users: set[str] = set()
    for group in by_digest.values():
        users.update(r.user for r in group)
        spam = sum(r.label == "spam" for r in group)
        ham = len(group) - spam
        for r in group:
            others_spam, others_ham = spam - (r.label == "spam"), ham - (r.label == "ham")
            if others_spam == others_ham:
                continue
            majority = "spam" if others_spam > others_ham else "ham"
            if r.label == majority:
                agree[r.user] += 1
            else:
                disagree[r.user] += 1
    return {u: (agree[u] + 1) / (agree[u] + disagree[u] + 1) for u in users}


def aggregate_reports(
    reports: Sequence[Report],
    *,
    max_user_share: float = 0.1,
    min_agreement: float = 2 / 3,
    distrust_below: float = 0.5,
    base_messages: int = 0,
) -> tuple[list[LabelledReport], dict[str, Any]]:
    """Labelled messages from raw reports (weights, share cap, vote: see the module
    docstring), oldest first, and what was done (counts for the manifest)."""
    weights = user_weights(reports)
    by_user: dict[str, list[Report]] = defaultdict(list)
    for r in reports:
        by_user[r.user].append(r)
    cap = user_cap({u: len(rs) for u, rs in by_user.items()}, max_user_share, base_messages)
    kept: list[Report] = []
    capped: dict[str, list[int]] = {}
    for user, rs in by_user.items():
        if cap is not None and len(rs) > cap:
            rs = sorted(rs, key=lambda r: _sample_key(user, r.digest))[:cap]
            capped[user] = [len(by_user[user]), cap]
        kept.extend(rs)
    groups: dict[str, list[Report]] = defaultdict(list)
    for r in kept:
        groups[r.digest].append(r)
    distrusted = {u for u, w in weights.items() if w < distrust_below}
    labelled: list[LabelledReport] = []
    contested = dropped_distrusted = 0
    for digest, group in groups.items():
        if all(r.user in distrusted for r in group):
            dropped_distrusted += 1
            continue
        spam_w = sum(weights[r.user] for r in group if r.label == "spam")
        ham_w = sum(weights[r.user] for r in group if r.label == "ham")
        winner: Label = "spam" if spam_w > ham_w else "ham"
        if spam_w == ham_w or max(spam_w, ham_w) < min_agreement * (spam_w + ham_w) - 1e-12:
            contested += 1
            continue
        labelled.append(
            LabelledReport(digest, winner, max(r.time for r in group), tuple(sorted(r.user for r in group)))
        )
    labelled.sort(key=lambda m: (m.time, m.digest))
    stats = {
        "reports": len(reports),
        "users": len(by_user),
        "messages": len(groups),
        "user_cap": cap,
        "capped_users": len(capped),
        "capped_reports_dropped": sum(had - keep for had, keep in capped.values()),
        "distrusted_users": len(distrusted),
        "dropped_contested": contested,
        "dropped_distrusted_only": dropped_distrusted,
        "labelled": len(labelled),
    }
    return labelled, stats


# -- reading the inputs ---------------------------------------------------------------------


async def _collect(
    store: Store, users: UsersConfig, since: float | None, limit: int, folder: Path
) -> tuple[list[Report], dict[str, Path]]:
    """The newest ``limit`` reports (oldest first) and their messages, written to ``folder``."""
    queue = ReportQueue.from_config(store, users)
    newest: deque[Report] = deque(maxlen=limit)
    files: dict[str, Path] = {}
    async for report, raw in queue.iter_reports(since=since):
        if not _DIGEST.fullmatch(report.digest):
            continue  # not a key the queue writes: never a file name
        if report.digest not in files:
            files[report.digest] = folder / f"{report.digest}.eml"
            files[report.digest].write_bytes(raw)
        newest.append(report)
    return list(newest), files


def _split_base(samples: Sequence[Sample], settings: RetrainSettings) -> tuple[list[Sample], list[Sample], str]:
    """(training, holdout, description) of the base corpus."""
    if any(s.fold is not None for s in samples):
        fold = 0 if settings.holdout_fold is None else settings.holdout_fold
        if fold not in {s.fold for s in samples}:
            raise ValueError(f"the base corpus has no fold {fold}")
        return [s for s in samples if s.fold != fold], [s for s in samples if s.fold == fold], f"CSV fold {fold}"
    fold = 0 if settings.holdout_fold is None else settings.holdout_fold
    if fold >= settings.folds:
        raise ValueError(f"the base corpus has no folds: holdout-fold must be below {settings.folds}")
    train_part, holdout = [], []
    for s in samples:
        try:
            in_holdout = fold_of(read_sample(s), settings.folds) == fold
        except OSError:
            in_holdout = False  # train() reports it as unreadable
        (holdout if in_holdout else train_part).append(s)
    return train_part, holdout, f"fold_of(bytes, {settings.folds}) == {fold}"


def _readable(samples: Sequence[Sample]) -> tuple[list[bytes], np.ndarray, list[str]]:
    raws, labels, errors = [], [], []
    for s in samples:
        try:
            raws.append(read_sample(s))
            labels.append(s.y)
        except OSError as exc:
            errors.append(f"{s.path}: cannot read: {exc.strerror or exc}")
    return raws, np.array(labels, dtype=int), errors


def _service_model(path: Path) -> ModelBundle | None:
    """The model in service, None when there is none; ModelError when one is there but bad."""
    if not path.exists():
        return None
    if is_versioned(path) and current_version(path) is None:
        return None
    if not is_versioned(path) and not (path / "manifest.json").exists():
        return None
    return load_model(path)


def trained_on(model: ModelBundle, base: Sequence[Sample]) -> bool:
    """Whether ``model`` was trained on exactly the whole ``base`` corpus (its manifest's
    training-data hash), and so on its holdout too. A model trained on some other superset
    of the holdout cannot be told from its manifest."""
    recorded = (model.manifest.get("training_data") or {}).get("sha256")
    return bool(recorded) and recorded == data_hash(list(base))


# -- evaluation and the gate ----------------------------------------------------------------


def _metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """What the gate compares; JSON-clean (None where a rate has no denominator)."""
    ham, spam = int((y == 0).sum()), int((y == 1).sum())
    fp = int((scores[y == 0] >= threshold).sum())
    caught = int((scores[y == 1] >= threshold).sum())
    out: dict[str, Any] = {
        "ham": ham,
        "spam": spam,
        "false_positives": fp,
        "caught": caught,
        "catch_rate": caught / spam if spam else None,
        "fp_rate": fp / ham if ham else None,
    }
    if ham and spam:
        out["one_minus_auc_pct"] = quality_metrics(y, scores, threshold)["one_minus_auc_pct"]
    return out


@dataclasses.dataclass(frozen=True)
class Gate:
    failed: tuple[str, ...]  # the comparisons the candidate lost: why it is refused
    held: tuple[str, ...] = ()  # the ones it passed

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.failed + self.held


def gate(
    candidate: Mapping[str, Mapping[str, Any]], service: Mapping[str, Mapping[str, Any]] | None, *, tolerance: float = 0.0
) -> Gate:
    """The promotion rule (module docstring, point 5) over per-set metrics from `_metrics`."""
    failing: list[str] = []
    passing: list[str] = []
    sets = [name for name, m in candidate.items() if m["ham"] or m["spam"]]
    if not sets:
        return Gate(("nothing was held out to evaluate on",))
    if service is None:
        ham = sum(candidate[s]["ham"] for s in sets)
        spam = sum(candidate[s]["spam"] for s in sets)
        if not ham or not spam:
            return Gate(("no model in service, and the held-out data lacks ham or spam for a sanity check",))
        catch = sum(candidate[s]["caught"] for s in sets) / spam
        fp_rate = sum(candidate[s]["false_positives"] for s in sets) / ham
        (passing if catch >= SANITY_MIN_CATCH else failing).append(
            f"no model in service: catch rate {catch:.2%} {'>=' if catch >= SANITY_MIN_CATCH else '<'} {SANITY_MIN_CATCH:.0%}"
        )
        (passing if fp_rate <= SANITY_MAX_FP_RATE else failing).append(
            f"no model in service: false-positive rate {fp_rate:.2%} {'<=' if fp_rate <= SANITY_MAX_FP_RATE else '>'} {SANITY_MAX_FP_RATE:.0%}"
        )
        return Gate(tuple(failing), tuple(passing))
    for name in sets:
        c, s = candidate[name], service[name]
        ok = c["false_positives"] <= s["false_positives"]
        (passing if ok else failing).append(
            f"{name}: {c['false_positives']} false positive(s) {'<=' if ok else '>'} {s['false_positives']} in service"
        )
        if c["spam"]:
            ok = c["catch_rate"] >= s["catch_rate"] - tolerance - 1e-12
            (passing if ok else failing).append(
                f"{name}: catch rate {c['catch_rate']:.2%} {'>=' if ok else '<'} {s['catch_rate']:.2%} in service"
                + (f" - {tolerance:.2%}" if tolerance else "")
            )
    return Gate(tuple(failing), tuple(passing))


def _scores(config: Config, bundle: ModelBundle, seed_with: Sequence[tuple[bytes, int]], raws: Sequence[bytes]) -> np.ndarray:
    if not raws:
        return np.zeros(0)
    return heldout_features(config, bundle, seed_with, raws)[0]


# -- the run ----------------------------------------------------------------------------------


@dataclasses.dataclass
class RetrainResult:
    version: str  # the candidate's version directory name under ``out``
    path: Path
    promoted: bool
    forced: bool  # promoted although the gate refused it
    gate: Gate
    threshold: float
    evaluation: dict[str, dict[str, dict[str, Any]]]  # set -> "candidate"/"service" -> metrics
    service: str | None  # "path (version)" of the model in service, None without one
    stats: dict[str, Any]
    errors: list[str]
    imported: str | None = None  # version the service model was recorded as, for rollback
    yardstick: str | None = None  # why the base holdout's "service" row is a refit, when it is


def retrain(
    base: Sequence[Sample],
    *,
    out: str | os.PathLike[str],
    config: Config,
    settings: RetrainSettings | None = None,
    store: Store | None = None,
    labels_source: str = "",
    progress: Progress = _quiet,
) -> RetrainResult:
    """Train a candidate on ``base`` + the store's reports, gate it against the model in
    service (``config.model.path``), write it as a new version of ``out`` and promote it
    when it passes (or ``settings.force``). ``store`` defaults to the configured one.
    Synchronous (it runs its own event loops): from asyncio code, call it in a thread."""
    settings = settings or RetrainSettings()
    out = Path(out)
    if (out / "manifest.json").exists() and not is_versioned(out):
        raise ModelError(f"{out} holds a single (unversioned) model; retrain into a new directory")
    service = _service_model(Path(config.model.path))
    base_train, base_holdout, holdout_desc = _split_base(base, settings)
    holdout_raws, holdout_y, errors = _readable(base_holdout)
    if not len(holdout_raws):
        raise ValueError(f"the base holdout ({holdout_desc}) has no readable message")
    threshold = LEVELS[config.policy.level].with_overrides(config.policy.thresholds).required

    with tempfile.TemporaryDirectory(prefix="mailguard-retrain-") as tmp:
        reports: list[Report] = []
        files: dict[str, Path] = {}
        if settings.use_reports:
            own = store is None
            store_ = open_store(config.store) if own else store

            async def collect() -> tuple[list[Report], dict[str, Path]]:
                try:
                    return await _collect(store_, config.users, settings.since, settings.max_reports, Path(tmp))
                finally:
                    if own:
                        await store_.close()

            reports, files = asyncio.run(collect())
        holdout_digests = {report_digest(raw) for raw in holdout_raws}
        leaked = [r for r in reports if r.digest in holdout_digests]
        reports = [r for r in reports if r.digest not in holdout_digests]
        labelled, stats = aggregate_reports(
            reports,
            max_user_share=settings.max_user_share,
            min_agreement=settings.min_agreement,
            distrust_below=settings.distrust_below,
            base_messages=len(base_train),
        )
        n_hold = int(len(labelled) * settings.holdout_reports + 0.5)
        report_train, report_holdout = labelled[: len(labelled) - n_hold], labelled[len(labelled) - n_hold :]
        stats.update(
            dropped_in_base_holdout=len(leaked),
            train_messages=len(report_train),
            holdout_messages=len(report_holdout),
            holdout_share=settings.holdout_reports,
            max_user_share=settings.max_user_share,
            min_agreement=round(settings.min_agreement, 4),
            since=_iso(settings.since) if settings.since is not None else ("all" if settings.use_reports else "none"),
            sha256=_labels_hash(report_train),
        )

        samples = list(base_train) + [Sample(files[m.digest], m.label) for m in report_train]
        candidate, info, train_errors = train(samples, config=config, progress=progress)
        errors += train_errors

        seed_with: list[tuple[bytes, int]] = []
        if uses_scanner(config):  # only seeded scorers (reputation, fingerprints) need it
            raws, y, _ = _readable(samples)
            seed_with = list(zip(raws, (int(v) for v in y)))
        report_raws = [files[m.digest].read_bytes() for m in report_holdout]
        report_y = np.array([1 if m.label == "spam" else 0 for m in report_holdout], dtype=int)
        test = list(holdout_raws) + report_raws
        models = {"candidate": candidate} | ({"service": service} if service is not None else {})
        evaluation: dict[str, dict[str, dict[str, Any]]] = {BASE_SET: {}, REPORT_SET: {}}
        for who, bundle in models.items():
            progress(0, len(test), f"scanning held-out mail with the {who} model")
            scores = _scores(config, bundle, seed_with, test)
            evaluation[BASE_SET][who] = _metrics(holdout_y, scores[: len(holdout_raws)], threshold)
            evaluation[REPORT_SET][who] = _metrics(report_y, scores[len(holdout_raws) :], threshold)
        yardstick = None
        if service is not None and trained_on(service, base):
            # the model in service learned the base holdout: its score there is no yardstick
            # (the shipped model learned all of the SpamAssassin corpus). Its recipe refitted on
            # the base training part alone stands in for it on that set.
            progress(0, len(base_train), "the model in service was trained on the base holdout: refitting it without")
            refit, _, _ = train(base_train, config=config, progress=progress)
            scores = _scores(config, refit, seed_with, list(holdout_raws))
            evaluation[BASE_SET]["service"] = _metrics(holdout_y, scores, threshold)
            yardstick = "the model in service was trained on the base holdout; on it, the same training on the base training part stands in"

    decision = gate(
        {k: v["candidate"] for k, v in evaluation.items()},
        {k: v["service"] for k, v in evaluation.items()} if service is not None else None,
        tolerance=settings.tolerance,
    )
    promoting = decision.passed or settings.force
    forced = promoting and not decision.passed
    service_desc = f"{service.path} ({service.version})" if service is not None else None

    imported = None
    first_here = not out.exists() or not history(out)
    service_elsewhere = service is not None and service.path is not None and out.resolve() not in service.path.resolve().parents
    if promoting and service is not None and first_here and service_elsewhere:
        # first promotion here: keep the model in service as a version, so rollback can return to it
        imported = save_version(service, out, {**_carried(service.manifest), "imported_from": service_desc})
        promote(out, imported, note=f"imported {service_desc}: the model in service before the first retrain")

    info.update(
        source={"labels": labels_source, "base_holdout": holdout_desc, "base_training_messages": len(base_train), "reports": stats},
        evaluation={
            "threshold": threshold,
            "protocol": "real Scanner on each held-out set, store seeded with the candidate's training data for both models",
            "sets": evaluation,
        },
        gate={
            "base_yardstick": yardstick or "the model in service",
            "decision": "forced" if forced else ("promoted" if promoting else "refused"),
            "failed": list(decision.failed),
            "held": list(decision.held),
            "tolerance": settings.tolerance,
            "service": service_desc,
        },
    )
    version = save_version(candidate, out, info)
    if promoting:
        promote(out, version, note=("forced past the gate" if forced else "passed the gate") + (f" vs {service_desc}" if service_desc else ""))
    return RetrainResult(
        version=version,
        path=out / version,
        promoted=promoting,
        forced=forced,
        gate=decision,
        threshold=threshold,
        evaluation=evaluation,
        service=service_desc,
        stats=stats,
        errors=errors,
        imported=imported,
        yardstick=yardstick,
    )


def _carried(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What an imported model's manifest keeps (save_version writes hashes, schema and name anew)."""
    return {k: v for k, v in manifest.items() if k not in ("files", "schema_version", "bayes_params", "version", "created")}


def _labels_hash(labelled: Sequence[LabelledReport]) -> str:
    digest = hashlib.sha256()
    for m in labelled:
        digest.update(f"{m.label}\t{m.digest}\n".encode())
    return digest.hexdigest()


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def format_comparison(result: RetrainResult) -> str:
    """The table `mailguard retrain` prints: per held-out set, both models, then the decision."""
    lines = [
        f"threshold {result.threshold:.2f}; model in service: {result.service or 'none'}",
        f"{'held-out set':<16} {'model':<10} {'ham':>6} {'spam':>6} {'FP':>5} {'caught':>7} {'catch %':>8}",
    ]
    for name, models in result.evaluation.items():
        for who in ("service", "candidate"):
            m = models.get(who)
            if m is None or not (m["ham"] or m["spam"]):
                continue
            catch = f"{m['catch_rate'] * 100:.2f}" if m["catch_rate"] is not None else "-"
            lines.append(f"{name:<16} {who:<10} {m['ham']:>6} {m['spam']:>6} {m['false_positives']:>5} {m['caught']:>7} {catch:>8}")
    s = result.stats
    lines.append(
        f"reports: {s['reports']} from {s['users']} user(s) -> {s['labelled']} labelled message(s) "
        f"({s['train_messages']} trained on, {s['holdout_messages']} held out); user cap {s['user_cap'] or 'none'} "
        f"({s['capped_reports_dropped']} report(s) over it), {s['dropped_contested']} contested, "
        f"{s['dropped_distrusted_only']} from distrusted users only"
    )
    if result.yardstick:
        lines.append(f"note: {result.yardstick}")
    verdict = "FORCED (gate refused)" if result.forced else ("PROMOTED" if result.promoted else "REFUSED")
    lines.append(f"{verdict}: {result.version} at {result.path}")
    lines.extend(f"  {reason}" for reason in result.gate.reasons)
    if result.imported:
        lines.append(f"  (the previous model in service was kept as {result.imported}, for mailguard model rollback)")
    return "\n".join(lines)
