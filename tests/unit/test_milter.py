"""Milter reply mapping (pure) and the daemon's end-of-message path with a recording MTA
stand-in: deadlines, exceptions and per-recipient verdicts. Postfix itself is exercised
in tests/integration/test_milter.py."""

from __future__ import annotations

import email.header

import pytest

from mailguard import Action, Config, Hit
from mailguard.config import MilterConfig, PolicyConfig, ScannerConfig, StoreConfig, config_from_mapping
from mailguard.errors import ConfigError
from mailguard.milter.actions import apply_error, apply_verdicts, fold_header
from mailguard.result import Verdict

from ..conftest import HAM_WORDS, SPAM_WORDS, make_message
from .test_scanner import BrokenScorer, FixedScorer


class Recorder:
    """Records the end-of-message calls a milter makes (pymilter's Milter.Base subset)."""

    def __init__(self, macros: dict[str, str] | None = None) -> None:
        self.calls: list[tuple] = []
        self.macros = macros or {"i": "ABC123"}

    def addheader(self, field, value, idx=-1):
        self.calls.append(("addheader", field, value))

    def chgheader(self, field, idx, value):
        self.calls.append(("chgheader", field, idx, value))

    def delrcpt(self, rcpt):
        self.calls.append(("delrcpt", rcpt))

    def quarantine(self, reason):
        self.calls.append(("quarantine", reason))

    def setreply(self, rcode, xcode=None, msg=None, *ml):
        self.calls.append(("setreply", rcode, xcode, msg))

    def getsymval(self, name):
        return self.macros.get(name)

    def headers(self) -> dict[str, str]:
        return {c[1]: c[2] for c in self.calls if c[0] == "addheader"}


def verdict(action: Action, score: float = 5.0, subject: str | None = None, reply=None) -> Verdict:
    if reply is None and action is Action.REJECT:
        reply = ("550", "5.7.1", f"Message rejected as spam (score {score:.1f})")
    if reply is None and action is Action.TEMPFAIL:
        reply = ("451", "4.7.1", "Message could not be scanned, try again later")
    return Verdict(
        action=action, user=None, score=score, required=3.4, is_spam=score >= 3.4,
        headers=(("X-Spam-Flag", "YES" if score >= 3.4 else "NO"), ("X-Spam-Score", f"{score:.2f}")),
        smtp_reply=reply, subject=subject, reason=f"{action} because",
    )


def test_every_recipient_rejecting_rejects_the_message():
    rec = Recorder()
    out = apply_verdicts(rec, {"<a@x>": verdict(Action.REJECT, 9), "<b@x>": verdict(Action.REJECT, 9)}, has_subject=True)
    assert out.reply == "reject" and out.delivered == ()
    assert rec.calls == [("setreply", "550", "5.7.1", "Message rejected as spam (score 9.0)")]


def test_mixed_recipients_remove_the_rejecting_ones_and_tag_the_rest():
    rec = Recorder()
    out = apply_verdicts(
        rec, {"<a@x>": verdict(Action.REJECT, 6), "<b@x>": verdict(Action.JUNK, 6, subject="[SPAM] hi")}, has_subject=True
    )
    assert out.reply == "accept" and out.delivered == ("<b@x>",) and out.removed == ("<a@x>",)
    assert ("delrcpt", "<a@x>") in rec.calls
    assert rec.headers()["X-Mailguard-Action"] == "junk" and rec.headers()["X-Spam-Flag"] == "YES"
    assert ("chgheader", "Subject", 1, "[SPAM] hi") in rec.calls
    assert not any(c[0] == "setreply" for c in rec.calls)


def test_delivered_copy_carries_the_most_severe_remaining_verdict():
    rec = Recorder()
    out = apply_verdicts(rec, {"<a@x>": verdict(Action.ACCEPT, 2), "<b@x>": verdict(Action.QUARANTINE, 2)}, has_subject=False)
    assert out.action == "quarantine" and out.delivered == ("<a@x>", "<b@x>")
    assert ("quarantine", "quarantine because") in rec.calls


