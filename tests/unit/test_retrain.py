"""Retraining from reports behind the promotion gate: clean reports are promoted, mislabelled
ones are refused and the model in service stays; one user's flood is capped; contested and
distrusted reports are dropped; the previous model stays for rollback."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from mailguard.config import Config, ModelConfig, ScannerConfig, StoreConfig
from mailguard.learning.datasets import Sample, load_labels
from mailguard.errors import ModelError
from mailguard.model import current_version, list_versions, load_model, promote, rollback, save_model, save_version
from mailguard.reports.queue import Report, ReportQueue
from mailguard.learning.retrain import (
    BASE_SET,
    REPORT_SET,
    RetrainSettings,
    aggregate_reports,
    format_comparison,
    gate,
    retrain,
    user_cap,
    user_weights,
)
from mailguard.classifier.features import text_features
from mailguard.message import MessageContext
from mailguard.stores.memory import MemoryStore
from mailguard.learning.train import train

from ..conftest import HAM_WORDS, SPAM_WORDS, make_message

# a kind of spam the base corpus has never seen: only reports can teach it
NEW_SPAM_WORDS = "bitcoin wallet crypto invest returns guaranteed mining token airdrop profit exchange leverage".split()


def ham(seed: int) -> bytes:
    return make_message(HAM_WORDS, subject="agenda", seed=seed)


def spam(seed: int, words: list[str] = SPAM_WORDS) -> bytes:
    return make_message(words, subject="offer", seed=seed)


def bayes_only(model: Path) -> Config:
    return Config(scanner=ScannerConfig(scorers=("bayes",)), store=StoreConfig(backend="memory"), model=ModelConfig(path=model))


@pytest.fixture()
def base(tmp_path: Path) -> tuple[Path, list[Sample]]:
    """90 messages, half spam, in three CSV folds (fold 0 is the fixed holdout)."""
    rows = ["path,label,fold"]
    for i in range(90):
        label = "spam" if i % 2 else "ham"
        raw = spam(i) if i % 2 else ham(i)
        name = f"base/{label}/{i:03d}.eml"
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(raw)
        rows.append(f"{name},{label},{i % 3}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    samples, errors = load_labels(tmp_path / "labels.csv")
    assert not errors
    return tmp_path / "labels.csv", samples


@pytest.fixture()
def in_service(tmp_path: Path, base) -> Path:
    """A versioned model directory whose v1 (trained on the base minus fold 0) is in service."""
    out = tmp_path / "models" / "site"
    bundle, info, _ = train([s for s in base[1] if s.fold != 0], config=bayes_only(out))
    promote(out, save_version(bundle, out, info))
    return out


def reports_store(items: list[tuple[bytes, str, str]]) -> MemoryStore:
    """A store whose report queue holds ``items`` (raw, user, label), one second apart, oldest first."""
    store = MemoryStore()
    queue = ReportQueue(store)
    start = time.time() - 3600

    async def run() -> None:
        for n, (raw, user, label) in enumerate(items):
            await queue.add(raw, user, label, "cli", now=start + n)  # type: ignore[arg-type]

    asyncio.run(run())
    return store


def clean_reports() -> list[tuple[bytes, str, str]]:
    """10 honest users, each reporting 4 ham, 2 known spam and 2 spam of a new kind."""
    items = []
    for u in range(10):
        for j in range(8):
            seed = 5000 + 100 * u + j
            raw, label = [(ham(seed), "ham"), (spam(seed), "spam"), (spam(seed, NEW_SPAM_WORDS), "spam"), (ham(seed + 50), "ham")][j % 4]
            items.append((raw, f"user{u}@example.org", label))
    return items


def poisoned_reports(users: int = 12, each: int = 15) -> list[tuple[bytes, str, str]]:
    """Several colluding users reporting known spam as ham, each on messages of their own."""
    return [(spam(7000 + 100 * u + j), f"evil{u}@example.org", "ham") for u in range(users) for j in range(each)]


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text("utf-8"))


def test_clean_reports_are_promoted(base, in_service):
    labels, samples = base
    result = retrain(samples, out=in_service, config=bayes_only(in_service), store=reports_store(clean_reports()))
    assert result.promoted and not result.forced and result.gate.passed
    assert current_version(in_service) == result.version == "v2"
    assert load_model(in_service).version == "v2"
    # the reports taught the new kind of spam: the candidate catches more of the newest reports
    ev = result.evaluation[REPORT_SET]
    assert ev["candidate"]["spam"] > 0 and ev["candidate"]["catch_rate"] > ev["service"]["catch_rate"]
    assert result.evaluation[BASE_SET]["candidate"]["ham"] == 15 and result.evaluation[BASE_SET]["candidate"]["spam"] == 15
    m = manifest(result.path)
    assert m["gate"]["decision"] == "promoted" and m["gate"]["failed"] == []
    assert m["source"]["reports"]["reports"] == 80 and m["source"]["reports"]["labelled"] == 80
    assert m["source"]["reports"]["holdout_messages"] == 16 and m["source"]["reports"]["train_messages"] == 64
    assert m["training_data"]["messages"] == 60 + 64  # base minus the holdout fold, plus reports
    assert m["evaluation"]["sets"][REPORT_SET]["service"] == ev["service"]
    table = format_comparison(result)
    assert "PROMOTED: v2" in table and "newest reports" in table


def test_mislabelled_reports_are_refused_and_service_model_stays(base, in_service):
    labels, samples = base
    before = load_model(in_service)
    result = retrain(samples, out=in_service, config=bayes_only(in_service), store=reports_store(poisoned_reports()))
    assert not result.promoted and not result.gate.passed
    # the data defences could not tell (colluding users, no honest overlap): the gate did the refusing
    assert result.stats["train_messages"] == 144 and result.stats["user_cap"] is None
    base_ev = result.evaluation[BASE_SET]
    assert base_ev["candidate"]["catch_rate"] < base_ev["service"]["catch_rate"]
    assert any(r.startswith(f"{BASE_SET}: catch rate") for r in result.gate.failed)
    # pooled, the poisoned candidate would look better: on the poisoned held-out reports the
    # service has false positives and the candidate none; the gate judges each set alone
    assert result.evaluation[REPORT_SET]["service"]["false_positives"] > result.evaluation[REPORT_SET]["candidate"]["false_positives"]
    assert current_version(in_service) == "v1"
    after = load_model(in_service)
    assert after.version == "v1" and after.manifest["files"] == before.manifest["files"]
    m = manifest(in_service / result.version)
    assert m["gate"]["decision"] == "refused" and m["gate"]["failed"]
    assert [v.name for v in list_versions(in_service)] == ["v1", "v2"]
    assert "REFUSED" in format_comparison(result)


def test_force_promotes_and_rollback_undoes_it(base, in_service):
    labels, samples = base
    result = retrain(
        samples, out=in_service, config=bayes_only(in_service), store=reports_store(poisoned_reports()),
        settings=RetrainSettings(force=True),
    )
    assert result.promoted and result.forced
    assert manifest(result.path)["gate"]["decision"] == "forced"
    assert current_version(in_service) == result.version
    assert rollback(in_service) == (result.version, "v1")
    assert load_model(in_service).version == "v1"


def test_no_model_in_service_passes_on_sanity(base, tmp_path):
    labels, samples = base
    out = tmp_path / "fresh"
    result = retrain(samples, out=out, config=bayes_only(tmp_path / "no-model-here"), settings=RetrainSettings(use_reports=False))
    assert result.promoted and result.service is None
    assert any("no model in service" in r for r in result.gate.held)
    assert current_version(out) == "v1"
    with pytest.raises(ModelError, match="nothing to roll back"):
        rollback(out)


def test_model_in_service_elsewhere_is_kept_for_rollback(base, tmp_path):
    labels, samples = base
    bundle, info, _ = train([s for s in samples if s.fold != 0], config=bayes_only(tmp_path))
    plain = save_model(bundle, tmp_path / "plain", {**info, "version": "shipped"})
    out = tmp_path / "site"
    result = retrain(samples, out=out, config=bayes_only(plain), store=reports_store(clean_reports()))
    assert result.promoted and result.imported == "v1" and result.version == "v2"
    assert manifest(out / "v1")["imported_from"].startswith(str(plain))
    assert rollback(out) == ("v2", "v1")
    docs = [text_features(MessageContext(spam(9999))), text_features(MessageContext(ham(9998)))]
    np.testing.assert_array_equal(load_model(out).bayes.decision_function(docs), bundle.bayes.decision_function(docs))


def test_a_flooding_user_cannot_poison_the_candidate(base, in_service):
    labels, samples = base
    flood = [(spam(8000 + j), "flooder@example.org", "ham") for j in range(150)]
    honest = [(ham(6000 + 10 * u + j) if j % 2 else spam(6000 + 10 * u + j), f"user{u}@example.org", "ham" if j % 2 else "spam")
              for u in range(10) for j in range(6)]
    store = reports_store(honest + flood)
    # with the cap effectively off, the flood would have wrecked the candidate (and the gate refused it)
    uncapped = retrain(samples, out=in_service, config=bayes_only(in_service), store=store, settings=RetrainSettings(max_user_share=0.99))
    assert uncapped.stats["user_cap"] is None and not uncapped.promoted
    assert uncapped.evaluation[BASE_SET]["candidate"]["catch_rate"] < 0.5
    result = retrain(samples, out=in_service, config=bayes_only(in_service), store=store)
    stats = result.stats
    assert stats["user_cap"] is not None and stats["capped_users"] == 1
    assert 150 - stats["capped_reports_dropped"] <= 0.1 * (60 + 150 - stats["capped_reports_dropped"])
    assert result.promoted, format_comparison(result)
    assert result.evaluation[BASE_SET]["candidate"]["catch_rate"] == result.evaluation[BASE_SET]["service"]["catch_rate"] == 1.0


def _report(digest: str, user: str, label: str, t: float = 0.0) -> Report:
    return Report(digest=digest, user=user, label=label, time=t, source="cli", size=100)  # type: ignore[arg-type]


def _digest(n: int) -> str:
    return f"{n:064x}"


def test_share_cap_keeps_a_deterministic_sample_of_the_flooder():
    honest = [_report(_digest(1000 + 10 * u + j), f"u{u}", "spam", t=u * 10 + j) for u in range(9) for j in range(5)]
    flood = [_report(_digest(j), "flooder", "ham", t=100 + j) for j in range(200)]
    labelled, stats = aggregate_reports(honest + flood, max_user_share=0.1)
    counted = [m for m in labelled if "flooder" in m.users]
    assert stats["user_cap"] == len(counted) and len(counted) <= 0.1 * len(labelled)
    assert stats["capped_reports_dropped"] == 200 - len(counted)
    assert all(m.label == "spam" for m in labelled if "flooder" not in m.users)
    again, _ = aggregate_reports(list(reversed(honest + flood)), max_user_share=0.1)
    assert {m.digest for m in again} == {m.digest for m in labelled}  # same sample whatever the order
    loose, loose_stats = aggregate_reports(honest + flood, max_user_share=0.9)
    assert loose_stats["user_cap"] is None and len(loose) == 245


@pytest.mark.parametrize(
    "counts, share, base_size, expected",
    [
        ({"a": 5, "b": 5, "c": 5}, 0.1, 1000, None),  # fewer users than 1/share: equal shares, nobody over
        ({"a": 100, "b": 10, "c": 10}, 0.1, 1000, 10),  # equal share of three
        ({f"u{i}": 10 for i in range(20)} | {"big": 1000}, 0.1, 0, 22),  # C <= 0.1 * (200 + C)
        ({"only": 1000}, 0.1, 500, 55),  # alone: at most a tenth of all training data, C <= 0.1 * (500 + C)
        ({"a": 3}, 0.1, 1000, None),
        ({"a": 5, "b": 5, "c": 5}, 0.1, 0, 1),  # no base data: the tenth of all data binds; at least 1 each
    ],
)
def test_user_cap(counts, share, base_size, expected):
    cap = user_cap(counts, share, base_size)
    assert cap == expected
    if cap is not None:  # the cap is the largest that satisfies the bounds
        used = sum(min(v, cap) for v in counts.values())
        assert cap == 1 or (cap <= max(share, 1 / len(counts)) * used + 1e-9 and cap <= share * (base_size + used) + 1e-9)
        used1 = sum(min(v, cap + 1) for v in counts.values())
        assert cap + 1 > max(share, 1 / len(counts)) * used1 or cap + 1 > share * (base_size + used1)


def test_contested_and_distrusted_reports_are_dropped():
    reports = [
        _report(_digest(1), "a", "spam"), _report(_digest(1), "b", "ham"),  # 1 vs 1: contested
        _report(_digest(2), "a", "spam"), _report(_digest(2), "b", "spam"), _report(_digest(2), "c", "ham"),  # 2 vs 1
    ]
    # "liar" contradicts three honest users on three messages, and reports one message alone
    for n in range(3, 6):
        reports += [_report(_digest(n), u, "spam") for u in ("x", "y", "z")] + [_report(_digest(n), "liar", "ham")]
    reports.append(_report(_digest(99), "liar", "ham"))
    weights = user_weights(reports)
    assert weights["liar"] == pytest.approx(1 / 4) and weights["x"] == 1.0
    labelled, stats = aggregate_reports(reports, max_user_share=0.9)
    by_digest = {m.digest: m for m in labelled}
    assert _digest(1) not in by_digest and stats["dropped_contested"] == 1
    assert by_digest[_digest(2)].label == "spam"
    assert all(by_digest[_digest(n)].label == "spam" for n in range(3, 6))
    assert _digest(99) not in by_digest and stats["dropped_distrusted_only"] == 1 and stats["distrusted_users"] == 1


def test_newest_reports_are_held_out_and_base_holdout_reports_dropped(base, in_service, tmp_path):
    labels, samples = base
    older = [(ham(4000 + j), f"user{j % 10}@example.org", "ham") for j in range(40)]
    newest = [(spam(4100 + j), f"user{j % 10}@example.org", "spam") for j in range(10)]
    leak = [(samples[0].path.read_bytes(), "user1@example.org", "spam")]  # a base holdout message (fold 0)
    assert samples[0].fold == 0
    result = retrain(samples, out=in_service, config=bayes_only(in_service), store=reports_store(leak + older + newest))
    assert result.stats["dropped_in_base_holdout"] == 1
    held = result.evaluation[REPORT_SET]["candidate"]
    assert (held["spam"], held["ham"]) == (10, 0)  # the newest 20% of 50 are the 10 newest
    assert result.stats["train_messages"] == 40


def test_plain_output_directory_and_bad_settings_are_refused(base, tmp_path, tiny_model):
    labels, samples = base
    plain = save_model(tiny_model, tmp_path / "plain", {"version": "p"})
    with pytest.raises(ModelError, match="unversioned"):
        retrain(samples, out=plain, config=bayes_only(plain), settings=RetrainSettings(use_reports=False))
    with pytest.raises(ValueError, match="no fold 7"):
        retrain(samples, out=tmp_path / "o", config=bayes_only(plain), settings=RetrainSettings(holdout_fold=7, use_reports=False))
    for bad in ({"holdout_reports": 1.0}, {"max_user_share": 0.0}, {"tolerance": -0.1}, {"min_agreement": 0.5}):
        with pytest.raises(ValueError):
            RetrainSettings(**bad)


def test_gate_rule():
    def m(ham, spam, fp, caught):
        return {"ham": ham, "spam": spam, "false_positives": fp, "caught": caught, "catch_rate": caught / spam if spam else None}

    service = {BASE_SET: m(10, 10, 1, 8), REPORT_SET: m(0, 0, 0, 0)}
    assert gate({BASE_SET: m(10, 10, 1, 8), REPORT_SET: m(0, 0, 0, 0)}, service).passed  # equal is not worse
    assert not gate({BASE_SET: m(10, 10, 2, 10), REPORT_SET: m(0, 0, 0, 0)}, service).passed  # one more FP
    assert not gate({BASE_SET: m(10, 10, 0, 7), REPORT_SET: m(0, 0, 0, 0)}, service).passed  # lower catch rate
    assert gate({BASE_SET: m(10, 10, 0, 7), REPORT_SET: m(0, 0, 0, 0)}, service, tolerance=0.1).passed
    assert not gate({BASE_SET: m(0, 0, 0, 0)}, None).passed  # nothing held out
    assert not gate({BASE_SET: m(100, 10, 2, 10)}, None).passed  # sanity: 2% false positives
    assert gate({BASE_SET: m(100, 10, 1, 6)}, None).passed


def test_a_service_model_trained_on_the_base_holdout_is_judged_by_a_refit_without_it(base, in_service, tmp_path):
    """The shipped model learned its whole corpus, holdout included: its score there would be
    an in-sample yardstick no candidate can meet. Its training, redone on the base training
    part alone, stands in for it on the base holdout (the same model as `in_service`'s v1)."""
    labels, samples = base
    whole = tmp_path / "models" / "whole"
    bundle, info, _ = train(samples, config=bayes_only(whole))
    save_model(bundle, whole, info)
    result = retrain(samples, out=tmp_path / "models" / "new", config=bayes_only(whole), store=reports_store(clean_reports()))
    reference = retrain(samples, out=in_service, config=bayes_only(in_service), store=reports_store(clean_reports()))
    assert result.yardstick and reference.yardstick is None
    assert result.evaluation[BASE_SET]["service"] == reference.evaluation[BASE_SET]["service"]
    assert "trained on the base holdout" in format_comparison(result)
    assert manifest(result.path)["gate"]["base_yardstick"].startswith("the model in service was trained on the base holdout")
