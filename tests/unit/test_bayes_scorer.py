"""The bayes scorer's shared online state: what one node learns, the next scan on another node
sees; snapshots and trimming keep the log short; a bad entry or a dead store costs the
update, never the scan."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from mailguard.errors import StoreError
from mailguard.message import MessageContext
from mailguard.classifier import online
from mailguard.classifier.features import bucket_of, named_tokens, text_features
from mailguard.classifier.online import OnlineClassifier, pack_delta
from mailguard.scorers.bayes import BayesScorer
from mailguard.stores import MemoryStore, SqliteStore

from ..conftest import HAM_WORDS, SPAM_WORDS, make_message, synthetic_corpus


def run(coro):
    return asyncio.run(coro)


def value(scorer: BayesScorer, raw: bytes, user: str | None = None) -> float:
    ctx = MessageContext(raw)
    ctx.user = user
    return run(scorer.score(ctx))[0].value


WEBINAR = make_message(["quarterly", "synergy", "webinar", "invite"], subject="webinar", seed=12)


def test_what_one_node_learns_the_next_scan_on_another_node_sees(tiny_model, tmp_path):
    a = BayesScorer(tiny_model.bayes, SqliteStore(tmp_path / "s.sqlite3"))
    b = BayesScorer(tiny_model.bayes, SqliteStore(tmp_path / "s.sqlite3"))
    before = value(b, WEBINAR)
    for n in range(3):
        run(a.learn(MessageContext(make_message(["quarterly", "synergy", "webinar", "invite"], subject="webinar", seed=40 + n)), "spam"))
    assert value(b, WEBINAR) > before + 0.5
    assert value(b, WEBINAR) == pytest.approx(value(a, WEBINAR))
    assert tiny_model.bayes.totals_[0] == [20.0, 20.0]  # the loaded model itself never changes


def test_a_users_report_moves_only_that_users_mail(tiny_model):
    store = MemoryStore()
    node = BayesScorer(tiny_model.bayes, store)
    before = value(node, WEBINAR, "carol@example.net")
    run(node.learn(MessageContext(WEBINAR), "spam", user="Carol@Example.net"))
    assert value(node, WEBINAR, "carol@example.net") > before
    assert value(node, WEBINAR, "dave@example.net") == pytest.approx(before)
    assert value(node, WEBINAR) == pytest.approx(before)


def test_snapshots_trim_the_log_and_a_new_node_starts_from_them(tiny_model, tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite3")
    a = BayesScorer(tiny_model.bayes, store, compact_every=10, train="everything")
    for n in range(25):
        words = SPAM_WORDS if n % 2 else HAM_WORDS
        run(a.learn(MessageContext(make_message(words, subject="x", seed=100 + n)), "spam" if n % 2 else "ham"))
    last, kept = run(store.read_log(a.log_name, 0))
    assert last == 25 and [n for n, _ in kept] == list(range(21, 26))  # 1-20 folded into the snapshot
    assert run(store.get(a.snapshot_key)) is not None
    fresh = BayesScorer(tiny_model.bayes, SqliteStore(tmp_path / "s.sqlite3"))
    for n in range(5):
        raw = make_message(SPAM_WORDS + HAM_WORDS, subject="mixed", seed=300 + n)
        assert value(fresh, raw) == pytest.approx(value(a, raw), abs=1e-4)
    assert fresh.cursor == 25


def test_scans_go_on_while_a_snapshot_is_compressed(tiny_model, monkeypatch):
    """Packing a snapshot took up to 2.5 s once much of the table was learned; it runs in a
    thread, outside the lock scans take. The stand-in compressor waits until a scan has been
    answered: on the event loop, or under the lock, it would wait in vain and fail."""
    store = MemoryStore()
    node = BayesScorer(tiny_model.bayes, store, compact_every=10, train="everything")
    compressing, scanned = threading.Event(), threading.Event()

    def pack_after_a_scan(arrays):
        compressing.set()
        if not scanned.wait(60):  # a bound reached only on failure
            raise AssertionError("no scan was answered while the snapshot was compressed")
        return pack_delta(arrays)

    monkeypatch.setattr(online, "pack_delta", pack_after_a_scan)

    async def scenario() -> list:
        for n in range(9):
            await node.learn(MessageContext(make_message(SPAM_WORDS, subject="offer", seed=700 + n)), "spam")
        tenth = asyncio.create_task(node.learn(MessageContext(make_message(HAM_WORDS, subject="notes", seed=710)), "ham"))
        await asyncio.to_thread(compressing.wait, 60)
        hits = await node.score(MessageContext(WEBINAR))
        scanned.set()
        await tenth
        return hits

    hits = run(scenario())
    assert hits[0].symbol == "BAYES" and node.cursor == 10
    last, kept = run(store.read_log(node.log_name, 0))
    assert last == 10 and kept == []  # the snapshot was written and the log trimmed behind it
    fresh = BayesScorer(tiny_model.bayes, store)
    assert value(fresh, WEBINAR) == pytest.approx(value(node, WEBINAR), abs=1e-4)


def test_a_node_that_fell_behind_a_trim_reloads_the_snapshot(tiny_model):
    store = MemoryStore()
    behind = BayesScorer(tiny_model.bayes, store)
    value(behind, WEBINAR)  # in step at 0
    ahead = BayesScorer(tiny_model.bayes, store, compact_every=10, train="everything")
    for n in range(12):
        run(ahead.learn(MessageContext(make_message(SPAM_WORDS, subject="offer", seed=500 + n)), "spam"))
    assert value(behind, WEBINAR) == pytest.approx(value(ahead, WEBINAR), abs=1e-4)
    assert behind.cursor == 12


def test_a_bad_entry_costs_that_update_not_the_scan(tiny_model, caplog):
    store = MemoryStore()
    node = BayesScorer(tiny_model.bayes, store)
    run(store.append_log(node.log_name, b"not an update"))
    run(node.learn(MessageContext(WEBINAR), "spam"))
    assert node.cursor == 2 and "skipped" in caplog.text


def test_a_dead_store_leaves_the_scan_with_what_the_node_holds(tiny_model, tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite3")
    node = BayesScorer(tiny_model.bayes, store)
    before = value(node, WEBINAR)
    run(store.close())
    hit = run(node.score(MessageContext(WEBINAR)))[0]
    assert hit.value == pytest.approx(before) and "store unavailable" in hit.reason
    with pytest.raises(StoreError):
        run(node.learn(MessageContext(WEBINAR), "spam"))


def test_on_error_learns_only_what_it_got_wrong_or_nearly(tiny_model):
    store = MemoryStore()
    node = BayesScorer(tiny_model.bayes, store, train="on-error", margin=2.0)
    confident = make_message(SPAM_WORDS, subject="offer", seed=77)
    assert value(node, confident) > 2.0
    run(node.learn(MessageContext(confident), "spam"))
    assert run(store.read_log(node.log_name, 0)) == (0, [])  # right by a margin: nothing learned
    run(node.learn(MessageContext(confident), "ham"))  # wrong: learned
    assert run(store.read_log(node.log_name, 0))[0] == 1


def test_auto_learns_only_mistakes_on_a_script_it_is_not_settled_on(tiny_model):
    confident = make_message(SPAM_WORDS, subject="offer", seed=77)
    new_site = BayesScorer(tiny_model.bayes, MemoryStore())  # the default regime, auto
    assert new_site.train == "auto" and not tiny_model.bayes.settled(text_features(MessageContext(confident)))
    run(new_site.learn(MessageContext(confident), "spam"))
    assert run(new_site.store.read_log(new_site.log_name, 0)) == (0, [])  # right by a margin: not learned
    settled = tiny_model.bayes.copy()
    settled.settled_script = 20.0  # it learned 20 ham of Latin in training: settled
    node = BayesScorer(settled, MemoryStore())
    run(node.learn(MessageContext(confident), "spam"))
    assert run(node.store.read_log(node.log_name, 0))[0] == 1  # settled: everything is learned


def test_a_thick_threshold_waits_until_the_script_is_learned(tiny_model):
    # until a script is learned the score reads only what its mail shares with learned mail,
    # and a script becomes learned by what is learned of it: a new script's ham reports all count
    raw = "Subject: 会议通知\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n明天下午三点开会，请准时参加。\r\n".encode()
    for regime in ("auto", "on-error"):
        node = BayesScorer(tiny_model.bayes, MemoryStore(), train=regime)
        for n in range(int(tiny_model.bayes.min_script_ham)):
            run(node.learn(MessageContext(raw.replace("三".encode(), str(n).encode())), "ham", user="li@example.cn"))
        hits = {h.symbol: h for h in run(node.score(MessageContext(raw).for_user("li@example.cn")))}
        assert "BAYES_UNTRAINED_SCRIPT" not in hits, regime
        last, _ = run(node.store.read_log(node.log_name, 0))
        assert last == int(tiny_model.bayes.min_script_ham), regime


def test_explanation_names_the_strongest_tokens(tiny_model):
    hit = run(BayesScorer(tiny_model.bayes, MemoryStore()).score(MessageContext(make_message(SPAM_WORDS, subject="offer", seed=3))))[0]
    assert "tokens known; strongest:" in hit.reason
    assert any(word in hit.reason for word in SPAM_WORDS + ["offer"])


def test_explanation_weighs_each_named_token_as_the_margin_does(tiny_model):
    """A token's term is its weight times its log count ratio over the vector's length: the
    margin recomputed from the counts and weights alone, and the named tokens' shown terms."""
    model = tiny_model.bayes
    ctx = MessageContext(make_message(SPAM_WORDS, subject="offer", seed=3))
    reason = run(BayesScorer(model, MemoryStore()).score(ctx))[0].reason
    features = text_features(ctx, model.gram_window)
    tokens, every = features.buckets(model.bits)
    n_spam, n_ham = model.totals_[0]

    def ratio(bucket: int) -> float:
        return abs(math.log((model.spam_[bucket] + 1) / (n_spam + 2)) - math.log((model.ham_[bucket] + 1) / (n_ham + 2)))

    vector = {int(b): 1.0 for b in every} | {int(b): ratio(b) for b in tokens}
    norm = math.sqrt(sum(v * v for v in vector.values()))
    assert sum(float(model.weights_[b]) * v for b, v in vector.items()) / norm == pytest.approx(model.score(features)[1], rel=1e-5)
    names, ids = named_tokens(ctx)
    shown = [item.rsplit(" ", 1) for item in reason.split("strongest: ")[1].split(", ")]
    checked = 0
    for name, term in shown:
        if name in names:
            bucket = int(bucket_of(ids[names.index(name) : names.index(name) + 1], model.bits)[0])
            assert float(term) == pytest.approx(float(model.weights_[bucket]) * ratio(bucket) / norm, abs=0.006), name
            checked += 1
    assert checked