def test_any_tempfail_defers_the_whole_message():
    rec = Recorder()
    out = apply_verdicts(rec, {"<a@x>": verdict(Action.ACCEPT, 0), "<b@x>": verdict(Action.TEMPFAIL, 0)}, has_subject=True)
    assert out.reply == "tempfail"
    assert rec.calls == [("setreply", "451", "4.7.1", "Message could not be scanned, try again later")]


def test_subject_is_added_when_missing_and_encoded_when_not_ascii():
    rec = Recorder()
    apply_verdicts(rec, {"<a@x>": verdict(Action.TAG, 3, subject="[SPAM] prix réduit")}, has_subject=False)
    assert rec.headers()["Subject"].startswith("=?utf-8?")


def test_reply_text_has_no_lone_percent_or_control_characters():
    rec = Recorder()
    apply_verdicts(rec, {"<a@x>": verdict(Action.REJECT, reply=("550", "5.7.1", "100% spam\r\nInjected: yes"))}, has_subject=True)
    text = rec.calls[0][3]
    assert "%" not in text and "\r" not in text and "\n" not in text


def test_apply_error_tempfails_or_accepts_with_a_header():
    rec = Recorder()
    assert apply_error(rec, "tempfail", "boom").reply == "tempfail"
    assert rec.calls == [("setreply", "451", "4.7.1", "Message could not be scanned, try again later")]
    rec = Recorder()
    assert apply_error(rec, "accept", "boom").reply == "accept"
    assert rec.headers()["X-Mailguard-Action"] == "unscanned"


def test_fold_header_keeps_lines_short_and_words_whole():
    value = " ".join(["word"] * 100)
    folded = fold_header("X-Mailguard-Report", value)
    assert all(len(line) <= 78 for line in folded.split("\n"))
    assert " ".join(folded.split()) == value


@pytest.mark.parametrize("subject", ["[SPAM] " + "word " * 400, "[SPAM] " + "x" * 2000, "[SPAM] " + "é" * 2000])
def test_a_long_rewritten_subject_is_folded_within_the_line_limit(subject):
    """A spam Subject of any length goes back to the MTA in lines of at most 998 octets
    (found by benchmarks/fuzz.py: a tagged ASCII subject of ~1,400 characters in one line)."""
    rec = Recorder()
    apply_verdicts(rec, {"<b@x>": verdict(Action.JUNK, 6, subject=subject)}, has_subject=True)
    (value,) = [c[3] for c in rec.calls if c[:3] == ("chgheader", "Subject", 1)]
    assert all(len(line.encode()) <= 998 - len("Subject: ") for line in value.split("\n"))
    assert str(email.header.make_header(email.header.decode_header(value))).split() == subject.split()


def test_a_short_subject_is_sent_as_it_is():
    rec = Recorder()
    apply_verdicts(rec, {"<b@x>": verdict(Action.JUNK, 6, subject="[SPAM]  two  spaces")}, has_subject=True)
    assert ("chgheader", "Subject", 1, "[SPAM]  two  spaces") in rec.calls


def test_milter_config_is_validated():
    assert config_from_mapping({"milter": {"socket": "unix:/run/mg.sock"}}).milter.socket == "unix:/run/mg.sock"
    for bad in ({"socket": "tcp:1"}, {"socket": "inet:99999@127.0.0.1"}, {"on_error": "drop"}, {"deadline": 0}, {"metrics_port": 70000}):
        with pytest.raises(ConfigError):
            config_from_mapping({"milter": bad})


# -- the daemon's end of message, with a recording MTA ----------------------------------------

Milter = pytest.importorskip("Milter", reason="pymilter not installed (pip install 'mailguard[milter]')")


@pytest.fixture()
def make_daemon(tiny_model):
    from mailguard import Scanner
    from mailguard.milter.daemon import MilterDaemon

    made = []

    def make(scorers=None, **milter):
        config = Config(
            store=StoreConfig(backend="memory"),
            scanner=ScannerConfig(deadline=5.0),
            policy=PolicyConfig(thresholds={"reject": 6.0}),
            milter=MilterConfig(**{"deadline": 2.0, **milter}),
        )
        scanner = Scanner(config, model=tiny_model, scorers=scorers)
        daemon = MilterDaemon(config, scanner=scanner)
        daemon.service.start()
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.service.stop()


