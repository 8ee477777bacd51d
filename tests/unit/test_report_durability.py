"""A report acknowledged by Scanner.report (what `mailguard report` prints a line for) is in
the SQLite store before the call returns: a process SIGKILLed right after acknowledging it
leaves it there for the next process. (Redis: tests/integration/test_reports_redis.py.)"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap

import pytest

from mailguard.reports.queue import ReportQueue
from mailguard.reports.sources import report_digest
from mailguard.stores.sqlite import SqliteStore

from ..conftest import SPAM_WORDS, make_message

# The child acknowledges one report, says so, and is SIGKILLed at once: no close, no atexit,
# no destructor runs. Its scanner has no scorers: what is tested is the queue's writes.
CHILD = textwrap.dedent("""
    import os, signal, sys
    from mailguard import Scanner
    from mailguard.config import Config, ScannerConfig, StoreConfig
    config = Config(store=StoreConfig(backend="sqlite", path=sys.argv[1]), scanner=ScannerConfig(network=False))
    scanner = Scanner(config, scorers=[])
    outcome = scanner.report_sync(sys.stdin.buffer.read(), "spam", user="Bob+junk@Example.org", source="imapsieve")
    print(outcome.status, outcome.digest, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")

READER = textwrap.dedent("""
    import asyncio, sys
    from mailguard.reports.queue import ReportQueue
    from mailguard.stores.sqlite import SqliteStore
    async def main():
        store = SqliteStore(sys.argv[1])
        queue = ReportQueue(store)
        report = await queue.get(sys.argv[2], "bob@example.org")
        listed = [r.digest async for r, _ in queue.iter_reports()]
        message = await queue.message(sys.argv[2])
        await store.close()
        print(report.label if report else None, report.source if report else None, listed.count(sys.argv[2]), len(message or b""))
    asyncio.run(main())
""")


@pytest.mark.real_clock  # waits for its child process with a timeout
def test_acknowledged_report_survives_sigkill_of_the_process(tmp_path):
    path = tmp_path / "store.sqlite3"
    raw = make_message(SPAM_WORDS, subject="offer", seed=4242)
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], input=raw, capture_output=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    status, digest = child.stdout.decode().split()
    assert status == "new" and digest == report_digest(raw)
    # read back by a new process, with nothing of the child's left but the files
    reader = subprocess.run([sys.executable, "-c", READER, str(path), digest], capture_output=True, timeout=60, check=True)
    assert reader.stdout.decode().split() == ["spam", "imapsieve", "1", str(len(raw))]


def test_a_second_store_on_the_file_sees_each_write_once_it_returns(tmp_path):
    """Every store call commits before it returns (no write is left in an open transaction)."""
    path = tmp_path / "store.sqlite3"
    raw = make_message(SPAM_WORDS, subject="offer", seed=4243)

    async def scenario():
        writer, reader = SqliteStore(path), SqliteStore(path)
        outcome = await ReportQueue(writer).add(raw, "bob@example.org", "spam", "cli")
        in_transaction = writer._db.in_transaction
        seen = await ReportQueue(reader).get(outcome.digest, "bob@example.org")
        await writer.close()
        await reader.close()
        return in_transaction, seen

    in_transaction, seen = asyncio.run(scenario())
    assert not in_transaction and seen is not None and seen.label == "spam"
