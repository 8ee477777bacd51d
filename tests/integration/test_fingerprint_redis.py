"""The fingerprint scorer on a real redis-server (RedisStore): the unit-test checks again,
plus what only Redis shows: round trips per lookup, an expiry on every key, compact
sets, and Redis going away mid-run (score raises StoreError, the scanner records it).

redis-server is required: without it the fixture fails (scripts/system-deps installs it).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from mailguard import Config, Scanner
from mailguard.config import StoreConfig
from mailguard.errors import StoreError
from mailguard.message import Envelope, MessageContext
from mailguard.scorers.fingerprint import FingerprintScorer, Settings
from mailguard.stores.redis import RedisStore

from ..unit.test_fingerprint import HAM_BODY, OTHER_BODY, SPAM_BODY, ctx_of, message, variant

Run = Callable[[Any], Any]


def symbols(hits) -> dict[str, float]:
    return {h.symbol: h.value for h in hits}


def test_learned_spam_and_ham_are_found_as_near_duplicates(store, run):
    scorer = FingerprintScorer(store, Settings(bulk=False))
    run(scorer.learn(ctx_of(SPAM_BODY), "spam", source="report"))
    run(scorer.learn(ctx_of(HAM_BODY), "ham", source="train"))
    spam = symbols(run(scorer.score(ctx_of(variant(SPAM_BODY), seed=1))))
    assert set(spam) == {"FUZZY_SPAM"} and 0.5 <= spam["FUZZY_SPAM"] < 1.0
    ham = symbols(run(scorer.score(ctx_of(HAM_BODY.replace("ten", "eleven"), seed=2))))
    assert set(ham) == {"FUZZY_HAM"}
    assert run(scorer.score(ctx_of(OTHER_BODY, seed=3))) == []
    run(scorer.learn(ctx_of(SPAM_BODY), "ham", source="report"))  # a later opposite label replaces
    assert set(symbols(run(scorer.score(ctx_of(SPAM_BODY, seed=4))))) == {"FUZZY_HAM"}


def test_bulk_counts_distinct_recipients_once(store, run):
    scorer = FingerprintScorer(store, Settings(bulk_min_recipients=1))

    def bulk(body: str, rcpt: str, seed: int) -> float:
        return symbols(run(scorer.score(ctx_of(body, rcpt=(rcpt,), seed=seed)))).get("FUZZY_BULK", 0.0)

    values = [bulk(variant(SPAM_BODY) if i % 2 else SPAM_BODY, f"r{i}@example.net", i) for i in range(6)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[-1] == pytest.approx(math.log2(1 + 6), abs=0.1)
    assert bulk(SPAM_BODY, "r2@example.net", 50) == values[-1]  # the same recipient again


def test_per_recipient_copies_share_one_lookup(store, run):
    scorer = FingerprintScorer(store, Settings(bulk_min_recipients=1))
    rcpt = ("a@example.net", "b@example.net", "c@example.net", "d@example.net")
    ctx = MessageContext(message(SPAM_BODY), Envelope(rcpt_to=rcpt))

    async def scan_each():
        return await asyncio.gather(*(scorer.score(ctx.for_user(u)) for u in rcpt))

    before = store.round_trips
    results = run(scan_each())
    assert all(r == results[0] for r in results)
    assert symbols(results[0])["FUZZY_BULK"] == pytest.approx(math.log2(1 + 4), abs=0.05)
    assert store.round_trips - before == 1  # unseen text: reads and the bulk write in one pipeline


def test_round_trips_per_lookup(store, run):
    scorer = FingerprintScorer(store)
    run(scorer.learn(ctx_of(SPAM_BODY), "spam"))
    before = store.round_trips
    assert "FUZZY_SPAM" in symbols(run(scorer.score(ctx_of(variant(SPAM_BODY), rcpt=("x@example.net",), seed=1))))
    assert store.round_trips - before == 2  # (bands, bulk sets, bulk write), then the candidates' records
    before = store.round_trips
    run(scorer.score(ctx_of(OTHER_BODY, rcpt=("x@example.net",), seed=2)))
    assert store.round_trips - before == 1


def test_every_key_expires_and_sets_stay_compact(store, run, raw, prefix):
    scorer = FingerprintScorer(store)
    payload = bytes(range(256)) * 8
    run(scorer.learn(ctx_of(SPAM_BODY, attachments=[("a.bin", payload)]), "spam"))
    run(scorer.score(ctx_of(variant(SPAM_BODY), rcpt=("x@example.net", "y@example.net"), seed=1)))
    keys = list(raw.scan_iter(match=f"{prefix}*"))
    kinds = {k.decode().removeprefix(prefix).split(":")[2] for k in keys}
    assert kinds == {"b", "f", "a", "r"}
    assert all(raw.pttl(k) > 0 for k in keys)
    learned = [k for k in keys if b":fz:b:" in k or b":fz:f:" in k or b":fz:a:" in k]
    assert all(raw.pttl(k) > 29 * 86400 * 1000 for k in learned)
    sets = [k for k in keys if raw.type(k) == b"set"]
    assert sets and {raw.object("encoding", k) for k in sets} == {b"intset"}


def test_learned_fingerprints_expire_in_redis(store, run):
    scorer = FingerprintScorer(store, Settings(bulk=False, learn_ttl_days=0.2 / 86400))  # 200 ms
    run(scorer.learn(ctx_of(SPAM_BODY), "spam"))
    assert "FUZZY_SPAM" in symbols(run(scorer.score(ctx_of(SPAM_BODY, seed=1))))
    time.sleep(0.35)
    assert run(scorer.score(ctx_of(SPAM_BODY, seed=2))) == []


def test_redis_stopped_mid_run_raises_store_error_and_the_scanner_records_it(server, store, run):
    scorer = FingerprintScorer(store)
    run(scorer.learn(ctx_of(SPAM_BODY), "spam"))
    assert "FUZZY_SPAM" in symbols(run(scorer.score(ctx_of(variant(SPAM_BODY), seed=1))))
    scanner = Scanner(Config(store=StoreConfig(backend="memory")), store=store, scorers=[scorer])
    server.stop()
    try:
        with pytest.raises(StoreError):
            run(scorer.score(ctx_of(variant(SPAM_BODY), seed=2)))
        result = run(scanner.scan(message(variant(SPAM_BODY), seed=3)))
        assert [(f.scorer, f.kind) for f in result.failures] == [("fingerprint", "error")]
        assert "StoreError" in result.failures[0].message
    finally:
        server.start()
    # back again: the same store and scorer answer (the learned data went with the old process)
    assert run(scorer.score(ctx_of(variant(SPAM_BODY), seed=4))) == []
    run(scorer.learn(ctx_of(SPAM_BODY), "spam"))
    assert "FUZZY_SPAM" in symbols(run(scorer.score(ctx_of(variant(SPAM_BODY), seed=5))))


def test_redis_stopped_between_the_two_round_trips(server, prefix, run):
    """Truly mid-scan: the band sets are read, then Redis goes away before the records."""

    class StopsAfterFirstRead(RedisStore):
        armed = False
        first_read_answered = False

        async def get_members(self, keys):
            found = await super().get_members(keys)
            if self.armed:
                self.first_read_answered = bool(found)
                server.stop()
            return found

    store = StopsAfterFirstRead(server.url, prefix=prefix)
    scorer = FingerprintScorer(store, Settings(bulk=False))
    try:
        run(scorer.learn(ctx_of(SPAM_BODY), "spam"))
        store.armed = True
        with pytest.raises(StoreError):
            run(scorer.score(ctx_of(variant(SPAM_BODY), seed=1)))
        assert store.first_read_answered  # the candidates were found; their records could not be read
    finally:
        server.start()
        run(store.close())
