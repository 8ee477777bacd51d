"""Fuzzy fingerprints: normalisation, min-hash estimates against exact Jaccard, LSH
candidates, and the scorer on MemoryStore and SqliteStore (learning, bulk, TTLs, bounds)."""

from __future__ import annotations

import asyncio
import math
import random
import subprocess
import sys
from email.message import EmailMessage

import numpy as np
import pytest

from mailguard.scorers import minhash as fp
from mailguard.config import Config, StoreConfig
from mailguard.errors import ConfigError, ScorerError, StoreError
from mailguard.message import Envelope, MessageContext
from mailguard.scanner import Scanner
from mailguard.scorer import Services
from mailguard.scorers.fingerprint import FingerprintScorer, Settings
from mailguard.stores import MemoryStore, SqliteStore

VOCAB = (
    "offer price account bank money transfer urgent reply winner prize claim free gift card order shipping "
    "delivery package invoice payment confirm verify login password security update service customer support "
    "team meeting project report schedule review budget draft notes agenda friday monday office client contract "
    "discount limited time only today special deal best quality product new click here now visit website "
    "online store buy sell cheap pills health weight loss dating singles casino bonus lottery million dollars"
).split()


def run(coro):
    return asyncio.run(coro)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def words(seed: int, n: int = 120) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(n)]


