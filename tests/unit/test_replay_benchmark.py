"""The benchmarks' own logic: the replay's ordering, warm-up and TREC measures; the classifier grid."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from mailguard.config import Config
from mailguard.learning.datasets import Sample
from mailguard.message import MessageContext

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    # benchmarks import common.py from beside them; the folder is on sys.path only while one
    # loads: left there, its milter.py would hide pymilter's `milter` from later imports (and
    # from the worker processes test_pool.py spawns, which inherit sys.path)
    folder = str(ROOT / "benchmarks")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


replay = _load("replay")
latency = _load("report_latency")

RECEIVED = "Received: from a.example (a.example [192.0.2.1]) by mx.example; {when}\n"


def mail(date: str | None, received: str | None, body: str = "hello") -> bytes:
    head = RECEIVED.format(when=received) if received else ""
    if date is not None:
        head += f"Date: {date}\n"
    return f"{head}From: a@example.net\nSubject: s\n\n{body}\n".encode()


def test_date_header_is_used_when_close_to_the_received_date():
    ctx = MessageContext(mail("Tue, 20 Aug 2002 10:00:00 +0000", "Tue, 20 Aug 2002 10:05:00 +0000"))
    when, source = replay.written_at(ctx)
    assert source == "date"
    assert when == datetime(2002, 8, 20, 10, 0, tzinfo=timezone.utc)


def test_forged_or_broken_date_gives_way_to_the_received_date():
    for date in ("Sat, 14 Sep 102 02:29:32 -0500", "Mon, 1 Jan 2028 00:00:00 +0000", "2002/09/14 Sat 02:29:32 CDT"):
        when, source = replay.written_at(MessageContext(mail(date, "Sat, 14 Sep 2002 08:00:00 +0000")))
        assert source == "received", date
        assert when == datetime(2002, 9, 14, 8, 0, tzinfo=timezone.utc)


def test_no_date_at_all_keeps_the_file_order(tmp_path):
    raws = [
        mail("Tue, 20 Aug 2002 10:00:00 +0000", None, "a"),
        mail(None, None, "b"),  # undated: stays right behind "a"
        mail("Mon, 19 Aug 2002 10:00:00 +0000", None, "c"),
        mail("garbage", None, "d"),  # unreadable Date and no Received: behind "c"
    ]
    samples = []
    for n, raw in enumerate(raws):
        path = tmp_path / f"{n}.eml"
        path.write_bytes(raw)
        samples.append(Sample(path, "ham"))
    stream = replay.chronological(samples, Config())
    assert [m.sample.path.name for m in stream] == ["2.eml", "3.eml", "0.eml", "1.eml"]
    assert [m.source for m in stream] == ["date", "file order", "date", "file order"]


def test_warmup_holds_enough_of_each_class():
    y = np.array([1] * 50 + [0, 1] * 25)
    n = replay.warmup_length(y, 5.0, 10)
    assert (y[:n] == 0).sum() == 10 and (y[:n] == 1).sum() >= 10
    assert (y[: n - 1] == 0).sum() < 10  # the shortest such prefix
    assert replay.warmup_length(np.array([1, 0] * 50), 20.0, 1) == 20  # the percentage rules when both classes come early
    assert replay.warmup_length(np.ones(10, dtype=int), 5.0, 1) == 10  # never both classes: the whole stream


def test_lam_is_the_logit_mean_of_the_two_error_rates():
    assert replay.lam_pct(10, 100, 10, 100) == pytest.approx(100 * 10.5 / 100.5)
    both = replay.lam_pct(1, 1000, 100, 1000)
    assert replay.lam_pct(1, 1000, 1, 1000) < both < replay.lam_pct(100, 1000, 100, 1000)


def test_summary_counts_errors_per_tenth():
    y = np.array([0, 1] * 50)
    scores = np.where(y == 1, 5.0, 0.0)
    scores[[0, 99]] = [5.0, 0.0]  # one false positive in the first tenth, one miss in the last
    s = replay.summarise(y, scores, 3.4, 1.0)
    assert (s["false_positives"], s["false_negatives"]) == (1, 1)
    assert s["errors_per_tenth"] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert s["cumulative_errors"][-1] == 2


def test_false_positives_that_repeat_an_earlier_spam_are_named(tmp_path):
    def notice(sender: str, subject: str) -> bytes:
        return f"From: {sender}\nSubject: {subject}\n\nbody\n".encode()

    raws = [
        (notice("Notices <N@Example.org>", "Your  annual report"), "spam"),
        (notice("n@example.org", "your annual report"), "ham"),  # the same notice, relabelled
        (notice("n@example.org", "another subject"), "ham"),  # same sender, not the same notice
        (notice("other@example.org", "your annual report"), "ham"),  # same subject, another sender
    ]
    stream = [replay.Message(Sample(tmp_path / f"{i}", label), raw, None, "file order") for i, (raw, label) in enumerate(raws)]
    y = np.array([m.y for m in stream])
    flagged = replay.contradicted(stream, 0, y, np.array([5.0, 5.0, 5.0, 5.0]), 3.4, Config())
    assert flagged == [{"path": f"{tmp_path.name}/1", "score": 5.0, "labelled_spam_before": 1}]
    assert json.loads(json.dumps(flagged)) == flagged  # replay.json takes it as it is
    # after a warm-up the scores start later in the stream; a ham scored low is no false positive
    assert replay.contradicted(stream, 1, y[1:], np.array([0.0, 5.0, 5.0]), 3.4, Config()) == []


@pytest.mark.skipif(shutil.which("bogofilter") is None, reason="bogofilter not installed")
def test_bogofilter_replay_learns_as_it_goes(tmp_path):
    spam = [mail(None, None, "cheap pills viagra casino winner money " * 5 + str(i)) for i in range(6)]
    ham = [mail(None, None, "meeting agenda minutes project review notes " * 5 + str(i)) for i in range(6)]
    stream = [replay.Message(Sample(tmp_path / f"{i}", label), raw, None, "file order")
              for i, (raw, label) in enumerate(x for pair in zip(spam, ham) for x in ((pair[0], "spam"), (pair[1], "ham")))]
    out = replay.replay_bogofilter(stream, 2, "train-everything", tmp_path / "db", 0.99)
    assert out["scores"][0] == 0.5 and out["learned"] == len(stream)
    y = np.array([m.y for m in stream])
    late = out["scores"][6:]
    assert late[y[6:] == 1].min() > late[y[6:] == 0].max()


def test_latency_messages_are_unique_and_addressed_to_the_user():
    a, b = latency.message("aaa"), latency.message("bbb")
    assert a != b
    assert MessageContext(a).header("to") == latency.USER


# -- benchmarks/classifier.py: the classifier alone, k-fold, over a grid of scoring parameters


classifier_bench = _load("classifier")


def test_grid_values_are_parsed_and_bad_ones_refused():
    assert classifier_bench.parse_values("temperature=1,2.5") == ("temperature", [1.0, 2.5])
    for bad in ("temperature", "temperature=", "temperature=warm"):
        with pytest.raises(Exception, match="NAME=VALUE|numbers"):
            classifier_bench.parse_values(bad)


def test_each_grid_point_scores_the_held_out_fold_with_a_model_fitted_on_the_others():
    from mailguard.classifier.features import text_features
    from mailguard.classifier.online import OnlineClassifier

    from ..conftest import synthetic_corpus

    raws, y = synthetic_corpus(30)
    features = [text_features(MessageContext(r)) for r in raws]
    folds = np.arange(len(y)) % 3
    grid = [{"fisher_weight": 0.0}, {"fisher_weight": 0.6, "temperature": 1.0}]
    scores = classifier_bench.fold_scores(features, y, folds, {"bits": 16}, grid)
    for k in range(3):
        train, test = folds != k, np.flatnonzero(folds == k)
        for point, got in zip(grid, scores):
            model = OnlineClassifier(bits=16, **point).fit([f for f, t in zip(features, train) if t], y[train])
            assert np.allclose(got[test], [model.score(features[i])[0] for i in test])
    assert not np.allclose(scores[0], scores[1])  # the grid's parameters reached the scores
