"""Scanner: concurrency, failure isolation, deadlines, policy wiring, learn phase."""

from __future__ import annotations

import asyncio

import pytest

from mailguard import Action, Config, Envelope, Hit, Scanner, ScorerInfo
from mailguard.config import PolicyConfig, ScannerConfig, StoreConfig
from mailguard.scorers.bayes import BayesScorer
from mailguard.stores.memory import MemoryStore

from ..conftest import HAM_WORDS, SPAM_WORDS, make_message


class FixedScorer:
    """A scorer that always says the same thing (stands in for a network scorer)."""

    def __init__(self, name: str, hits: list[Hit], *, delay: float = 0.0, timeout: float = 1.0, learns: bool = False, network: bool = False) -> None:
        self.name = name
        self.hits = hits
        self.delay = delay
        self.info = ScorerInfo(
            group=name,
            symbols={h.symbol: "" for h in hits},
            default_weights={h.symbol: 1.0 for h in hits},
            timeout=timeout,
            learns=learns,
            network=network,
        )
        self.started = 0.0

    async def score(self, ctx):
        self.started = asyncio.get_running_loop().time()
        await asyncio.sleep(self.delay)
        return list(self.hits)


class BrokenScorer(FixedScorer):
    async def score(self, ctx):
        raise RuntimeError("lookup exploded")


def memory_config(**scanner: object) -> Config:
    return Config(store=StoreConfig(backend="memory"), scanner=ScannerConfig(**scanner))  # type: ignore[arg-type]


def scanner_with(tiny_model, *extra, config: Config | None = None) -> Scanner:
    store = MemoryStore()
    scorers = [BayesScorer(tiny_model.bayes, store), *extra]
    return Scanner(config or memory_config(), store=store, model=tiny_model, scorers=scorers)


def test_ham_accepted_and_spam_flagged(tiny_model, ham_message, spam_message):
    with scanner_with(tiny_model) as scanner:
        ham = scanner.scan_sync(ham_message)
        spam = scanner.scan_sync(spam_message)
    assert ham.verdict.action is Action.ACCEPT and not ham.verdict.is_spam
    assert spam.verdict.is_spam and spam.verdict.action in (Action.JUNK, Action.REJECT, Action.QUARANTINE)
    assert spam.score > ham.score
    assert spam.probability > 0.99 > 0.01 > ham.probability
    assert [c.symbol for c in spam.contributions] == ["BAYES"]
    headers = dict(spam.verdict.headers)
    assert headers["X-Spam-Flag"] == "YES" and headers["X-Spam-Status"].startswith("Yes, score=")


def test_scorers_run_concurrently(tiny_model, ham_message):
    slow = [FixedScorer(f"slow{i}", [Hit(f"S{i}", 0.1)], delay=0.3) for i in range(4)]
    with scanner_with(tiny_model, *slow) as scanner:
        result = scanner.scan_sync(ham_message)
    assert not result.failures
    assert result.elapsed < 0.3 * 4 * 0.6  # four 0.3 s scorers overlap
    assert {c.symbol for c in result.contributions} >= {"S0", "S1", "S2", "S3"}


def test_failing_scorer_is_recorded_and_scan_goes_on(tiny_model, spam_message):
    with scanner_with(tiny_model, BrokenScorer("dnsbl", [])) as scanner:
        result = scanner.scan_sync(spam_message)
    assert [(f.scorer, f.kind) for f in result.failures] == [("dnsbl", "error")]
    assert "lookup exploded" in result.failures[0].message
    assert result.verdict.is_spam  # bayes still decided
    assert "failed: dnsbl" in dict(result.verdict.headers)["X-Mailguard-Report"]


def test_scorer_timeout_and_scan_deadline(tiny_model, ham_message):
    per_scorer = FixedScorer("slowdns", [Hit("X", 5.0)], delay=5.0, timeout=0.1)
    with scanner_with(tiny_model, per_scorer) as scanner:
        result = scanner.scan_sync(ham_message)
    assert [(f.scorer, f.kind) for f in result.failures] == [("slowdns", "timeout")]
    assert all(c.symbol != "X" for c in result.contributions)

    past_deadline = FixedScorer("slowrbl", [Hit("Y", 5.0)], delay=5.0, timeout=10.0)
    with scanner_with(tiny_model, past_deadline, config=memory_config(deadline=0.2)) as scanner:
        result = scanner.scan_sync(ham_message)
    assert result.elapsed < 2.0
    assert [(f.scorer, f.kind) for f in result.failures] == [("slowrbl", "timeout")]
    assert "deadline" in result.failures[0].message