def mutate(text_words: list[str], changes: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = list(text_words)
    for _ in range(changes):
        out[rng.randrange(len(out))] = rng.choice(VOCAB) + "x"
    return out


def exact_jaccard(a: list[str], b: list[str]) -> float:
    sa = {tuple(a[i : i + 3]) for i in range(len(a) - 2)}
    sb = {tuple(b[i : i + 3]) for i in range(len(b) - 2)}
    return len(sa & sb) / len(sa | sb)


def sig(text_words: list[str]) -> np.ndarray:
    out = fp.signature(fp.shingle_hashes(text_words))
    assert out is not None
    return out


def message(body: str, *, subject: str = "hello", attachments: list[tuple[str, bytes]] = (), seed: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = "someone@example.net"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{seed}.{random.Random(seed).random()}@example.org>"
    msg.set_content(body)
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def ctx_of(body: str, *, rcpt: tuple[str, ...] = (), **kw) -> MessageContext:
    return MessageContext(message(body, **kw), Envelope(rcpt_to=rcpt))


SPAM_BODY = (
    "Dear customer, your account 4411 has been selected for a special cash prize of $5,000. "
    "To claim it visit https://claims.prize-center.example.com/u/88123 before Friday and confirm "
    "your bank details with our support team. This limited offer expires in 48 hours so act now "
    "and reply to agent mary@prize-center.example.com with your full name and phone number today."
)


def variant(body: str) -> str:
    """The same campaign: other numbers, another tracking URL and address, two words changed."""
    return (
        body.replace("4411", "90210").replace("$5,000", "$7,250").replace("88123", "X7-4410?ref=99")
        .replace("mary@", "john@").replace("Friday", "Monday").replace("48 hours", "72 hours").replace("today", "soon")
    )


HAM_BODY = (
    "Hi team, the project review moved to Thursday at ten. Please bring the budget draft and your notes "
    "on the client contract so we can finish the schedule before the end of the month. Lunch is on me."
)
OTHER_BODY = " ".join(words(99, 80))


# -- normalisation ----------------------------------------------------------------------


def test_normalise_lowercases_drops_punctuation_and_collapses_space():
    assert fp.normalise("Hello,   WORLD!!\n\n\tfoo--Bar; (baz)") == ["hello", "world", "foo", "bar", "baz"]


def test_urls_become_their_registered_domain():
    a = fp.normalise("see https://www.shop.example.co.uk/track?id=1 now")
    b = fp.normalise("see http://promo.example.co.uk/other/path now")
    c = fp.normalise("see https://another.example.org/track?id=1 now")
    assert a == b and a != c and len(a) == 3
    assert any("example" in w for w in a) and not any("track" in w or "www" in w for w in a)


def test_numbers_and_addresses_become_placeholders():
    a = fp.normalise("Only $19.99 today for order 123456, write to bob@example.com")
    b = fp.normalise("Only 4,500 today for order 98 7 6, write to alice@example.net")
    assert a == b
    assert fp.NUMBER in a and fp.EMAIL in a and "bob" not in a


def test_url_hosts_resolved_are_bounded():
    names = ["".join(chr(97 + (i // 26**k) % 26) for k in range(3)) for i in range(200)]  # aaa, baa, ...
    text = " ".join(f"https://www.{name}.com/x" for name in names)
    out = fp.normalise(text)
    assert len(out) == 200
    assert len(set(out[:64])) == 64 and set(out[64:]) == {"url"}


def test_cjk_is_one_word_per_character():
    out = fp.normalise("特价商品 限时优惠")
    assert out == list("特价商品限时优惠")


def test_normalise_is_bounded_by_max_words():
    text = " ".join(words(1, 50_000))
    assert len(fp.normalise(text, max_words=300)) == 300
    assert len(fp.normalise("x" * 2_000_000, max_words=300)) <= 300


# -- min-hash ---------------------------------------------------------------------------


def test_estimate_tracks_exact_jaccard():
    rng = random.Random(7)
    exact, estimated = [], []
    for trial in range(200):
        base = words(trial, 150)
        other = mutate(base, rng.randint(0, 60), seed=trial + 10_000)
        exact.append(exact_jaccard(base, other))
        estimated.append(fp.similarity(sig(base), sig(other)))
    exact_a, est_a = np.array(exact), np.array(estimated)
    assert exact_a.min() < 0.3 and exact_a.max() > 0.9  # the trials span the range
    assert abs(np.mean(est_a - exact_a)) < 0.03  # unbiased
    assert np.mean(np.abs(est_a - exact_a)) < 0.1  # about sqrt(J(1-J)/32)
    assert np.corrcoef(exact_a, est_a)[0, 1] > 0.9


def test_near_duplicates_high_unrelated_low():
    base = words(1, 200)
    near = mutate(base, 4, seed=2)
    assert fp.similarity(sig(base), sig(near)) >= 0.7
    unrelated = [fp.similarity(sig(base), sig(words(100 + i, 200))) for i in range(20)]
    assert max(unrelated) <= 0.15


def test_disjoint_texts_share_no_signature_value():
    """Values are wide enough that unrelated shingles never agree by chance."""
    rng = random.Random(3)
    left = [f"l{i}" for i in range(5000)]
    right = [f"r{i}" for i in range(5000)]
    for _ in range(60):
        a = [rng.choice(left) for _ in range(100)]
        b = [rng.choice(right) for _ in range(100)]
        assert fp.similarity(sig(a), sig(b)) == 0.0


def test_number_and_url_variations_do_not_change_the_signature():
    a = fp.signature_of_text(SPAM_BODY)
    b = fp.signature_of_text(variant(SPAM_BODY).replace("Monday", "Friday").replace("72", "48").replace("soon", "today"))
    assert a is not None and b is not None
    assert fp.similarity(a, b) == 1.0


def test_signature_is_stable_across_processes():
    """Stored signatures outlive processes: nothing may depend on Python's hash seed."""
    code = "from mailguard.scorers.minhash import signature_of_text as s; import sys; print(s(sys.argv[1]).tolist())"
    outs = set()
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PATH": ""}
        outs.add(subprocess.run([sys.executable, "-c", code, SPAM_BODY], env=env, capture_output=True, text=True, check=True).stdout)
    assert len(outs) == 1
    assert outs.pop().strip() == str(fp.signature_of_text(SPAM_BODY).tolist())


def test_signature_bytes_round_trip():
    s = sig(words(3))
    assert np.array_equal(fp.signature_from_bytes(fp.signature_to_bytes(s)), s)
    assert fp.signature_from_bytes(b"short") is None


def test_too_short_texts_are_not_fingerprinted():
    assert fp.signature_of_text("just a few words here", min_words=10) is None
    assert fp.signature_of_text(" ".join(words(1, 10)), min_words=10) is not None
    assert fp.signature(fp.shingle_hashes(["a", "b"])) is None


# -- LSH --------------------------------------------------------------------------------


def test_bands_find_near_duplicates_and_skip_unrelated():
    found = unrelated_found = 0
    sims = []
    for trial in range(200):
        base = words(trial, 150)
        near = mutate(base, 6, seed=trial + 500)
        sims.append(exact_jaccard(base, near))
        found += bool(set(fp.band_hashes(sig(base))) & set(fp.band_hashes(sig(near))))
        unrelated_found += bool(set(fp.band_hashes(sig(base))) & set(fp.band_hashes(sig(words(trial + 9000, 150)))))
    expected = np.mean([fp.candidate_probability(j) for j in sims])
    assert found / 200 >= expected - 0.08
    assert found / 200 >= 0.85
    assert unrelated_found <= 2


def test_band_index_is_part_of_the_key():
    same_rows = np.full(fp.NUM_PERM, 12345, dtype=np.uint32)
    assert len(set(fp.band_hashes(same_rows))) == fp.BANDS
    with pytest.raises(ValueError):
        fp.band_hashes(same_rows, bands=9, rows=4)


def test_candidate_probability_is_the_s_curve():
    p = [fp.candidate_probability(j) for j in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert p == sorted(p) and p[0] < 0.01 and p[-1] > 0.99


# -- the scorer ---------------------------------------------------------------------------


class CountingStore:
    """Wraps a real store and records each call as (method, number of keys, round), where
    calls issued in the same event-loop tick share a round (as a coalescing store would
    send them in one round trip)."""

    answers_inline = False  # its calls wait, as a coalescing store's do

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int, int]] = []
        self.finished = 0

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        async def counted(arg=None, *rest, **kw):
            self.calls.append((name, len(arg) if hasattr(arg, "__len__") else 1, self.finished))
            await asyncio.sleep(0)  # let calls of the same tick register before any finishes
            try:
                return await method(arg, *rest, **kw)
            finally:
                self.finished += 1

        return counted

    def reset(self) -> None:
        self.calls.clear()
        self.finished = 0

    def rounds(self) -> int:
        return len({r for _, _, r in self.calls})


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "sqlite"])
def store(request, clock, tmp_path):
    s = MemoryStore(clock=clock) if request.param == "memory" else SqliteStore(tmp_path / "fp.sqlite3", clock=clock)
    yield s
    run(s.close())


def make_scorer(store, clock, **settings) -> FingerprintScorer:
    return FingerprintScorer(store, Settings(**settings), clock=clock)


def symbols(hits) -> dict[str, float]:
    return {h.symbol: h.value for h in hits}


def test_learned_spam_finds_a_near_duplicate(store, clock):
    scorer = make_scorer(store, clock, bulk=False)
    assert run(scorer.score(ctx_of(variant(SPAM_BODY)))) == []
    run(scorer.learn(ctx_of(SPAM_BODY), "spam", source="report"))
    found = symbols(run(scorer.score(ctx_of(variant(SPAM_BODY), seed=5))))
    assert set(found) == {"FUZZY_SPAM"}
    assert 0.5 <= found["FUZZY_SPAM"] < 1.0  # near, not identical (words changed)
    assert run(scorer.score(ctx_of(HAM_BODY))) == []
    assert run(scorer.score(ctx_of(OTHER_BODY))) == []


def test_learned_ham_gives_fuzzy_ham(store, clock):
    scorer = make_scorer(store, clock, bulk=False)
    run(scorer.learn(ctx_of(HAM_BODY), "ham", source="train"))
    hits = run(scorer.score(ctx_of(HAM_BODY.replace("ten", "eleven"), seed=3)))
    assert [h.symbol for h in hits] == ["FUZZY_HAM"] and hits[0].value >= 0.5
    assert scorer.info.default_weights["FUZZY_HAM"] < 0


def test_later_opposite_label_replaces_but_autolearn_does_not_overturn_a_report(store, clock):
    scorer = make_scorer(store, clock, bulk=False)
    run(scorer.learn(ctx_of(SPAM_BODY), "spam", source="autolearn"))
    assert "FUZZY_SPAM" in symbols(run(scorer.score(ctx_of(SPAM_BODY, seed=1))))
    run(scorer.learn(ctx_of(SPAM_BODY), "ham", source="report"))
    assert set(symbols(run(scorer.score(ctx_of(SPAM_BODY, seed=2))))) == {"FUZZY_HAM"}
    run(scorer.learn(ctx_of(SPAM_BODY), "spam", source="autolearn"))
    assert set(symbols(run(scorer.score(ctx_of(SPAM_BODY, seed=3))))) == {"FUZZY_HAM"}
    run(scorer.learn(ctx_of(SPAM_BODY), "spam", source="report"))
    assert set(symbols(run(scorer.score(ctx_of(SPAM_BODY, seed=4))))) == {"FUZZY_SPAM"}


def test_learning_the_same_context_then_rescoring_it_sees_the_new_label(store, clock):
    scorer = make_scorer(store, clock, bulk=False)
    ctx = ctx_of(SPAM_BODY)
    assert run(scorer.score(ctx)) == []
    run(scorer.learn(ctx, "spam"))
    assert symbols(run(scorer.score(ctx))) == {"FUZZY_SPAM": 1.0}


def test_per_user_labels_are_not_stored(store, clock):
    scorer = make_scorer(store, clock, bulk=False)
    run(scorer.learn(ctx_of(SPAM_BODY), "spam", "alice@example.net", source="report"))
    assert run(scorer.score(ctx_of(SPAM_BODY, seed=1))) == []


def test_too_short_message_gives_nothing_and_learns_nothing(clock):
    store = CountingStore(MemoryStore(clock=clock))
    scorer = make_scorer(store, clock)
    short = ctx_of("Call me back tomorrow please.")
    run(scorer.learn(short, "spam"))
    assert run(scorer.score(short)) == [] and store.calls == []


def test_learned_fingerprints_expire(store, clock):
    scorer = make_scorer(store, clock, bulk=False, learn_ttl_days=2)
    run(scorer.learn(ctx_of(SPAM_BODY), "spam"))
    clock.now += 1.5 * 86400
    assert "FUZZY_SPAM" in symbols(run(scorer.score(ctx_of(SPAM_BODY, seed=1))))
    clock.now += 1.0 * 86400
    assert run(scorer.score(ctx_of(SPAM_BODY, seed=2))) == []


def bulk_value(scorer, body: str, rcpt: tuple[str, ...], seed: int) -> float:
    return symbols(run(scorer.score(ctx_of(body, rcpt=rcpt, seed=seed)))).get("FUZZY_BULK", 0.0)


def test_bulk_grows_with_distinct_recipients_not_repeats(store, clock):
    scorer = make_scorer(store, clock, bulk_min_recipients=1)
    values = [bulk_value(scorer, variant(SPAM_BODY) if i % 2 else SPAM_BODY, (f"user{i}@example.net",), i) for i in range(8)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[0] == pytest.approx(1.0, abs=0.01)  # log2(1 + 1)
    assert values[-1] == pytest.approx(math.log2(1 + 8), abs=0.1)
    again = [bulk_value(scorer, SPAM_BODY, ("user3@example.net",), 100 + i) for i in range(3)]
    assert again == [values[-1]] * 3
    assert bulk_value(scorer, OTHER_BODY, ("user1@example.net",), 200) == pytest.approx(1.0, abs=0.01)


def test_bulk_counts_a_multi_recipient_message_once_per_recipient(store, clock):
    scorer = make_scorer(store, clock, bulk_min_recipients=5)
    rcpt = tuple(f"u{i}@example.net" for i in range(6))
    assert bulk_value(scorer, SPAM_BODY, rcpt[:4], 1) == 0.0  # 4 < bulk_min_recipients
    value = bulk_value(scorer, variant(SPAM_BODY), rcpt, 2)
    assert value == pytest.approx(math.log2(1 + 6), abs=0.1)


def test_bulk_window_slides(store, clock):
    scorer = make_scorer(store, clock, bulk_min_recipients=1, bulk_window_hours=4, bulk_buckets=4)
    for i in range(5):
        bulk_value(scorer, SPAM_BODY, (f"a{i}@example.net",), i)
    assert bulk_value(scorer, SPAM_BODY, ("a0@example.net",), 10) == pytest.approx(math.log2(6), abs=0.1)
    clock.now += 5 * 3600
    assert bulk_value(scorer, SPAM_BODY, ("new@example.net",), 11) == pytest.approx(1.0, abs=0.01)


def test_per_recipient_scans_count_bulk_once_and_look_up_each_users_index(clock):
    store = CountingStore(MemoryStore(clock=clock))
    scorer = make_scorer(store, clock, bulk_min_recipients=1)
    rcpt = ("a@example.net", "b@example.net", "c@example.net")
    ctx = ctx_of(SPAM_BODY, rcpt=rcpt)

    async def scan_each():
        return await asyncio.gather(*(scorer.score(ctx.for_user(u)) for u in rcpt))

    results = run(scan_each())
    assert all(r == results[0] for r in results)
    assert symbols(results[0])["FUZZY_BULK"] == pytest.approx(2.0, abs=0.05)  # log2(1 + 3)
    assert [name for name, _, _ in store.calls].count("add_members") == 1  # bulk counted once
    # one lookup per recipient: each reads the global bands and that user's own index
    assert [name for name, _, _ in store.calls].count("get_members") == 3


def test_message_without_recipients_counts_once_by_digest(store, clock):
    scorer = make_scorer(store, clock, bulk_min_recipients=1)
    raw = message(SPAM_BODY, seed=1)
    v1 = symbols(run(scorer.score(MessageContext(raw))))["FUZZY_BULK"]
    v2 = symbols(run(scorer.score(MessageContext(raw))))["FUZZY_BULK"]
    v3 = symbols(run(scorer.score(MessageContext(message(SPAM_BODY, seed=2)))))["FUZZY_BULK"]
    assert v1 == v2 < v3


def test_a_lookup_is_two_round_trips_at_most_and_bounded(clock):
    store = CountingStore(MemoryStore(clock=clock))
    scorer = make_scorer(store, clock, max_candidates=4, max_band_members=3)
    base = SPAM_BODY.split()
    band_keys = set()
    for i in range(12):  # many learned near-duplicates: every band set could grow
        learned = ctx_of(" ".join(mutate(base, 2, seed=i)), seed=i)
        run(scorer.learn(learned, "spam"))
        band_keys.update(f"fz:b:{b}" for b in scorer.fingerprint(learned).bands)
    members = run(store.inner.get_members(sorted(band_keys)))
    assert members and max(len(m) for m in members.values()) == 3
    store.reset()
    payload = bytes(range(256)) * 4
    hits = run(scorer.score(ctx_of(SPAM_BODY, rcpt=("a@example.net",), attachments=[("x.bin", payload)], seed=50)))
    assert "FUZZY_SPAM" in symbols(hits)
    assert store.rounds() == 2  # bands + bulk + attachments (+ the bulk write), then records
    first = {name for name, _, r in store.calls if r == 0}
    assert first == {"get_members", "get_many", "add_members"}
    records = [size for name, size, r in store.calls if r > 0]
    assert records and max(records) <= 4


def test_an_unseen_message_costs_one_round_trip(clock):
    store = CountingStore(MemoryStore(clock=clock))
    scorer = make_scorer(store, clock)
    assert run(scorer.score(ctx_of(OTHER_BODY, rcpt=("a@example.net",)))) == []
    assert store.rounds() == 1 and {n for n, _, _ in store.calls} == {"get_members", "add_members"}


def test_attachments_learned_by_digest(store, clock):
    scorer = make_scorer(store, clock, bulk=False)
    payload = bytes(random.Random(1).getrandbits(8) for _ in range(2000))
    tiny = b"GIF89a" + b"\0" * 20
    run(scorer.learn(ctx_of("short text", attachments=[("invoice.zip", payload), ("spacer.gif", tiny)]), "spam"))
    hits = symbols(run(scorer.score(ctx_of("other words entirely", attachments=[("renamed.zip", payload)], seed=3))))
    assert hits == {"ATTACH_SPAM": 1.0}
    assert run(scorer.score(ctx_of("x", attachments=[("spacer.gif", tiny)], seed=4))) == []  # too small to trust
    assert run(scorer.score(ctx_of("x", attachments=[("a.zip", payload[:-1] + b"!")], seed=5))) == []
    run(scorer.learn(ctx_of("short text", attachments=[("invoice.zip", payload)]), "ham"))
    assert symbols(run(scorer.score(ctx_of("y", attachments=[("b.zip", payload)], seed=6)))) == {"ATTACH_HAM": 1.0}


class BrokenStore(MemoryStore):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    async def get_members(self, keys):
        raise self.exc


@pytest.mark.parametrize("exc", [StoreError("down"), RuntimeError("bug in a store")])
def test_store_failures_surface_as_store_error(exc):
    scorer = FingerprintScorer(BrokenStore(exc))
    with pytest.raises(StoreError):
        run(scorer.score(ctx_of(SPAM_BODY)))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00garbage\r\n\r\n\x00\x01",
        b"Subject: x\r\nContent-Type: text/html\r\n\r\n" + b"<a href='http://[::1'>" * 2000,
        b"Subject: y\r\n\r\n" + b"http://" * 50_000,
        b"Subject: z\r\n\r\n" + ("\u6f22\u5b57 " * 20_000).encode(),
        b"Subject: w\r\n\r\n" + b"a@" * 100_000,
    ],
)
def test_malformed_input_gives_no_exception(raw, clock):
    scorer = make_scorer(MemoryStore(clock=clock), clock)
    ctx = MessageContext(raw)
    hits = run(scorer.score(ctx))
    assert isinstance(hits, list)
    run(scorer.learn(ctx, "spam"))


def test_config_is_validated():
    services = Services(Config(store=StoreConfig(backend="memory")), MemoryStore(), None)
    scorer = FingerprintScorer.from_config({"min_similarity": 0.8, "bulk": False, "learn_ttl_days": 7}, services)
    assert scorer.settings.min_similarity == 0.8 and scorer.settings.bulk is False and scorer.learn_ttl == 7 * 86400
    for bad in (
        {"nope": 1},
        {"min_similarity": 1.5},
        {"min_words": True},
        {"bulk_slots": 4096},
        {"bulk": "yes"},
        {"bulk_time": "later"},
        {"max_words": 10, "min_words": 20},
    ):
        with pytest.raises(ConfigError):
            FingerprintScorer.from_config(bad, services)


def test_symbols_declared_and_scanner_learns_through_it(tmp_path, clock):
    store = MemoryStore(clock=clock)
    scorer = make_scorer(store, clock, bulk=False)
    assert set(scorer.info.symbols) == {"FUZZY_SPAM", "FUZZY_HAM", "FUZZY_BULK", "ATTACH_SPAM", "ATTACH_HAM"}
    assert scorer.info.learns and scorer.info.group == "fingerprint"
    with Scanner(Config(store=StoreConfig(backend="memory")), store=store, scorers=[scorer]) as scanner:
        assert scanner.learn_sync(message(SPAM_BODY), "spam", source="report")
        result = scanner.scan_sync(message(variant(SPAM_BODY), seed=9))
    assert [c.symbol for c in result.contributions] == ["FUZZY_SPAM"] and result.score > 0


def test_unexpected_errors_in_fingerprinting_are_ours(monkeypatch, clock):
    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(fp, "signature_of_text", broken)
    scorer = make_scorer(MemoryStore(clock=clock), clock)
    with pytest.raises(ScorerError):
        run(scorer.score(ctx_of(SPAM_BODY)))


def test_a_users_report_is_their_own_until_others_agree(clock):
    """A user's spam report marks the campaign for that user at once, not for anyone else."""
    store = MemoryStore(clock=clock)
    scorer = make_scorer(store, clock)
    reported = ctx_of(SPAM_BODY, rcpt=("ann@example.net",))
    run(scorer.learn(reported.for_user("ann@example.net"), "spam", "ann@example.net", source="report"))
    copy = ctx_of(variant(SPAM_BODY), rcpt=("ann@example.net", "bob@example.net"))
    mine = symbols(run(scorer.score(copy.for_user("ann@example.net"))))
    theirs = symbols(run(scorer.score(copy.for_user("bob@example.net"))))
    assert mine.get("FUZZY_SPAM", 0) > 0.5 and "FUZZY_SPAM" not in theirs
    # autolearn for a user is not a report: nothing is stored for them
    run(scorer.learn(reported.for_user("cat@example.net"), "spam", "cat@example.net", source="autolearn"))
    assert "FUZZY_SPAM" not in symbols(run(scorer.score(copy.for_user("cat@example.net"))))
    # learned globally (as the scanner does once enough users agree): everyone
    run(scorer.learn(reported, "spam", None, source="report"))
    assert symbols(run(scorer.score(ctx_of(variant(SPAM_BODY)).for_user("bob@example.net")))).get("FUZZY_SPAM", 0) > 0.5