def eom(daemon, raw: bytes, rcpts: list[str]) -> tuple[int, Recorder]:
    from mailguard.milter.daemon import MilterConnection, _Message

    conn = MilterConnection(daemon)
    rec = Recorder()
    for name in ("addheader", "chgheader", "delrcpt", "quarantine", "setreply", "getsymval"):
        setattr(conn, name, getattr(rec, name))
    head, _, body = raw.partition(b"\n\n")
    msg = _Message(mail_from="alice@example.org", rcpts=rcpts, headers=[line + b"\r\n" for line in head.split(b"\n")], body=[body])
    msg.body_bytes = msg.body_seen = len(body)
    return daemon.end_of_message(conn, msg), rec


def test_scan_past_the_deadline_answers_tempfail(make_daemon, caplog):
    daemon = make_daemon([FixedScorer("slow", [Hit("SLOW")], delay=3.0, timeout=10.0)], deadline=0.3)
    code, rec = eom(daemon, make_message(HAM_WORDS), ["<bob@example.net>"])
    assert code == Milter.TEMPFAIL
    assert rec.calls == [("setreply", "451", "4.7.1", "Message could not be scanned, try again later")]
    assert "ABC123" in caplog.text  # logged with the queue id
    assert daemon.metrics.errors.labels(kind="timeout")._value.get() == 1


def test_deadline_with_on_error_accept_lets_mail_through_marked(make_daemon):
    daemon = make_daemon([FixedScorer("slow", [Hit("SLOW")], delay=3.0, timeout=10.0)], deadline=0.3, on_error="accept")
    code, rec = eom(daemon, make_message(HAM_WORDS), ["<bob@example.net>"])
    assert code == Milter.ACCEPT and rec.headers()["X-Mailguard-Action"] == "unscanned"


def test_broken_scorer_fails_open_and_bad_bytes_do_not_crash(make_daemon):
    daemon = make_daemon([BrokenScorer("broken", [Hit("X")]), FixedScorer("ok", [])])
    raw = b"Subject: \xff\xfe\x00broken\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nno end\x00\x80"
    code, rec = eom(daemon, raw, ["<bob@example.net>"])
    assert code == Milter.ACCEPT and rec.headers()["X-Mailguard-Action"] == "accept"
    assert daemon.metrics.scorer_failures.labels(scorer="broken", kind="error")._value.get() == 1


def test_per_recipient_thresholds_through_the_daemon(make_daemon):
    import asyncio

    daemon = make_daemon()
    asyncio.run_coroutine_threadsafe(
        daemon.service.scanner.policy.set_user("carol@example.net", level="medium"), daemon.service.loop
    ).result(5)
    code, rec = eom(daemon, make_message(SPAM_WORDS, subject="offer"), ["<bob@example.net>", "<Carol@example.net>"])
    assert code == Milter.ACCEPT
    assert ("delrcpt", "<bob@example.net>") in rec.calls
    assert rec.headers()["X-Mailguard-Action"] == "junk"


def test_sighup_while_the_daemon_starts_is_ignored_not_fatal(tmp_path, monkeypatch):
    """SIGHUP kills a process by default; until `serve` installs the reload handler (after the
    model loads) a reload request must not end the starting daemon (seen in benchmarks/faults.py)."""
    import asyncio
    import signal

    from mailguard.milter import daemon

    config = tmp_path / "mailguard.toml"
    config.write_text(f'[store]\npath = "{tmp_path}/store.sqlite3"\n[scanner]\nscorers = []\n[milter]\nworkers = 1\nlog_file = "{tmp_path}/milter.log"\n')  # in-process scanner: the stand-in closes it
    seen = {}

    def serve_stand_in(self):
        seen["sighup"] = signal.getsignal(signal.SIGHUP)
        asyncio.run(self.service.scanner.aclose())
        self.service.loop.close()  # never started: nothing runs on it
        return 0

    monkeypatch.setattr(daemon.MilterDaemon, "serve", serve_stand_in)
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    handlers = list(daemon.message_log.handlers)
    try:
        assert daemon.run_milter(str(config)) == 0
    finally:
        signal.signal(signal.SIGHUP, previous)
        for handler in set(daemon.message_log.handlers) - set(handlers):
            daemon.message_log.removeHandler(handler)
            handler.close()
    assert seen["sighup"] is signal.SIG_IGN
