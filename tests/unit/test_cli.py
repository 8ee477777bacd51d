"""Command line: train -> scan -> eval on a small corpus, and the error paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailguard.cli import main
from mailguard.policy import LEVELS

from ..conftest import SAMPLES, synthetic_corpus


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    raws, y = synthetic_corpus(60)
    rows = ["path,label,fold"]
    for i, (raw, label) in enumerate(zip(raws, y)):
        name = f"{'spam' if label else 'ham'}/{i:03d}.eml"
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(raw)
        rows.append(f"{name},{'spam' if label else 'ham'},{i % 3}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILGUARD_STORE", str(tmp_path / "store.sqlite3"))


def test_train_scan_json_and_eval(corpus, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["train", "--labels", str(corpus / "labels.csv"), "--out", str(model)]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["training_data"]["ham"] == 30 and manifest["training_data"]["spam"] == 30
    assert set(manifest["files"]) == {"bayes.npz", "combiner.json"}
    capsys.readouterr()

    assert main(["scan", "--json", "--model", str(model), str(corpus / "spam"), str(corpus / "ham" / "000.eml")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 31
    assert {"path", "score", "probability", "action", "contributions"} <= set(lines[0])
    spam_scores = [r["score"] for r in lines if "/spam/" in r["path"]]
    ham_score = next(r["score"] for r in lines if r["path"].endswith("000.eml") and "/ham/" in r["path"])
    assert min(spam_scores) > ham_score

    assert main(["eval", "--labels", str(corpus / "labels.csv"), "--folds", "3", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["ham"] == 30 and metrics["spam"] == 30
    assert metrics["one_minus_auc_pct"] < 5


def test_exclude_fold(corpus, tmp_path, capsys):
    model = tmp_path / "m"
    assert main(["train", "--labels", str(corpus / "labels.csv"), "--exclude-fold", "0", "--out", str(model)]) == 0
    assert json.loads((model / "manifest.json").read_text())["training_data"]["messages"] == 40


def test_scan_keeps_going_past_unreadable_paths(tiny_model, tmp_path, capsys):
    from mailguard.model import save_model

    model = save_model(tiny_model, tmp_path / "m", {"version": "test"})
    status = main(["scan", "--model", str(model), str(tmp_path / "missing.eml"), str(SAMPLES / "ham-agenda.eml")])
    out, err = capsys.readouterr()
    assert status == 1
    assert "missing.eml" in err and "no such file" in err
    assert "ham-agenda.eml:" in out  # the readable message was still scanned


def test_bad_csv_and_bad_rows(corpus, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,kind\nx,y\n")
    assert main(["train", "--labels", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert "path,label" in capsys.readouterr().err

    rows = (corpus / "labels.csv").read_text().splitlines()
    rows.insert(2, "ham/000.eml,maybe,0")
    rows.insert(3, "ham/nope.eml,ham,0")
    partial = corpus / "partial.csv"
    partial.write_text("\n".join(rows) + "\n")
    assert main(["train", "--labels", str(partial), "--out", str(tmp_path / "m2")]) == 1
    err = capsys.readouterr().err
    assert "unknown label 'maybe'" in err and "nope.eml" in err
    assert json.loads((tmp_path / "m2" / "manifest.json").read_text())["training_data"]["messages"] == 60


def test_missing_and_tampered_model(tiny_model, tmp_path, capsys):
    from mailguard.model import save_model

    assert main(["scan", "--model", str(tmp_path / "nowhere"), str(SAMPLES)]) == 2
    assert "no model" in capsys.readouterr().err
    model = save_model(tiny_model, tmp_path / "m", {})
    blob = bytearray((model / "bayes.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (model / "bayes.npz").write_bytes(bytes(blob))
    assert main(["scan", "--model", str(model), str(SAMPLES)]) == 2
    assert "does not match its manifest" in capsys.readouterr().err


def test_user_thresholds(tiny_model, tmp_path, capsys):
    from mailguard.model import save_model

    model = save_model(tiny_model, tmp_path / "m", {})
    assert main(["user", "set", "Bob@Example.net", "--level", "high", "--reject", "20"]) == 0
    assert main(["user", "show", "bob@example.net"]) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    assert "reject=20.0" in out and f"junk={LEVELS['high'].junk}" in out
    main(["scan", "--json", "--model", str(model), "--user", "bob@example.net", str(SAMPLES / "ham-agenda.eml")])
    assert json.loads(capsys.readouterr().out)["required"] == LEVELS["high"].required


def test_module_entry_point_runs_on_the_samples():
    """python -m mailguard with the shipped model, as the README's first command does."""
    proc = subprocess.run([sys.executable, "-m", "mailguard", "scan", "--no-network", str(SAMPLES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(list(SAMPLES.iterdir()))