def test_a_scorer_past_its_timeout_is_cancelled_while_slower_ones_within_theirs_still_answer(tiny_model, ham_message):
    stuck = FixedScorer("stuck", [Hit("X", 5.0)], delay=5.0, timeout=0.1)
    slow = FixedScorer("slow", [Hit("Y", 1.0)], delay=0.3, timeout=2.0)
    fast = FixedScorer("fast", [Hit("Z", 1.0)])
    with scanner_with(tiny_model, stuck, slow, fast) as scanner:
        result = scanner.scan_sync(ham_message)
    assert [(f.scorer, f.kind, f.message) for f in result.failures] == [("stuck", "timeout", "no answer within 0.1s")]
    assert {"Y", "Z"} <= {c.symbol for c in result.contributions}
    assert "X" not in {c.symbol for c in result.contributions}


def test_scorer_returning_garbage_is_a_failure(tiny_model, ham_message):
    bad = FixedScorer("bad", [])
    bad.hits = ["not a hit"]  # type: ignore[list-item]
    with scanner_with(tiny_model, bad) as scanner:
        result = scanner.scan_sync(ham_message)
    assert result.failures[0].scorer == "bad" and result.failures[0].kind == "error"


def test_failure_policy_tempfail(tiny_model, ham_message):
    config = Config(store=StoreConfig(backend="memory"), policy=PolicyConfig(on_failure={"virus": "tempfail"}))
    with scanner_with(tiny_model, BrokenScorer("virus", []), config=config) as scanner:
        result = scanner.scan_sync(ham_message)
    assert result.verdict.action is Action.TEMPFAIL
    assert result.verdict.smtp_reply is not None and result.verdict.smtp_reply[:2] == ("451", "4.7.1")


def test_network_scorers_off_without_network(tiny_model):
    net = FixedScorer("dnsbl", [Hit("RBL", 3.0)], network=True)
    store = MemoryStore()
    scanner = Scanner(memory_config(network=False), store=store, model=tiny_model, scorers=[BayesScorer(tiny_model.bayes, store), net])
    assert [s.name for s in scanner.scorers] == ["bayes"]
    scanner.close()


def test_per_user_thresholds_change_the_action(tiny_model):
    # a message with mixed words scores in between: strict users junk it, lenient ones do not
    raw = make_message(HAM_WORDS + SPAM_WORDS, subject="offer", seed=7)
    with scanner_with(tiny_model) as scanner:
        base = scanner.scan_sync(raw)
        scanner._run(scanner.policy.set_user("strict@example.net", thresholds={"junk": base.score - 1, "tag": None}))
        scanner._run(scanner.policy.set_user("lenient@example.net", thresholds={"junk": base.score + 1, "tag": None}))
        strict = scanner.scan_sync(raw, Envelope(rcpt_to=("Strict@Example.net",)))
        lenient = scanner.scan_sync(raw, user="lenient@example.net")
    assert strict.verdict.user == "strict@example.net"  # per-user data is keyed by the canonical address
    assert strict.verdict.action is Action.JUNK
    assert lenient.verdict.action is Action.ACCEPT
    assert strict.score == pytest.approx(lenient.score)


def test_autolearn_never_trusts_the_learner_itself(tiny_model, spam_message):
    with scanner_with(tiny_model) as scanner:
        result = scanner.scan_sync(spam_message, learn=True)
    assert result.verdict.is_spam
    assert result.learned is None  # only bayes spoke: no independent evidence


def test_autolearn_on_independent_evidence_learns_once(tiny_model):
    strong = FixedScorer("rbl", [Hit("LISTED", 20.0)])
    raw = make_message(["unheardof", "tokenzzz", "qwertyuiop"], subject="zzz", seed=11)
    with scanner_with(tiny_model, strong) as scanner:
        before = next(c for c in scanner.scan_sync(raw).contributions if c.symbol == "BAYES")
        first = scanner.scan_sync(raw, learn=True)
        second = scanner.scan_sync(raw, learn=True)
        after = next(c for c in scanner.scan_sync(raw).contributions if c.symbol == "BAYES")
    assert first.learned == "spam"
    assert second.learned is None  # the same message is learned once
    assert after.points > before.points  # its tokens now lean spam


