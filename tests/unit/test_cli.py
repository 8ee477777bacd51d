"""Command line: train -> scan -> eval on a small corpus, and the error paths."""

from __future__ import annotations

import json
import re
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


# -- mailguard report -----------------------------------------------------------------------

_ARF_ABUSE = (
    "From: fbl@example.org\nTo: postmaster@example.net\nSubject: report\nMIME-Version: 1.0\n"
    'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\n\n'
    "--b1\nContent-Type: text/plain\n\nAn abuse report.\n\n"
    "--b1\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nVersion: 1\nOriginal-Rcpt-To: <bob@example.net>\n\n"
    "--b1\nContent-Type: message/rfc822\n\n{original}\n--b1--\n"
)


def _report_inputs(tmp_path: Path) -> dict[str, Path]:
    import mailbox
    from email import message_from_bytes

    from ..conftest import HAM_WORDS, SPAM_WORDS, make_message

    spam = [make_message(SPAM_WORDS, subject="offer", seed=500 + n) for n in range(4)]
    paths = {"eml": tmp_path / "one.eml", "arf": tmp_path / "arf.eml", "maildir": tmp_path / "Junk", "mbox": tmp_path / "junk.mbox"}
    paths["eml"].write_bytes(spam[0])
    paths["arf"].write_text(_ARF_ABUSE.format(original=spam[1].decode()))
    box = mailbox.Maildir(paths["maildir"], create=True)
    box.add(spam[2])
    mbox = mailbox.mbox(paths["mbox"], create=True)
    mbox.add(message_from_bytes(spam[3]))
    mbox.add(message_from_bytes(spam[0]))  # a copy of one.eml: the same report
    mbox.close()
    paths["ham"] = tmp_path / "ham.eml"
    # words the tiny model has never seen, so that one report visibly moves the score
    paths["ham"].write_bytes(make_message(["quarterly", "synergy", "webinar", "invite", *HAM_WORDS[:2]], subject="webinar", seed=600))
    return paths


def test_report_reads_every_input_kind_and_dedups(tiny_model, tmp_path, capsys):
    from mailguard.model import save_model

    model = save_model(tiny_model, tmp_path / "m", {})
    paths = _report_inputs(tmp_path)
    argv = ["report", "--spam", "--user", "Bob+junk@Example.NET", "--model", str(model)]
    status = main([*argv, str(paths["eml"]), str(paths["arf"]), str(paths["maildir"]), str(paths["mbox"]), str(tmp_path / "gone.eml")])
    out, err = capsys.readouterr()
    assert status == 1  # one input failed; the rest were still reported
    lines = out.splitlines()
    assert len(lines) == 5 and all(re.search(r": (new|duplicate) [0-9a-f]{12}", line) for line in lines)
    assert [line.split(": ")[1].split()[0] for line in lines] == ["new", "new", "new", "new", "duplicate"]
    assert "arf abuse for <bob@example.net>" in lines[1]
    assert "gone.eml" in err and "4 new" in err and "1 duplicate" in err and "1 failed" in err and "bob@example.net" in err
    # the same run again: every message is a duplicate, nothing fails
    assert main([*argv, str(paths["eml"]), str(paths["maildir"])]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["duplicate", "duplicate"]


def test_report_ham_replaces_and_moves_the_users_score(tiny_model, tmp_path, capsys):
    from mailguard.model import save_model

    model = save_model(tiny_model, tmp_path / "m", {})
    paths = _report_inputs(tmp_path)
    scan = ["scan", "--json", "--no-network", "--model", str(model), "--user", "bob@example.net", str(paths["ham"])]
    main(scan)
    before = json.loads(capsys.readouterr().out)["score"]
    assert main(["report", "--spam", "--user", "bob@example.net", "--model", str(model), str(paths["ham"])]) == 0
    assert " new " in capsys.readouterr().out
    main(scan)
    after_spam = json.loads(capsys.readouterr().out)["score"]
    assert main(["report", "--ham", "--user", "BOB@example.net", "--model", str(model), str(paths["ham"])]) == 0
    out = capsys.readouterr().out
    main(scan)
    after_ham = json.loads(capsys.readouterr().out)["score"]
    assert "replaced" in out and "(was spam)" in out
    assert after_spam > before and after_ham < after_spam


def test_report_from_standard_input(tiny_model, tmp_path, capsys, monkeypatch):
    import io

    from mailguard.model import save_model

    model = save_model(tiny_model, tmp_path / "m", {})
    raw = _report_inputs(tmp_path)["eml"].read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    assert main(["report", "--spam", "--user", "bob@example.net", "--source", "imapsieve", "--model", str(model), "-"]) == 0
    assert capsys.readouterr().out.startswith("-: new ")


def test_report_refuses_contradicting_arf_and_bad_arguments(tiny_model, tmp_path, capsys):
    from mailguard.model import save_model

    model = save_model(tiny_model, tmp_path / "m", {})
    paths = _report_inputs(tmp_path)
    assert main(["report", "--ham", "--user", "bob@example.net", "--model", str(model), str(paths["arf"])]) == 1
    err = capsys.readouterr().err
    assert "says abuse, not ham" in err and "1 failed" in err
    assert main(["report", "--spam", "--user", "bob", "--model", str(model), str(paths["eml"])]) == 2
    assert "not a mail address" in capsys.readouterr().err
    assert main(["report", "--spam", "--user", "bob@example.net", "--source", "Not Valid", str(paths["eml"])]) == 2
    assert main(["report", "--spam", "--user", "bob@example.net", "--max-messages", "1", "--model", str(model), str(paths["mbox"])]) == 1
    assert "more than 1 messages" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--spam", "--ham", "--user", "bob@example.net", str(paths["eml"])])
