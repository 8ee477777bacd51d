"""End to end through the API: a spam campaign, user reports, per-user then global learning.

The scanner runs the default local scorers (bayes, reputation, fingerprint, behaviour) plus
feedback, on a SQLite store, with the shipped model (models/default): the campaign is an
ordinary-looking business pitch that the model lets through. Every "after" is checked
against a "before" on the same scanner, so the test fails if reports change nothing.
"""

from __future__ import annotations

import dataclasses
import email.utils
import time

import pytest

from mailguard.config import Config, PolicyConfig, StoreConfig, UsersConfig
from mailguard.message import Envelope
from mailguard.model import ModelBundle, load_model
from mailguard.reports.queue import ReportStatus
from mailguard.result import Action
from mailguard.scanner import Scanner
from mailguard.stores.sqlite import SqliteStore

CAUGHT = (Action.JUNK, Action.QUARANTINE, Action.REJECT)
SENT = email.utils.formatdate(time.time() - 600)  # one campaign, one Date header
CAMPAIGN_BODY = (
    "Hello,\r\n\r\nOur agency places sponsored articles on regional news portals and we have\r\n"
    "openings this quarter. Placement includes a permanent backlink and social promotion.\r\n"
    "Rates start at 120 EUR per article. Reply with the sites you manage and we will send\r\n"
    "our media kit and availability calendar.\r\n\r\nKind regards,\r\nMarta Kowalczyk\r\nOutreach Manager\r\n"
)


def campaign_copy(rcpt: str, n: int) -> tuple[bytes, Envelope]:
    """Copy ``n`` of the campaign as our MX delivers it to ``rcpt``: the same message
    (Bcc-style) with its own Received line, from one of the sender's relays."""
    now = email.utils.formatdate(time.time())
    ip = f"203.0.113.{10 + n % 5}"
    raw = (
        f"Received: from relay{n}.outreach-mail.example (relay{n}.outreach-mail.example [{ip}])\r\n"
        f"\tby mx.example.net with ESMTP id Q{n:04d}\r\n\tfor <{rcpt}>; {now}\r\n"
        "From: Marta Kowalczyk <marta@outreach-mail.example>\r\n"
        "To: undisclosed-recipients:;\r\n"
        "Subject: Sponsored article placement on news portals\r\n"
        f"Date: {SENT}\r\n"
        "Message-ID: <campaign-77@outreach-mail.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + CAMPAIGN_BODY
    ).encode()
    return raw, Envelope(client_ip=ip, helo=f"relay{n}.outreach-mail.example", mail_from="bounce@outreach-mail.example", rcpt_to=(rcpt,))


@pytest.fixture(scope="module")
def shipped_model() -> ModelBundle:
    return load_model(Config().model.path)


@pytest.fixture()
def scanner(shipped_model, tmp_path):
    path = tmp_path / "store.sqlite3"
    # the "low" level (junk at 5.0): the campaign's first copies score near the medium level's
    # 3.4, and the date in their headers moves them by a few tenths, so only a margin keeps
    # "nobody's copy is caught at first" true on any day
    config = Config(store=StoreConfig(backend="sqlite", path=path), users=UsersConfig(global_after=3), policy=PolicyConfig(level="low"))
    scorers = (*config.scanner.scorers, "feedback")
    config = config.replace(scanner=dataclasses.replace(config.scanner, network=False, scorers=scorers))
    with Scanner(config, store=SqliteStore(path), model=shipped_model) as node:
        yield node


def points(result, symbol: str) -> float:
    return sum(c.points for c in result.contributions if c.symbol == symbol)


def test_campaign_caught_for_the_reporter_at_once_and_for_everyone_after_three_users(scanner):
    users = ["alice@example.net", "bob@example.net", "carol@example.net"]
    stream = iter(range(100))

    def deliver(rcpt: str):
        raw, envelope = campaign_copy(rcpt, next(stream))
        return raw, scanner.scan_sync(raw, envelope)

    # the campaign arrives: nobody's copy is caught
    delivered = {user: deliver(user) for user in users}
    before = {user: result for user, (_, result) in delivered.items()}
    assert all(r.verdict.action not in CAUGHT for r in before.values())
    assert {"bayes", "reputation", "fingerprint", "behaviour", "feedback"} <= {s.name for s in scanner.scorers}

    # Alice reports her copy (as her mail client hands it over, CRLF -> LF): learned for her only
    outcome = scanner.report_sync(delivered["alice@example.net"][0].replace(b"\r\n", b"\n"), "spam", user="Alice+junk@example.net")
    assert outcome.status is ReportStatus.NEW and outcome.learned and not outcome.learned_globally
    assert scanner._run(scanner.policy.shift_for("alice@example.net")) < 0  # she got it through: a missed spam

    _, alice_next = deliver("alice@example.net")
    assert alice_next.verdict.action in CAUGHT and alice_next.score > before["alice@example.net"].score
    # one user's report moves nobody else's classifier, fingerprints or lists: Bob's own copy,
    # scanned again, gains only reputation, which counts Alice's report within her capped share
    bob_raw, bob_envelope = delivered["bob@example.net"][0], campaign_copy("bob@example.net", 1)[1]
    bob_again = scanner.scan_sync(bob_raw, bob_envelope)
    assert points(bob_again, "BAYES") == pytest.approx(points(before["bob@example.net"], "BAYES"))
    gained = {c.symbol for c in bob_again.contributions if c.points} - {c.symbol for c in before["bob@example.net"].contributions if c.points}
    assert gained and all(symbol.startswith("REP_") for symbol in gained)

    # Bob reports too: two users agree, still below global_after
    assert not scanner.report_sync(delivered["bob@example.net"][0], "spam", user="bob@example.net").learned_globally
    _, dave_early = deliver("dave@example.net")
    # the global model has not moved: Bob's very copy, scanned for a new user, gets the same
    # classifier points as before any report, and no fingerprint of the campaign is known
    # (reputation does count the reports, each user's share capped; see scorers/reputation.py)
    # (the same envelope sender: the classifier reads it as the Return-Path delivery will write)
    as_dave = scanner.scan_sync(delivered["bob@example.net"][0], dataclasses.replace(bob_envelope, rcpt_to=("dave@example.net",)))
    assert points(as_dave, "BAYES") == pytest.approx(points(before["bob@example.net"], "BAYES"))
    assert points(dave_early, "FUZZY_SPAM") == 0.0

    # the same user reporting again counts once
    again = scanner.report_sync(delivered["bob@example.net"][0], "spam", user="bob@example.net")
    assert again.status is ReportStatus.DUPLICATE and not again.learned_globally

    # a third user agrees: the copy is learned globally, once
    third = scanner.report_sync(delivered["carol@example.net"][0], "spam", user="carol@example.net")
    assert third.learned_globally
    fourth_raw, _ = campaign_copy("erin@example.net", 50)
    assert not scanner.report_sync(fourth_raw, "spam", user="erin@example.net").learned_globally

    # a brand-new user's copy is caught now, with her own thresholds untouched
    _, dave_now = deliver("dave@example.net")
    _, frank = deliver("frank@example.net")
    assert scanner._run(scanner.policy.shift_for("frank@example.net")) == 0.0
    for late in (dave_now, frank):
        assert late.verdict.action in CAUGHT and late.score > dave_early.score
        assert points(late, "BAYES") > points(dave_early, "BAYES") and points(late, "FUZZY_SPAM") > 0