def test_per_user_learning_stays_with_that_user(tiny_model):
    raw = make_message(["quarterly", "synergy", "webinar", "invite"], subject="webinar", seed=12)
    with scanner_with(tiny_model) as scanner:
        before = scanner.scan_sync(raw, user="carol@example.net").score
        assert scanner.learn_sync(raw, "spam", user="carol@example.net")
        carol = scanner.scan_sync(raw, user="carol@example.net").score
        dave = scanner.scan_sync(raw, user="dave@example.net").score
    assert carol > before
    # carol's copies of the features share the hashed table with everyone's: a bucket they
    # collide with moves dave's score a little (the test model's table is small), no more
    assert abs(dave - before) < 0.05 * (carol - before)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x01\x02 not a message at all \xff\xfe",
        b"Subject: only headers",
        b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\nContent-Type: multipart/mixed; boundary=b\n\n" * 1000,
        b"Content-Type: text/plain; charset=no-such-charset\n\n\xe4\xbd\xa0\xe5\xa5\xbd \xff\xff",
    ],
    ids=["empty", "binary", "headers-only", "deep-nesting", "bad-charset"],
)
def test_malformed_input_never_raises(tiny_model, raw):
    with scanner_with(tiny_model) as scanner:
        result = scanner.scan_sync(raw)
    assert result.verdict.action in set(Action)
    assert not result.failures


def test_async_api(tiny_model, ham_message, spam_message):
    async def main():
        scanner = scanner_with(tiny_model)
        results = await asyncio.gather(*(scanner.scan(m) for m in (ham_message, spam_message)))
        await scanner.aclose()
        return results

    ham, spam = asyncio.run(main())
    assert ham.score < spam.score


class HeaderScorer(FixedScorer):
    async def score(self, ctx):
        ctx.add_header("Authentication-Results", "mx.example.net;\r\n spf=pass smtp.mailfrom=example.org")
        return []


def test_scorer_headers_reach_every_recipients_verdict(tiny_model, ham_message):
    with scanner_with(tiny_model, HeaderScorer("auth", [])) as scanner:
        ctx = scanner.context(ham_message)
        first = scanner.scan_sync(ctx, user="a@example.net")
        second = scanner.scan_sync(ctx, user="b@example.net")
    for result in (first, second):
        headers = [h for h in result.verdict.headers if h[0] == "Authentication-Results"]
        assert headers == [("Authentication-Results", "mx.example.net; spf=pass smtp.mailfrom=example.org")]


def test_aliases_and_plus_tags_reach_the_same_per_user_thresholds(tiny_model):
    from mailguard.config import UsersConfig, config_from_mapping
    from mailguard.policy import LEVELS

    config = config_from_mapping({"store": {"backend": "memory"}, "scanner": {"scorers": ["bayes"]}, "users": {"aliases": {"info@shop.example": "alice@shop.example"}}})
    assert isinstance(config.users, UsersConfig)
    raw = b"From: a@b.example\r\nSubject: hello\r\n\r\nhello there\r\n"
    with Scanner(config, store=MemoryStore(), model=tiny_model) as scanner:
        scanner._run(scanner.policy.set_user("alice@shop.example", level="high"))
        for address in ("Alice@Shop.Example", "alice+news@shop.example", "info@shop.example"):
            result = scanner.scan_sync(raw, user=address)
            assert result.verdict.user == "alice@shop.example"
            assert result.verdict.required == LEVELS["high"].required != LEVELS["medium"].required


def test_close_cancels_what_a_sync_scan_left_running_and_closes_its_loop(tiny_model, ham_message):
    left: list[asyncio.Task] = []

    class Spawner(FixedScorer):
        async def score(self, ctx):
            left.append(asyncio.get_running_loop().create_task(asyncio.sleep(3600)))
            return []

    scanner = scanner_with(tiny_model, Spawner("spawner", []))
    scanner.scan_sync(ham_message)
    loop = left[0].get_loop()
    scanner.close()
    assert left[0].cancelled() and loop.is_closed()
