"""The report queue and Scanner.report on a real redis-server: two nodes, one Redis.

redis-server is required (scripts/system-deps installs it); nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from mailguard import Config, Scanner
from mailguard.config import ScannerConfig, StoreConfig
from mailguard.reports.queue import ReportQueue, ReportStatus
from mailguard.reports.sources import report_digest
from mailguard.scorers.bayes import BayesScorer
from mailguard.stores.redis import RedisStore

from ..conftest import SPAM_WORDS, make_message


def test_two_nodes_share_one_queue(server):
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    raw = make_message(SPAM_WORDS, subject="offer", seed=900)

    async def scenario():
        a, b = RedisStore(server.url, prefix=prefix), RedisStore(server.url, prefix=prefix)
        qa, qb = ReportQueue(a), ReportQueue(b)
        first = await qa.add(b"Received: by node-a\n" + raw, "bob@example.org", "spam", "imapsieve")
        same = await qb.add(b"Received: by node-b\r\n" + raw.replace(b"\n", b"\r\n"), "bob@example.org", "spam", "arf")
        flipped = await qb.add(raw, "bob@example.org", "ham", "api", now=time.time() + 1)
        listed = [(r.user, r.label, r.source) async for r, _ in qa.iter_reports()]
        counts = await qa.counts("bob@example.org")
        stored = await qa.message(report_digest(raw))
        await a.close()
        await b.close()
        return first, same, flipped, listed, counts, stored

    first, same, flipped, listed, counts, stored = asyncio.run(scenario())
    assert first.status is ReportStatus.NEW and same.status is ReportStatus.DUPLICATE
    assert flipped.status is ReportStatus.REPLACED and flipped.previous == "spam"
    assert listed == [("bob@example.org", "ham", "api")]
    assert counts == {"spam": 0, "ham": 1}
    assert stored is not None and stored.endswith(raw)


def test_report_on_one_node_is_scanned_on_the_other(server, tiny_model):
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    config = Config(store=StoreConfig(backend="redis", url=server.url, prefix=prefix), scanner=ScannerConfig(network=False))
    raw = make_message(["quarterly", "synergy", "webinar", "invite"], subject="webinar", seed=901)

    def node() -> Scanner:
        store = RedisStore(server.url, prefix=prefix)
        return Scanner(config, store=store, model=tiny_model, scorers=[BayesScorer(tiny_model.bayes, store)])

    with node() as a, node() as b:
        before = b.scan_sync(raw, user="bob@example.org").score
        outcome = a.report_sync(raw, "spam", user="Bob+junk@Example.org", source="imapsieve")
        after = b.scan_sync(raw, user="bob@example.org").score  # how soon: benchmarks/report_latency.py
        again = b.report_sync(raw, "spam", user="bob@example.org")
    assert outcome.status is ReportStatus.NEW and outcome.learned
    assert after > before
    assert again.status is ReportStatus.DUPLICATE and not again.learned


def test_acknowledged_report_survives_sigkill_of_redis():
    """With ``appendonly yes`` a report Scanner.report acknowledged is still there after
    redis-server is SIGKILLed and restarted on the same directory. The test uses
    ``appendfsync always`` (fsync before the reply): under ``everysec`` Redis writes to the
    AOF before replying too, so a kill of Redis alone loses nothing, except when a slow disk
    makes it postpone that write (up to 2 s); a power loss can lose up to about a second.
    See the README's Redis section."""
    from mailguard.testing import RedisServer

    raw = make_message(SPAM_WORDS, subject="offer", seed=901)
    with RedisServer(appendfsync="always") as server:
        config = Config(store=StoreConfig(backend="redis", url=server.url), scanner=ScannerConfig(network=False))
        with Scanner(config, scorers=[]) as node:
            outcome = node.report_sync(raw, "spam", user="bob@example.org", source="imapsieve")
            assert outcome.status is ReportStatus.NEW
            server.kill()  # right after the acknowledgement: no shutdown, no save
            server.start()  # same port and directory: Redis replays its append-only file

            async def read_back():
                store = RedisStore(server.url)
                queue = ReportQueue(store)
                found = (await queue.get(outcome.digest, "bob@example.org"), await queue.message(outcome.digest),
                         [r.digest async for r, _ in queue.iter_reports()])
                await store.close()
                return found

            report, message, listed = asyncio.run(read_back())
    assert report is not None and report.label == "spam" and report.source == "imapsieve"
    assert message == raw and listed == [outcome.digest]