def test_a_false_positive_report_raises_that_users_thresholds_and_rescues_the_sender(scanner):
    newsletter = (
        b"From: Club News <news@club.example>\r\nTo: gina@example.net\r\nSubject: offer\r\n\r\n"
        + b" ".join([b"cheap offer discount bonus prize winner"] * 6)
        + b"\r\n"
    )
    envelope = Envelope(client_ip="198.51.100.7", mail_from="news@club.example", rcpt_to=("gina@example.net",))
    for user in ("gina@example.net", "henry@example.net"):  # strict users: the newsletter (about 0.9 points) is junked
        scanner._run(scanner.policy.set_user(user, thresholds={"tag": 0.2, "junk": 0.5}))
    first = scanner.scan_sync(newsletter, envelope)
    assert first.verdict.action in CAUGHT  # junked for both
    outcome = scanner.report_sync(newsletter, "ham", user="gina@example.net")
    assert outcome.learned and not outcome.learned_globally
    assert scanner._run(scanner.policy.shift_for("gina@example.net")) == pytest.approx(scanner.config.users.threshold_fp_step)
    after = scanner.scan_sync(newsletter, envelope)
    assert after.verdict.action not in CAUGHT
    # allow_after = 1: the sender is on her allow list now, and the verdict says so
    assert "USER_ALLOW" in {c.symbol for c in after.contributions}
    # nobody else: the same newsletter is still junked for another recipient
    other = scanner.scan_sync(newsletter, dataclasses.replace(envelope, rcpt_to=("henry@example.net",)))
    assert other.verdict.action in CAUGHT
    assert scanner._run(scanner.policy.shift_for("henry@example.net")) == 0.0


def test_global_learning_waits_while_too_many_reporters_disagree(scanner):
    says = [("ann", "spam"), ("ben", "ham"), ("cat", "spam"), ("dan", "spam"), ("eve", "spam")]
    outcomes = {}
    for n, (name, label) in enumerate(says):
        raw, _ = campaign_copy(f"{name}@example.net", n)
        outcomes[name] = scanner.report_sync(raw, label, user=f"{name}@example.net")
    digest = outcomes["ann"].digest
    assert all(o.digest == digest for o in outcomes.values())  # copies of one message
    # 3 agree but 1 of 4 (25%) dissents: above global_max_dissent (20%); 4 of 5 is enough
    assert [o.learned_globally for o in outcomes.values()] == [False, False, False, False, True]
    assert scanner.config.users.global_max_dissent == 0.2


def traffic_counts(path) -> list[tuple]:
    """Sending-rate counters and bulk-recipient sets: what arriving mail is counted in."""
    import sqlite3

    with sqlite3.connect(path) as db:
        rates = db.execute("SELECT key, value FROM counters WHERE key LIKE 'bhv:rate:%' ORDER BY key").fetchall()
        bulk = db.execute("SELECT key, member FROM sets WHERE key LIKE 'fz:r:%' ORDER BY key, member").fetchall()
    return rates + bulk


def test_a_report_re_scans_without_counting_the_message_as_traffic_again(scanner, tmp_path):
    raw, envelope = campaign_copy("alice@example.net", 1)
    scanner.scan_sync(raw, envelope)
    counted = traffic_counts(tmp_path / "store.sqlite3")
    assert counted, "the arrival was counted"
    # the reported copy as a mail client sends it back: no envelope, the Received line kept
    scanner.report_sync(raw, "spam", user="alice@example.net")
    assert traffic_counts(tmp_path / "store.sqlite3") == counted
    scanner.scan_sync(raw, envelope)  # a new arrival still counts
    assert traffic_counts(tmp_path / "store.sqlite3") != counted
