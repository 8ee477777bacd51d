"""User reports: reading inputs (ARF, Maildir, mbox, folders), the dedup digest, the queue, Scanner.report."""

from __future__ import annotations

import asyncio
import io
import mailbox
import os
import zlib
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailguard import Config, Scanner
from mailguard.config import StoreConfig, UsersConfig
from mailguard.reports.queue import Report, ReportQueue, ReportStatus, check_source
from mailguard.reports.sources import ReportInput, arf_label, iter_messages, report_digest, unwrap_arf
from mailguard.scorers.bayes import BayesScorer
from mailguard.stores import MemoryStore, SqliteStore

from ..conftest import SPAM_WORDS, make_message

ORIGINAL = (
    b"Received: from mail.example.net (mail.example.net [192.0.2.1])\r\n"
    b"\tby mx.example.com (Postfix) with ESMTP id 4A1B2C3D\r\n"
    b"\tfor <bob@example.com>; Mon, 2 Mar 2026 10:00:00 +0000\r\n"
    b"From: Prize Office <winner@example.net>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: You have won a prize\r\n"
    b"Date: Mon, 2 Mar 2026 09:59:58 +0000\r\n"
    b"Message-ID: <prize-1@example.net>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Claim your lottery prize now, send your bank details.\r\n"
    b"From the desk of the prize manager.\r\n"
)

# An RFC 5965 abuse report as a mailbox provider's feedback loop sends it (written for this test).
ARF = (
    b"From: <abuse@fbl.example.org>\r\n"
    b"Date: Tue, 3 Mar 2026 08:00:00 +0000\r\n"
    b"Subject: FW: You have won a prize\r\n"
    b"To: <postmaster@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=feedback-report;\r\n\tboundary="part1_13d.2e68ed54_boundary"\r\n'
    b"\r\n"
    b"--part1_13d.2e68ed54_boundary\r\n"
    b"Content-Type: text/plain; charset=\"US-ASCII\"\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"This is an email abuse report for an email message received from IP\r\n"
    b"192.0.2.1 on Mon, 2 Mar 2026 10:00:00 +0000.\r\n"
    b"\r\n"
    b"--part1_13d.2e68ed54_boundary\r\n"
    b"Content-Type: message/feedback-report\r\n"
    b"\r\n"
    b"Feedback-Type: abuse\r\n"
    b"User-Agent: SomeGenerator/1.0\r\n"
    b"Version: 1\r\n"
    b"Original-Mail-From: <winner@example.net>\r\n"
    b"Original-Rcpt-To: <bob@example.com>\r\n"
    b"Arrival-Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
    b"Source-IP: 192.0.2.1\r\n"
    b"Reported-Domain: example.net\r\n"
    b"\r\n"
    b"--part1_13d.2e68ed54_boundary\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Disposition: inline\r\n"
    b"\r\n" + ORIGINAL + b"\r\n"
    b"--part1_13d.2e68ed54_boundary--\r\n"
)


def run(coro):
    return asyncio.run(coro)


def items(path, **kw):
    return list(iter_messages(path, **kw))


# -- ARF ------------------------------------------------------------------------------------


def test_arf_report_yields_the_original(tmp_path):
    (tmp_path / "report.eml").write_bytes(ARF)
    [item] = items(tmp_path / "report.eml")
    assert item.error is None and item.arf and not item.headers_only
    assert item.feedback_type == "abuse"
    assert item.original_rcpt == "<bob@example.com>"
    assert b"Subject: You have won a prize" in item.raw and b"Feedback-Type" not in item.raw
    assert item.raw == ORIGINAL  # byte for byte, as the report carried it
    assert arf_label(item.feedback_type) == "spam"


