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


# -- retrain and model versions ------------------------------------------------------------------


def test_model_list_rollback_and_promote(tiny_model, tmp_path, capsys):
    from mailguard.model import current_version, promote, save_model, save_version

    root = tmp_path / "models" / "site"
    for _ in range(2):
        promote(root, save_version(tiny_model, root, {}))
    assert main(["model", "list", "--model", str(root)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == ["v1", "*"] and listed[1].split()[1] == "v2"

    assert main(["model", "rollback", "--model", str(root)]) == 0
    assert "v1 is in service again (was v2)" in capsys.readouterr().out
    assert current_version(root) == "v1"
    assert main(["model", "rollback", "--model", str(root)]) == 2
    assert "nothing to roll back" in capsys.readouterr().err
    assert current_version(root) == "v1"

    assert main(["model", "promote", "v2", "--model", str(root)]) == 0
    assert current_version(root) == "v2"
    assert main(["model", "promote", "v7", "--model", str(root)]) == 2
    assert current_version(root) == "v2"
    plain = save_model(tiny_model, tmp_path / "plain", {"version": "shipped"})
    assert main(["model", "list", "--model", str(plain)]) == 0
    assert "single unversioned model, version shipped" in capsys.readouterr().out


def test_retrain_promotes_then_refuses_mislabelled_reports(corpus, tmp_path, capsys):
    import asyncio
    import os
    import time

    from mailguard.model import current_version
    from mailguard.reports.queue import ReportQueue
    from mailguard.stores.sqlite import SqliteStore

    from ..conftest import SPAM_WORDS, make_message

    config = tmp_path / "mailguard.toml"
    config.write_text('[scanner]\nscorers = ["bayes"]\n')
    out = tmp_path / "models" / "site"
    retrain = ["--config", str(config), "retrain", "--base", str(corpus / "labels.csv"), "--out", str(out), "--model", str(out)]
    assert main([*retrain, "--reports", "none"]) == 0  # no model in service yet: the sanity check decides
    assert "PROMOTED: v1" in capsys.readouterr().out and current_version(out) == "v1"

    async def poison() -> None:  # twelve colluding users report spam as ham
        store = SqliteStore(os.environ["MAILGUARD_STORE"])
        queue = ReportQueue(store)
        for u in range(12):
            for j in range(10):
                await queue.add(make_message(SPAM_WORDS, subject="offer", seed=7000 + 100 * u + j), f"evil{u}@example.org", "ham", "cli")
        await store.close()

    asyncio.run(poison())
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    assert main([*retrain, "--reports", f"since={yesterday}"]) == 3
    out_text = capsys.readouterr().out
    assert "REFUSED: v2" in out_text and "base holdout: catch rate" in out_text
    assert re.search(r"reports: 120 from 12 user\(s\)", out_text)
    assert current_version(out) == "v1"
    manifest = json.loads((out / "v2" / "manifest.json").read_text())
    assert manifest["gate"]["decision"] == "refused"
    assert main(["model", "list", "--model", str(out)]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^\* v1 .*gate passed", listed, re.M) and re.search(r"^  v2 .*gate REFUSED .*\(base holdout: catch rate", listed, re.M)
    assert main(["model", "rollback", "--model", str(out)]) == 2  # v2 was never in service
    assert main([*retrain, "--reports", "last-week"]) == 2


# -- mailguard user allow|block|unallow|unblock|show ------------------------------------------


def test_user_allow_block_lists(tmp_path, capsys):
    assert main(["user", "allow", "Bob+x@Example.net", "@Shop.Example"]) == 0
    from mailguard.config import Config

    # a list nobody reads is a mistake worth a note
    assert ('"feedback" is in [scanner] scorers' in capsys.readouterr().err) is ("feedback" not in Config().scanner.scorers)
    assert main(["user", "block", "bob@example.net", "Spammer <deals+1@Bad.Example>"]) == 0
    assert main(["user", "block", "bob@example.net", "@bad.example"]) == 0
    capsys.readouterr()
    assert main(["user", "show", "bob@example.net"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "bob@example.net allow: @shop.example"
    assert lines[1] == "bob@example.net block: @bad.example deals@bad.example"
    assert lines[2].startswith("bob@example.net: tag=") and "(moved" not in lines[2]
    # allowing a blocked entry moves it; removing what is not listed says so (exit 1)
    assert main(["user", "allow", "bob@example.net", "deals@bad.example"]) == 0
    assert main(["user", "unblock", "bob@example.net", "deals@bad.example"]) == 1
    assert "not on the block list" in capsys.readouterr().err
    assert main(["user", "unallow", "bob@example.net", "@shop.example"]) == 0
    assert main(["user", "show", "bob@example.net"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:-1] == ["bob@example.net allow: deals@bad.example", "bob@example.net block: @bad.example"]
    # usage errors exit 2
    for argv in (["user", "allow", "bob@example.net"], ["user", "block", "bob@example.net", "bad.example"], ["user", "show", "bob@example.net", "x@y.example"]):
        assert main(argv) == 2
    assert capsys.readouterr().err.count("mailguard: ") == 3


def test_user_list_bound_from_config(tmp_path, capsys):
    config = tmp_path / "mailguard.toml"
    config.write_text("[scorers.feedback]\nmax_entries = 1\n")
    assert main(["--config", str(config), "user", "block", "bob@example.net", "a@bad.example"]) == 0
    assert main(["--config", str(config), "user", "block", "bob@example.net", "b@bad.example"]) == 1
    assert "full (1 entries)" in capsys.readouterr().err
    config.write_text("[scorers.feedback]\nmax_entries = 0\n")
    assert main(["--config", str(config), "user", "show", "bob@example.net"]) == 2


def test_user_thresholds_move_with_reports_unless_fixed(tiny_model, tmp_path, capsys):
    from mailguard.model import save_model

    from ..conftest import HAM_WORDS, make_message

    model = save_model(tiny_model, tmp_path / "m", {})
    missed = tmp_path / "missed.eml"  # ham-like words: accepted, so a spam report says it was missed
    missed.write_bytes(make_message(HAM_WORDS, subject="agenda", seed=4242))
    assert main(["report", "--spam", "--user", "bob@example.net", "--model", str(model), str(missed)]) == 0
    capsys.readouterr()
    assert main(["user", "show", "bob@example.net"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "(moved -0.25 by reports)" in last and f"junk={LEVELS['medium'].junk - 0.25}" in last
    assert main(["user", "set", "bob@example.net", "--junk", "5", "--fixed"]) == 0
    assert capsys.readouterr().out.strip().endswith("junk=5.0 quarantine=None reject=None (fixed)")
    assert main(["user", "set", "bob@example.net", "--moving"]) == 0
    # like every `set`, it stores what it is given: the level's thresholds again, moved
    assert f"junk={LEVELS['medium'].junk - 0.25} " in capsys.readouterr().out
    assert main(["user", "set", "bob@example.net", "--reset-shift"]) == 0
    out = capsys.readouterr().out
    assert f"junk={LEVELS['medium'].junk} " in out and "moved" not in out