def test_a_users_explanation_weighs_their_own_copy_with_the_global_one(tiny_model):
    """For a user who reported such mail as ham, a named token's term is (global + their weight) times its
    value (global plus their counts) over the vector's length, as the margin takes it."""
    node = BayesScorer(tiny_model.bayes, MemoryStore(), train="everything")
    user = "carol@example.net"
    raw = make_message(SPAM_WORDS, subject="offer", seed=3)
    for n in range(3):
        run(node.learn(MessageContext(make_message(SPAM_WORDS, subject="offer", seed=10 + n)), "ham", user=user))
    ctx = MessageContext(raw).for_user(user)
    reason = run(node.score(ctx))[0].reason
    model, salt = node.model, node._salt(user)
    features = text_features(ctx, model.gram_window)
    tokens, every = features.buckets(model.bits)
    mine, mine_every = features.buckets(model.bits, salt)
    spam_total, ham_total = (a + b for a, b in zip(model.totals_[0], model.totals_[salt]))

    def ratio(i: int) -> float:
        spam = model.spam_[tokens[i]] + model.spam_[mine[i]]
        ham = model.ham_[tokens[i]] + model.ham_[mine[i]]
        return abs(math.log((spam + 1) / (spam_total + 2)) - math.log((ham + 1) / (ham_total + 2)))

    values = {int(b): 1.0 for b in every} | {int(tokens[i]): ratio(i) for i in range(len(tokens))}
    user_values = {int(b): 1.0 for b in mine_every} | {int(mine[i]): ratio(i) for i in range(len(mine))}
    norm = math.sqrt(sum(v * v for v in values.values()))
    names, ids = named_tokens(ctx)
    shown = [item.rsplit(" ", 1) for item in reason.split("strongest: ")[1].split(", ")]
    checked = 0
    for name, term in shown:
        if name in names:
            i = int(list(features.tokens).index(ids[names.index(name)]))
            weight = float(model.weights_[tokens[i]]) + float(model.weights_[mine[i]])
            assert values[int(tokens[i])] == user_values[int(mine[i])]
            assert float(term) == pytest.approx(weight * ratio(i) / norm, abs=0.006), name
            checked += 1
    assert checked