def test_arf_original_without_its_own_closing_boundary_keeps_its_digest():
    """The parser repairs a multipart original (adds the missing closing delimiter); the
    bytes are taken from the report instead, so the digest matches a direct report."""
    original = (
        b"From: a@example.net\nSubject: parts\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=inner\n\n"
        b"--inner\nContent-Type: text/plain\n\ncheap pills\n"
    )
    report = ARF.replace(ORIGINAL, original)
    item = unwrap_arf(ReportInput("r", raw=report))
    assert item.raw.replace(b"\r\n", b"\n") == original and report_digest(item.raw) == report_digest(original)
    unterminated = report.rsplit(b"--part1_13d.2e68ed54_boundary--", 1)[0]  # the report's own end is missing too
    fallback = unwrap_arf(ReportInput("r", raw=unterminated))
    assert fallback.error is None and b"cheap pills" in fallback.raw  # re-serialised from the parsed part


def test_arf_with_headers_only():
    headers = ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
    report = ARF.replace(b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n" + ORIGINAL, b"Content-Type: text/rfc822-headers\r\n\r\n" + headers)
    report = report.replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    item = unwrap_arf(ReportInput("r", raw=report))
    assert item.error is None and item.headers_only and item.feedback_type == "not-spam"
    assert b"Message-ID: <prize-1@example.net>" in item.raw and b"lottery" not in item.raw
    assert arf_label(item.feedback_type) == "ham"


def test_arf_without_original_is_an_error_line(tmp_path):
    broken = ARF.split(b"--part1_13d.2e68ed54_boundary\r\nContent-Type: message/rfc822")[0] + b"--part1_13d.2e68ed54_boundary--\r\n"
    (tmp_path / "r.eml").write_bytes(broken)
    [item] = items(tmp_path / "r.eml")
    assert item.raw is None and "without the original" in item.error and item.feedback_type == "abuse"


def test_other_reports_are_plain_messages(tmp_path):
    dsn = ARF.replace(b"report-type=feedback-report", b"report-type=delivery-status")
    (tmp_path / "dsn.eml").write_bytes(dsn)
    [item] = items(tmp_path / "dsn.eml")
    assert not item.arf and item.raw == dsn


@pytest.mark.parametrize("label, expected", [("abuse", "spam"), ("FRAUD", "spam"), ("not-spam", "ham"), ("other", None), (None, None)])
def test_arf_labels(label, expected):
    assert arf_label(label) == expected


# -- Maildir, mbox, folders ------------------------------------------------------------------


def _message(n: int, body: str = "hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.com"
    msg["Subject"] = f"message {n}"
    msg.set_content(body + "\n")
    return msg


def test_maildir_reads_cur_and_new_not_tmp(tmp_path):
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    keys = [box.add(_message(n)) for n in range(3)]
    moved = box.get_message(keys[0])
    moved.set_subdir("cur")
    moved.add_flag("S")
    box[keys[0]] = moved  # now in cur/ with :2,S
    (tmp_path / "Maildir" / "tmp" / "partial").write_bytes(b"Subject: half written\n\n")
    (tmp_path / "Maildir" / "new" / ".hidden").write_bytes(b"Subject: dot file\n\n")
    found = items(tmp_path / "Maildir")
    assert len(found) == 3 and all(i.error is None for i in found)
    assert sorted(i.raw.split(b"Subject: ")[1].split(b"\n")[0] for i in found) == [b"message 0", b"message 1", b"message 2"]
    assert sum("/cur/" in i.where for i in found) == 1


def test_mbox_unescapes_from_lines_and_agrees_with_maildir(tmp_path):
    body = "Dear friend,\nFrom the desk of the prize manager.\n>From a quoted line.\n"
    mbox = mailbox.mbox(tmp_path / "spam.mbox", create=True)
    for n in range(2):
        mbox.add(_message(n, body))
    mbox.close()
    text = (tmp_path / "spam.mbox").read_bytes()
    assert b"\n>From the desk" in text  # the stdlib writer escaped it
    maildir = mailbox.Maildir(tmp_path / "md", create=True)
    maildir.add(_message(0, body))
    found = items(tmp_path / "spam.mbox")
    assert [i.where.rsplit("#", 1)[1] for i in found] == ["1", "2"]
    first = found[0].raw
    assert not first.startswith(b"From ")  # the From_ line is gone
    assert b"\nFrom the desk of the prize manager." in first
    assert b"\nFrom a quoted line." in first  # mboxrd reading: one ">" less (the writer was mboxo)
    [from_maildir] = items(tmp_path / "md")
    assert report_digest(first) == report_digest(from_maildir.raw)  # every quoting style agrees


def test_mboxrd_levels_lose_one_quote(tmp_path):
    (tmp_path / "rd.mbox").write_bytes(b"From a@b Mon Jan  1 00:00:00 2026\nSubject: x\n\n>From one\n>>From two\n>not from\n\n")
    [item] = items(tmp_path / "rd.mbox")
    assert item.raw.split(b"\n\n", 1)[1].splitlines() == [b"From one", b">From two", b">not from"]


def test_folder_walk_reads_files_and_nested_maildirs(tmp_path):
    (tmp_path / "a.eml").write_bytes(make_message(SPAM_WORDS, seed=1))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.eml").write_bytes(make_message(SPAM_WORDS, seed=2))
    box = mailbox.Maildir(tmp_path / "sub" / "Junk", create=True)
    box.add(_message(7))
    (tmp_path / "sub" / "Junk" / "tmp" / "partial").write_bytes(b"Subject: partial\n\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")
    os.mkfifo(tmp_path / "fifo")  # must not hang the run
    found = items(tmp_path)
    good = [i for i in found if i.error is None]
    assert len(good) == 3
    assert [i for i in found if i.error] and all("regular file" in i.error for i in found if i.error)


def test_unreadable_and_missing_entries_are_error_lines(tmp_path):
    (tmp_path / "ok.eml").write_bytes(ORIGINAL)
    (tmp_path / "empty.eml").write_bytes(b"\n\n")
    found = items(tmp_path) + items(tmp_path / "missing")
    assert [i.error is None for i in found] == [False, True, False]
    assert "empty" in found[0].error and "No such file" in found[2].error


def test_standard_input():
    [item] = list(iter_messages("-", stdin=io.BytesIO(ORIGINAL)))
    assert item.where == "-" and item.raw == ORIGINAL


def test_size_and_count_bounds(tmp_path):
    for n in range(5):
        (tmp_path / f"{n}.eml").write_bytes(make_message(SPAM_WORDS, seed=n))
    (tmp_path / "9-big.eml").write_bytes(b"Subject: big\n\n" + b"x" * 5000)
    found = items(tmp_path, max_bytes=4000)
    assert sum(i.error is None for i in found) == 5
    assert "larger than 4000 bytes" in found[-1].error
    capped = items(tmp_path, max_messages=2)
    assert len(capped) == 3 and capped[-1].error.startswith("more than 2 messages")
    mbox = mailbox.mbox(tmp_path / "x.mbox", create=True)
    for n in range(4):
        mbox.add(_message(n))
    mbox.close()
    assert len(items(tmp_path / "x.mbox", max_messages=3)) == 4  # 3 messages and the line saying so


# -- the digest -----------------------------------------------------------------------------


def test_digest_ignores_transport_differences():
    base = report_digest(ORIGINAL)
    lf = ORIGINAL.replace(b"\r\n", b"\n")
    assert report_digest(lf) == base
    delivered = (
        b"From winner@example.net Mon Mar  2 10:00:01 2026\n"  # mbox envelope line
        b"Return-Path: <winner@example.net>\nDelivered-To: bob@example.com\nX-Original-To: bob+junk@example.com\n"
        b"Received: from mx.example.com by imap.example.com; Mon, 2 Mar 2026 10:00:01 +0000\n"
        b"X-Spam-Status: Yes, score=9.1\nX-Spam: Yes\nX-Mailguard-Action: junk\nX-Virus-Scanned: clamav\n"
        b"Authentication-Results: mx.example.com; spf=pass\nARC-Seal: i=1; a=rsa-sha256; cv=none\n"
        b"Received-SPF: pass\n" + lf
    )
    # mail stores' client flags, where they write them: among the headers
    delivered = delivered.replace(b"MIME-Version: 1.0\n", b"MIME-Version: 1.0\nStatus: RO\nX-Keywords: $Junk\nX-UID: 17\nContent-Length: 99\n")
    assert b"X-UID: 17" in delivered
    assert report_digest(delivered) == base
    spaced = ORIGINAL.replace(b"now, send", b"now, send").replace(b"details.\r\n", b"details.   \t\r\n") + b"\r\n\r\n"
    assert report_digest(spaced) == base
    refolded = ORIGINAL.replace(b"Subject: You have won a prize", b"Subject: You have won\r\n  a    prize")
    assert report_digest(refolded) == base


@pytest.mark.parametrize(
    "change",
    [
        (b"Subject: You have won a prize", b"Subject: You have won a car"),
        (b"bank details", b"bank detail"),
        (b"Message-ID: <prize-1@example.net>", b"Message-ID: <prize-2@example.net>"),
        (b"MIME-Version: 1.0\r\n", b"MIME-Version: 1.0\r\nDKIM-Signature: v=1; d=example.net; b=abc\r\n"),  # DKIM is kept
    ],
)
def test_digest_sees_content_changes(change):
    assert report_digest(ORIGINAL.replace(*change)) != report_digest(ORIGINAL)


@pytest.mark.parametrize("raw", [b"", b"\n", b"no headers at all", b"\xff\xfe\x00binary", b"Subject: x"])
def test_digest_of_odd_input(raw):
    assert len(report_digest(raw)) == 64


# -- the queue ------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_772_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_queue_new_duplicate_replaced_and_counts():
    clock = Clock()
    queue = ReportQueue(MemoryStore(clock), clock=clock)
    first = run(queue.add(ORIGINAL, "bob@example.com", "spam", "cli"))
    assert first.status is ReportStatus.NEW and first.changed and first.digest == report_digest(ORIGINAL)
    again = run(queue.add(ORIGINAL.replace(b"\r\n", b"\n"), "bob@example.com", "spam", "imapsieve"))
    assert again.status is ReportStatus.DUPLICATE and not again.changed
    assert again.report.source == "cli"  # the first report stands
    other_user = run(queue.add(ORIGINAL, "carol@example.com", "spam", "api"))
    assert other_user.status is ReportStatus.NEW
    clock.now += 60
    flipped = run(queue.add(ORIGINAL, "bob@example.com", "ham", "api"))
    assert flipped.status is ReportStatus.REPLACED and flipped.previous == "spam"
    assert run(queue.get(first.digest, "bob@example.com")).label == "ham"
    assert run(queue.counts("bob@example.com")) == {"spam": 0, "ham": 1}
    assert run(queue.counts("carol@example.com")) == {"spam": 1, "ham": 0}
    stale = run(queue.add(ORIGINAL, "bob@example.com", "spam", "cli", now=clock.now - 3600))
    assert stale.status is ReportStatus.STALE and run(queue.get(first.digest, "bob@example.com")).label == "ham"


def test_queue_validates_its_arguments():
    queue = ReportQueue(MemoryStore())
    for args in [(ORIGINAL, "bob@example.com", "maybe", "cli"), (ORIGINAL, "", "spam", "cli"), (ORIGINAL, "bob@example.com", "spam", "Bad Source!")]:
        with pytest.raises(ValueError):
            run(queue.add(*args))
    assert check_source("imapsieve") == "imapsieve"


async def _listed(queue: ReportQueue, since: float | None = None) -> list[tuple[Report, bytes]]:
    return [pair async for pair in queue.iter_reports(since)]


def test_iter_reports_since_and_replacements_listed_once():
    clock = Clock()
    queue = ReportQueue(MemoryStore(clock), clock=clock)
    messages = [make_message(SPAM_WORDS, seed=n) for n in range(3)]
    run(queue.add(messages[0], "bob@example.com", "spam", "cli"))
    clock.now += 2 * 86400
    t1 = clock.now
    run(queue.add(messages[1], "bob@example.com", "spam", "cli"))
    clock.now += 10
    run(queue.add(messages[0], "bob@example.com", "ham", "cli"))  # replaces the day-0 report
    clock.now += 86400
    run(queue.add(messages[2], "carol@example.com", "spam", "arf"))
    everything = run(_listed(queue))
    assert [(r.user, r.label) for r, _ in everything] == [("bob@example.com", "spam"), ("bob@example.com", "ham"), ("carol@example.com", "spam")]
    assert [raw for _, raw in everything] == [messages[1], messages[0], messages[2]]
    recent = run(_listed(queue, since=t1 + 1))
    assert [r.digest for r, _ in recent] == [report_digest(messages[0]), report_digest(messages[2])]


def test_stored_message_is_compressed_bounded_and_expires():
    clock = Clock()
    store = MemoryStore(clock)
    queue = ReportQueue(store, retention_days=10, max_stored_bytes=1000, clock=clock)
    big = b"Subject: big\n\n" + b"spam spam spam\n" * 500
    outcome = run(queue.add(big, "bob@example.com", "spam", "cli"))
    blob = run(store.get(f"report:msg:{outcome.digest}"))
    assert len(blob) < 1000 and zlib.decompress(blob[1:]) == big[:1000]
    assert run(queue.message(outcome.digest)) == big[:1000] and outcome.report.size == len(big)
    clock.now += 11 * 86400
    assert run(queue.get(outcome.digest, "bob@example.com")) is None and run(queue.message(outcome.digest)) is None
    assert run(_listed(queue)) == []
    again = run(queue.add(big, "bob@example.com", "spam", "cli"))
    assert again.status is ReportStatus.NEW  # after retention a report counts anew


def test_garbage_in_the_store_is_skipped():
    clock = Clock()
    store = MemoryStore(clock)
    queue = ReportQueue(store, clock=clock)
    outcome = run(queue.add(ORIGINAL, "bob@example.com", "spam", "cli"))
    run(store.set(f"report:msg:{outcome.digest}", b"\x01not zlib"))
    assert run(queue.message(outcome.digest)) is None and run(_listed(queue)) == []
    run(store.set(f"report:rec:{outcome.digest}:bob@example.com", b"{not json"))
    assert run(queue.get(outcome.digest, "bob@example.com")) is None
    bomb = b"\x01" + zlib.compress(b"\0" * 10_000_000)
    run(store.set(f"report:msg:{outcome.digest}", bomb))
    assert len(run(queue.message(outcome.digest))) == queue.max_stored_bytes  # never inflated past the bound


def test_two_nodes_on_one_sqlite_file_converge(tmp_path):
    path = tmp_path / "shared.sqlite3"

    async def scenario():
        a, b = SqliteStore(path), SqliteStore(path)
        qa, qb = ReportQueue(a), ReportQueue(b)
        copy_a = b"Received: by node-a\r\n" + ORIGINAL
        copy_b = b"Received: by node-b\n" + ORIGINAL.replace(b"\r\n", b"\n")
        first = await qa.add(copy_a, "bob@example.com", "spam", "cli")
        second = await qb.add(copy_b, "bob@example.com", "spam", "imapsieve")
        listed_a = [r async for r, _ in qa.iter_reports()]
        listed_b = [r async for r, _ in qb.iter_reports()]
        await a.close()
        await b.close()
        return first, second, listed_a, listed_b

    first, second, listed_a, listed_b = run(scenario())
    assert first.status is ReportStatus.NEW and second.status is ReportStatus.DUPLICATE
    assert listed_a == listed_b and len(listed_a) == 1


# -- Scanner.report -------------------------------------------------------------------------


def _node(tiny_model, path: Path, users: UsersConfig | None = None) -> Scanner:
    store = SqliteStore(path)
    config = Config(store=StoreConfig(backend="sqlite", path=path), users=users or UsersConfig())
    return Scanner(config, store=store, model=tiny_model, scorers=[BayesScorer(tiny_model.bayes, store)])


def test_report_is_seen_by_another_node_at_once(tiny_model, tmp_path):
    raw = make_message(["quarterly", "synergy", "webinar", "invite"], subject="webinar", seed=21)
    users = UsersConfig(aliases={"bob.smith@example.com": "bob@example.com"})
    with _node(tiny_model, tmp_path / "s.sqlite3", users) as a, _node(tiny_model, tmp_path / "s.sqlite3", users) as b:
        before = b.scan_sync(raw, user="bob@example.com").score
        outcome = a.report_sync(raw, "spam", user="Bob.Smith+junk@Example.com", source="imapsieve")
        after = b.scan_sync(raw, user="bob@example.com").score
        other = b.scan_sync(raw, user="carol@example.com").score
        again = b.report_sync(raw, "spam", user="bob@example.com")
        assert after == pytest.approx(b.scan_sync(raw, user="bob@example.com").score)
    assert outcome.status is ReportStatus.NEW and outcome.learned and outcome.report.user == "bob@example.com"
    assert after > before  # the other node's next scan sees the report
    assert other == pytest.approx(before)  # per-user: nobody else is affected
    assert again.status is ReportStatus.DUPLICATE and not again.learned


def test_opposite_report_replaces_and_learns_the_new_label(tiny_model, tmp_path):
    raw = make_message(["quarterly", "synergy", "webinar", "invite"], subject="webinar", seed=22)
    with _node(tiny_model, tmp_path / "s.sqlite3") as node:
        base = node.scan_sync(raw, user="bob@example.com").score
        node.report_sync(raw, "spam", user="bob@example.com")
        spam = node.scan_sync(raw, user="bob@example.com").score
        flipped = node.report_sync(raw, "ham", user="bob@example.com")
        ham = node.scan_sync(raw, user="bob@example.com").score
    assert flipped.status is ReportStatus.REPLACED and flipped.learned
    assert spam > base and ham < spam  # the ham report pulls back (the spam counts are not un-learned)


def test_report_refuses_a_user_that_is_not_an_address(tiny_model, tmp_path):
    with _node(tiny_model, tmp_path / "s.sqlite3") as node, pytest.raises(ValueError, match="not a mail address"):
        node.report_sync(ORIGINAL, "spam", user="bob")


def test_undecodable_file_names_are_shown_not_fatal(tmp_path):
    (tmp_path / os.fsdecode(b"\xffodd.eml")).write_bytes(ORIGINAL)
    [item] = items(tmp_path)
    assert item.error is None and "\ufffdodd.eml" in item.where
    item.where.encode("utf-8")  # printable as it is


def test_a_user_reporting_every_day_keeps_a_bounded_index():
    """A write renews a whole set's expiry, so one set per user would grow for as long as the
    user reports; the monthly sets expire and counts() covers the retention period only."""
    clock = Clock()
    store = MemoryStore(clock)
    queue = ReportQueue(store, retention_days=30, clock=clock)
    for day in range(200):
        raw = make_message(SPAM_WORDS, subject=f"offer {day}", seed=day)
        run(queue.add(raw, "bob@example.com", "spam", "cli"))
        clock.now += 86400.0
    counts = run(queue.counts("bob@example.com"))
    assert 30 <= counts["spam"] <= 30 + 31 and counts["ham"] == 0  # the retention period, rounded out to months
    index = [k for k in store._sets if k.startswith("report:user:bob@example.com:")]
    live = run(store.get_members(index))
    assert len(live) <= 3  # this month's set and the one or two the retention reaches back into