def test_mail_in_a_script_without_ham_is_explained_and_learned_by_reports(tiny_model):
    store = MemoryStore()
    node = BayesScorer(tiny_model.bayes, store)
    raw = "Subject: 会议通知\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n明天下午三点开会，请准时参加。\r\n".encode()
    ctx = MessageContext(raw)
    ctx.user = "li@example.cn"
    hits = {h.symbol: h for h in run(node.score(ctx))}
    assert abs(hits["BAYES"].value) < 1 and "han" in hits["BAYES_UNTRAINED_SCRIPT"].reason  # no opinion
    assert "what it shares with learned mail" in hits["BAYES_UNTRAINED_SCRIPT"].reason
    assert node.info.default_weights["BAYES_UNTRAINED_SCRIPT"] == 0.0
    for n in range(int(tiny_model.bayes.min_script_ham)):  # the user's ham reports make the script learned
        run(node.learn(MessageContext(raw.replace("三".encode(), str(n).encode())), "ham", user="li@example.cn"))
    hits = {h.symbol: h for h in run(node.score(ctx))}
    assert "BAYES_UNTRAINED_SCRIPT" not in hits and hits["BAYES"].value < 0


def test_the_scorer_reads_4_grams_over_its_models_own_window():
    from mailguard.classifier.features import text_features

    raws, y = synthetic_corpus(30)
    narrow = OnlineClassifier(bits=16, gram_window=200).fit([text_features(MessageContext(r), 200) for r in raws], y)
    raw = make_message(SPAM_WORDS, subject="offer", seed=7)
    expected = narrow.score(text_features(MessageContext(raw), 200))[0]
    assert expected != pytest.approx(narrow.score(text_features(MessageContext(raw)))[0])  # the window matters here
    assert value(BayesScorer(narrow, MemoryStore()), raw) == pytest.approx(expected)
