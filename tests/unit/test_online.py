"""The online text classifier and its features: hashing, learning one message at a time, the
user's half of the table, updates that cross the store, and artifacts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mailguard.classifier.features import SCRIPTS, TextFeatures, bucket_of, byte_grams, gram_bytes, script_mix, text_features, user_salt
from mailguard.classifier.online import OnlineClassifier, Update
from mailguard.message import MessageContext

from ..conftest import HAM_WORDS, SPAM_WORDS, make_message, synthetic_corpus

BITS = 16


def corpus(n: int = 60) -> tuple[list[TextFeatures], np.ndarray]:
    raws, y = synthetic_corpus(n)
    return [text_features(MessageContext(r)) for r in raws], y


def test_byte_grams_spell_each_4_gram_as_a_big_endian_number():
    raw = bytes(range(256)) * 3 + b"\xff\x00\x80\x7f"
    expected = sorted({raw[i : i + 4] for i in range(len(raw) - 3)})  # bytes order: big-endian numbers
    assert [gram_bytes(int(gram)) for gram in byte_grams(raw)] == expected


def test_byte_grams_are_the_distinct_overlapping_4_grams_of_the_head():
    grams = byte_grams(b"abcdabcdX", limit=8)  # "abcd", "bcda", "cdab", "dabc", then "abcd" again
    assert len(grams) == 4
    assert len(byte_grams(b"abc")) == 0
    assert np.array_equal(byte_grams(b"abcdefgh" + b"z" * 100, limit=8), byte_grams(b"abcdefgh"))


def test_chinese_text_gives_grams_without_word_segmentation():
    raw = "Subject: 会议通知\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n明天下午三点开会，请准时参加。\r\n".encode()
    features = text_features(MessageContext(raw))
    assert len(features.grams) > 40


def test_global_and_user_copies_use_separate_halves_of_the_table():
    ids = np.arange(1, 5000, dtype=np.uint64) * np.uint64(0x1F3D5B79)
    mine = bucket_of(ids, BITS, user_salt("bob@example.org"))
    theirs = bucket_of(ids, BITS, user_salt("carol@example.org"))
    everyone = bucket_of(ids, BITS)
    half = 1 << (BITS - 1)
    assert everyone.max() < half <= mine.min() and theirs.min() >= half and mine.max() < 2 * half
    assert not np.array_equal(mine, theirs)
    assert np.array_equal(bucket_of(ids, BITS, user_salt("bob@example.org")), mine)  # stable


def test_learns_the_synthetic_corpus_online():
    X, y = corpus(80)
    model = OnlineClassifier(bits=BITS).fit(X[:60], y[:60])
    scores = model.decision_function(X[60:])
    assert roc_auc_score(y[60:], scores) == 1.0
    assert model.predict(X[60:]).tolist() == y[60:].tolist()
    proba = model.predict_proba(X[60:])
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_fit_is_the_online_update_run_over_the_corpus():
    X, y = corpus(30)
    fitted = OnlineClassifier(bits=BITS, passes=1, fit_learning_rate=0.005).fit(X, y)  # the online rate
    online = OnlineClassifier(bits=BITS, learning_rate=0.005, settled_script=0)  # plain steps
    for x, label in zip(X, y):
        online.partial_fit([x], [label])
    np.testing.assert_array_equal(fitted.weights_, online.weights_)
    np.testing.assert_array_equal(fitted.spam_, online.spam_)
    assert fitted.totals_ == online.totals_ == {0: [15.0, 15.0]}


def test_more_passes_move_the_weights_not_the_counts():
    X, y = corpus(30)
    one = OnlineClassifier(bits=BITS, passes=1).fit(X, y)
    three = OnlineClassifier(bits=BITS, passes=3).fit(X, y)
    np.testing.assert_array_equal(one.spam_, three.spam_)
    assert not np.array_equal(one.weights_, three.weights_)


def test_the_passes_after_the_first_are_averaged_over_shuffled_orders():
    X, y = corpus(30)
    singles = [OnlineClassifier(bits=BITS, orders=1, seed=seed).fit(X, y) for seed in (7, 8, 9)]
    averaged = OnlineClassifier(bits=BITS, orders=3, seed=7).fit(X, y)
    assert not np.array_equal(singles[0].weights_, singles[1].weights_)  # the orders differ
    expected = np.mean([m.weights_.astype(np.float64) for m in singles], axis=0)
    np.testing.assert_allclose(averaged.weights_, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(averaged.spam_, singles[0].spam_)  # counted once, in the first pass
    np.testing.assert_array_equal(averaged.ham_, singles[0].ham_)
    assert averaged.totals_ == singles[0].totals_
    one_pass = OnlineClassifier(bits=BITS, passes=1, orders=3).fit(X, y)  # nothing to shuffle
    np.testing.assert_array_equal(one_pass.weights_, OnlineClassifier(bits=BITS, passes=1, orders=1).fit(X, y).weights_)


def test_a_users_report_moves_that_users_mail_and_no_global_weight():
    X, y = corpus(60)
    model = OnlineClassifier(bits=BITS).fit(X, y)
    before = model.copy()
    mail = text_features(MessageContext(make_message(["quarterly", "synergy", "webinar"], subject="webinar", seed=5)))
    salt = user_salt("carol@example.net")
    start = model.score(mail, salt)[0]
    for _ in range(5):
        model.apply(model.learn_step(mail, 1, salt))
    assert model.score(mail, salt)[0] > start + 1.0
    assert model.score(mail, user_salt("dave@example.net"))[0] == model.score(mail)[0] == before.score(mail)[0]
    half = 1 << (BITS - 1)
    np.testing.assert_array_equal(model.weights_[:half], before.weights_[:half])
    assert model.totals_[salt] == [5.0, 0.0]


def test_update_round_trips_and_is_checked():
    X, y = corpus(10)
    model = OnlineClassifier(bits=BITS).fit(X, y)
    update = model.learn_step(X[0], 1, user_salt("bob@example.org"))
    back = Update.from_bytes(update.to_bytes(), model.size)
    assert (back.label, back.script, back.salt) == (update.label, update.script, update.salt) == (1, 1, update.salt)
    assert back.step == pytest.approx(update.step)
    np.testing.assert_allclose(back.values, update.values, rtol=1e-6)
    np.testing.assert_array_equal(back.weight_buckets, update.weight_buckets)
    np.testing.assert_array_equal(back.count_buckets, update.count_buckets)
    data = update.to_bytes()
    for bad in (data[:10], data[:-4], b"\x01" + data[1:], data[:2] + b"\x63" + data[3:]):  # old version, no such script
        with pytest.raises(ValueError):
            Update.from_bytes(bad, model.size)
    with pytest.raises(ValueError, match="outside"):
        Update.from_bytes(data, 16)  # a table too small for its buckets


def test_delta_blob_carries_what_a_copy_learned():
    X, y = corpus(20)
    base = OnlineClassifier(bits=BITS).fit(X, y)
    node = base.copy()
    for x, label in zip(X[:5], y[:5]):
        node.apply(node.learn_step(x, int(label), user_salt("bob@example.org")))
    other = base.copy()
    other.with_delta(base, node.delta_from(base))
    np.testing.assert_allclose(other.weights_, node.weights_, atol=1e-6)
    np.testing.assert_array_equal(other.spam_, node.spam_)
    assert other.totals_ == node.totals_


def test_arrays_round_trip_and_digest_names_the_state():
    X, y = corpus(20)
    model = OnlineClassifier(bits=BITS).fit(X, y)
    copy = OnlineClassifier.from_arrays(model.to_arrays(), model.get_params())
    np.testing.assert_array_equal(copy.decision_function(X), model.decision_function(X))
    assert copy.digest() == model.digest()
    copy.apply(copy.learn_step(X[0], 1))
    assert copy.digest() != model.digest()
    with pytest.raises(ValueError):
        OnlineClassifier().fit(X, np.full(len(X), 2))
    with pytest.raises(ValueError):
        OnlineClassifier().fit(X[:3], y)


def test_words_named_in_the_corpus_lean_the_right_way():
    X, y = corpus(60)
    model = OnlineClassifier(bits=BITS).fit(X, y)
    spam = text_features(MessageContext(make_message(SPAM_WORDS, subject="offer", seed=999)))
    ham = text_features(MessageContext(make_message(HAM_WORDS, subject="agenda", seed=998)))
    assert model.score(spam)[0] > 2 > -2 > model.score(ham)[0]


CHINESE_HAM = "Subject: 会议通知\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n明天下午三点在二楼会议室开会，讨论下季度的预算，请准时参加。\r\n".encode()


CHINESE_SPAM = [text_features(MessageContext(
    f"Subject: 发票{n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n代开发票，优惠多多，请联系{n}号。\r\n".encode()
)) for n in range(20)]


def chinese_only_in_spam() -> OnlineClassifier:
    """A model whose training saw Chinese only in spam (as the SpamAssassin corpus did)."""
    X, y = corpus(40)
    return OnlineClassifier(bits=BITS, min_script_ham=10).fit(X + CHINESE_SPAM, np.concatenate([y, np.ones(20, dtype=int)]))


def chinese_mail(sender: str, body: str, n: int = 0) -> TextFeatures:
    return text_features(MessageContext(
        f"From: {sender}\r\nSubject: 通知{n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}{n}\r\n".encode()
    ))


def test_training_leaves_out_mail_in_a_script_its_ham_does_not_cover():
    X, y = corpus(40)
    model = chinese_only_in_spam()
    english_only = OnlineClassifier(bits=BITS, min_script_ham=10).fit(X, y)
    np.testing.assert_array_equal(model.weights_, english_only.weights_)  # the Chinese spam taught nothing
    np.testing.assert_array_equal(model.spam_, english_only.spam_)
    assert model.totals_ == english_only.totals_
    ham = text_features(MessageContext(CHINESE_HAM))
    assert ham.script == SCRIPTS.index("han")
    assert model.trust(ham) == 0.0 and abs(model.score(ham)[0]) < 1  # the script is no spam evidence
    learned_anyway = OnlineClassifier(bits=BITS, min_script_ham=0).fit(X + CHINESE_SPAM, np.concatenate([y, np.ones(20, dtype=int)]))
    assert learned_anyway.score(ham)[0] > 1  # what it would be: the script itself taken for spam
    english = text_features(MessageContext(make_message(SPAM_WORDS, subject="offer", seed=4)))
    assert model.trust(english) == 1.0 and model.score(english)[0] > 2
    # a corpus too small to hold min_script_ham ham of anything still learns its own language
    small = OnlineClassifier(bits=BITS, min_script_ham=1000).fit(X, y)
    np.testing.assert_array_equal(small.weights_, OnlineClassifier(bits=BITS, min_script_ham=0).fit(X, y).weights_)


def test_mail_in_an_uncovered_script_keeps_what_it_shares_with_learned_mail():
    # English spam from one sender, ham from another; then Chinese mail from each: the
    # sender's evidence still counts, the script's does not
    raws = [make_message(SPAM_WORDS if i % 2 else HAM_WORDS, subject="offer" if i % 2 else "agenda",
                         sender="promo@pills.example" if i % 2 else "alice@example.org", seed=i) for i in range(40)]
    y = np.arange(40) % 2
    model = OnlineClassifier(bits=BITS, min_script_ham=10).fit([text_features(MessageContext(r)) for r in raws], y)
    spam = chinese_mail("promo@pills.example", "代开发票，优惠多多，请联系")
    ham = chinese_mail("wang@example.cn", "明天下午三点开会，请准时参加")
    assert model.trust(spam) == model.trust(ham) == 0.0
    assert model.score(spam)[0] > model.score(ham)[0] + 1


def test_a_model_trained_before_the_rule_multiplies_its_score_by_the_say():
    X, y = corpus(40)
    old = OnlineClassifier(bits=BITS, min_script_ham=10, leave_out_untrained=False)
    old.fit(X + CHINESE_SPAM, np.concatenate([y, np.ones(20, dtype=int)]))
    ham = text_features(MessageContext(CHINESE_HAM))
    assert old.trust(ham) == 0.0 and old.score(ham)[0] == 0.0  # no opinion, not spam
    params = {k: v for k, v in old.get_params().items() if k != "leave_out_untrained"}  # an older manifest
    assert OnlineClassifier.from_arrays(old.to_arrays(), params).leave_out_untrained is False


def test_a_users_reports_of_a_script_make_it_learned_for_that_user():
    model = chinese_only_in_spam()
    ham = text_features(MessageContext(CHINESE_HAM))
    salt = user_salt("li@example.cn")
    shipped = model.copy()
    for _ in range(5):  # one user's Chinese ham reports: that user's mail is half learned
        model.apply(model.learn_step(ham, 0, salt))
    assert model.trust(ham, salt) == 0.5 and model.trust(ham) == 0.0
    copy = OnlineClassifier.from_arrays(model.to_arrays(), model.get_params())
    assert copy.trust(ham, salt) == 0.5
    other_node = shipped.copy()
    other_node.with_delta(shipped, model.delta_from(shipped))  # a snapshot carries it to other nodes
    assert other_node.trust(ham, salt) == 0.5 and shipped.trust(ham, salt) == 0.0


def test_a_site_that_learns_a_scripts_mail_online_gets_the_say_back():
    X, y = corpus(40)
    model = OnlineClassifier(bits=BITS, min_script_ham=10).fit(X, y)
    spam = [text_features(MessageContext(
        f"Subject: 发票{n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n代开发票，优惠多多，请联系{n}号。\r\n".encode()
    )) for n in range(12)]
    assert model.trust(spam[0]) == 0.0
    for x in spam[:10]:  # an English site whose users report Chinese spam, and nothing else of it
        model.apply(model.learn_step(x, 1))
    assert model.trust(spam[11]) == 1.0 and model.score(spam[11])[0] > 0
    trained = OnlineClassifier(bits=BITS, min_script_ham=10).fit(X + spam, np.concatenate([y, np.ones(12, dtype=int)]))
    assert trained.trust(spam[0]) == 0.0  # training spam alone is not the site's experience


def test_normalised_features_make_a_steps_effect_independent_of_message_length():
    short = text_features(MessageContext(b"Subject: offer\r\n\r\ncheap pills now\r\n"))
    long = text_features(MessageContext(make_message(SPAM_WORDS, subject="offer", seed=2)))
    n_short, n_long = (len(f.buckets(BITS)[1]) for f in (short, long))
    assert n_long > 5 * n_short
    for normalise in (True, False):
        margins = []
        for features in (short, long):
            model = OnlineClassifier(bits=BITS, learning_rate=2.0, normalise=normalise, nb_values=False, settled_script=0)
            model.partial_fit([features], [1])
            margins.append(model.score(features)[1])  # from zero weights, one step of 2.0 * (1 - 0.5)
        if normalise:
            assert margins == pytest.approx([1.0, 1.0])  # unit-length vectors: the same move, whatever the length
        else:
            assert margins == pytest.approx([n_short, n_long])  # each binary feature moved by the whole step


def test_a_model_saved_before_normalised_features_loads_with_what_it_was_fitted_with():
    raws, y = synthetic_corpus(30)
    X = [text_features(MessageContext(r), 3000) for r in raws]
    old = OnlineClassifier(bits=BITS, normalise=False, nb_values=False, gram_window=3000).fit(X, y)
    newer = ("normalise", "nb_values", "gram_window", "settled_script", "max_step_boost", "orders")
    params = {k: v for k, v in old.get_params().items() if k not in newer}  # an older manifest
    loaded = OnlineClassifier.from_arrays(old.to_arrays(), params)
    assert (loaded.normalise, loaded.nb_values, loaded.gram_window, loaded.orders) == (False, False, 3000, 1)
    assert loaded.online_rate(X[0]) == loaded.learning_rate  # plain online steps, as it had
    np.testing.assert_allclose(loaded.decision_function(X), old.decision_function(X))
    with pytest.raises(ValueError, match="gram_window"):
        OnlineClassifier.from_arrays(old.to_arrays(), {**params, "gram_window": 1 << 30})
    for bad in ({"orders": 1000}, {"orders": 0}, {"passes": 10**6}):  # bounded, as bits are
        with pytest.raises(ValueError, match="orders"):
            OnlineClassifier.from_arrays(old.to_arrays(), {**params, **bad})


def test_a_scripts_share_of_the_text_is_counted_in_utf8_bytes():
    script, shares = script_mix("中文 abc")  # two characters of three bytes, three letters of one
    assert script == SCRIPTS.index("han")
    assert shares[SCRIPTS.index("han")] == pytest.approx(6 / 9) and shares[SCRIPTS.index("latin")] == pytest.approx(3 / 9)
    assert script_mix("1234 !!") == (0, ())


def test_mail_mixing_a_script_without_ham_with_english_gets_the_english_share_of_the_say():
    model = chinese_only_in_spam()
    mixed = text_features(MessageContext(
        "Subject: 招聘\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n美国公司招聘暑期实习生，请发简历。\r\n"
        "We are hiring summer interns in our Beijing office; please send your resume in English.\r\n".encode()
    ))
    latin, han = mixed.shares[SCRIPTS.index("latin")], mixed.shares[SCRIPTS.index("han")]
    assert mixed.script == SCRIPTS.index("latin") and 0.2 < han < 0.5 and latin + han == pytest.approx(1.0)
    assert model.trust(mixed) == pytest.approx(latin)  # no say on its Chinese share
    assert model.untrained_script(mixed) == (SCRIPTS.index("han"), pytest.approx(han))
    english = text_features(MessageContext(make_message(HAM_WORDS, subject="agenda", seed=6)))
    assert model.trust(english) == 1.0


def test_the_fisher_prior_is_lighter_on_text_the_model_has_no_say_on():
    # Chinese only in spam, and one ham with a header nothing else carries: a rare token
    X, y = corpus(40)
    project = b"X-Project: zebrafish quagga\r\n"
    rare = text_features(MessageContext(project + make_message(HAM_WORDS, subject="agenda", seed=77)))
    model = OnlineClassifier(bits=BITS, min_script_ham=10).fit(X + [rare] + CHINESE_SPAM, np.concatenate([y, [0], np.ones(20, dtype=int)]))
    params = model.get_params()
    assert model.robinson_s > model.robinson_s_untrained
    one_prior = {  # the same counts and weights read with a single prior strength
        s: OnlineClassifier.from_arrays(model.to_arrays(), {**params, "robinson_s": s, "robinson_s_untrained": s})
        for s in (model.robinson_s, model.robinson_s_untrained)
    }
    # learned words of both kinds, so the counts do not decide alone
    english = text_features(MessageContext(make_message(HAM_WORDS[:2] + SPAM_WORDS[:6], subject="note", seed=99)))
    ham = text_features(MessageContext(project + CHINESE_HAM))
    mixed = text_features(MessageContext(project + (
        "Subject: 招聘\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n美国公司招聘暑期实习生，请发简历。\r\n"
        "We are hiring summer interns in our office; please send your resume with your offer.\r\n"
    ).encode()))
    assert model.trust(english) == 1.0 and model.trust(ham) == 0.0 and 0.0 < model.trust(mixed) < 1.0
    strong, light = (one_prior[s].score(english)[0] for s in (model.robinson_s, model.robinson_s_untrained))
    assert model.score(english)[0] == strong != light  # learned text: the stronger prior
    strong, light = (one_prior[s].score(ham)[0] for s in (model.robinson_s, model.robinson_s_untrained))
    assert model.score(ham)[0] == light < strong  # no say on its script: its one rare ham token counts more
    scores = [one_prior[s].score(mixed)[0] for s in (model.robinson_s, model.robinson_s_untrained)]
    assert min(scores) < model.score(mixed)[0] < max(scores)  # in between, by the untrusted share


def test_a_model_saved_before_the_untrained_prior_reads_with_its_one_prior():
    model = chinese_only_in_spam()
    params = {k: v for k, v in model.get_params().items() if k != "robinson_s_untrained"}  # an older manifest
    loaded = OnlineClassifier.from_arrays(model.to_arrays(), {**params, "robinson_s": 0.0178})
    assert loaded.robinson_s_untrained == loaded.robinson_s == 0.0178


def test_online_steps_are_larger_on_a_script_the_model_has_learned_little_of():
    model = chinese_only_in_spam()  # 20 English ham learned in training, no Chinese ham
    model.settled_script, model.max_step_boost = 80.0, 3.0
    english = text_features(MessageContext(make_message(HAM_WORDS, subject="agenda", seed=6)))
    chinese = text_features(MessageContext(CHINESE_HAM))
    assert model.online_rate(english) == pytest.approx(model.learning_rate * 2.0)  # sqrt(80 / 20)
    assert model.online_rate(chinese) == pytest.approx(model.learning_rate * 3.0)  # none learned: the cap
    for _ in range(20):
        model.apply(model.learn_step(chinese, 0))
    assert model.online_rate(chinese) == pytest.approx(model.learning_rate * 80 ** 0.5 / 40 ** 0.5)  # 20 ham + 20 online
    z = model.score(chinese)[1]
    expected = model.online_rate(chinese) * (1.0 - 1.0 / (1.0 + math.exp(-z)))
    assert model.learn_step(chinese, 1).step == pytest.approx(expected)  # the step a spam report takes
    model.settled_script = 0.0
    assert model.online_rate(chinese) == model.learning_rate  # off: plain steps


def test_a_script_is_settled_once_the_model_learned_enough_of_it():
    X, y = corpus(40)
    model = OnlineClassifier(bits=BITS, settled_script=1000.0).fit(X, y)
    latin = X[0]
    assert SCRIPTS[latin.script] == "latin" and not model.settled(latin)
    model.settled_script = float(model.ham_scripts_[0][latin.script])  # exactly the ham it learned
    assert model.settled(latin)
    no_text = TextFeatures(latin.tokens, latin.grams)  # script 0: nothing to settle
    assert OnlineClassifier(bits=BITS).settled(no_text)
    model.settled_script = 0.0  # the threshold off: always settled
    assert model.settled(X[1])


def test_a_tokens_value_is_its_log_count_ratio_and_each_vector_has_unit_length():
    X, y = corpus(60)
    model = OnlineClassifier(bits=BITS).fit(X, y)
    tokens, every = X[0].buckets(BITS)
    spam, ham, n_spam, n_ham = model.token_counts(tokens, tokens[:0], 0)
    values, _, scale = model.feature_values(every, X[0].slots(BITS), (spam, ham, n_spam, n_ham))
    assert float(values @ values) * scale**2 == pytest.approx(1.0)
    grams = np.setdiff1d(every, tokens)  # buckets of 4-grams alone
    assert len(grams) and (values[np.searchsorted(every, grams)] == 1.0).all()
    ratio = np.abs(np.log((spam + 1) / (n_spam + 2)) - np.log((ham + 1) / (n_ham + 2)))
    positions = np.searchsorted(every, tokens)
    alone = np.bincount(positions)[positions] == 1  # no other token in its bucket
    np.testing.assert_allclose(values[positions][alone], ratio[alone])
    assert ratio.max() > 1.0 > ratio.min()  # words of one class and words of both
    np.testing.assert_allclose(model.token_values((spam, ham, n_spam, n_ham)), ratio)


def test_a_step_moves_the_margin_by_its_size_with_token_values():
    X, y = corpus(60)
    model = OnlineClassifier(bits=BITS, settled_script=0).fit(X, y)
    mail = text_features(MessageContext(make_message(SPAM_WORDS, subject="offer", seed=99)))
    z = model.score(mail)[1]
    update = model.learn_step(mail, 1, count=False)  # counts unchanged: the same values before and after
    model.apply(update)
    assert model.score(mail)[1] == pytest.approx(z + update.step, rel=1e-4)  # unit length: |v|^2 = 1
    assert update.step == pytest.approx(model.learning_rate * (1.0 - 1.0 / (1.0 + math.exp(-z))))


def test_an_update_written_before_token_values_applies_its_step_to_every_bucket():
    X, y = corpus(10)
    model = OnlineClassifier(bits=BITS).fit(X, y)
    old = Update(1, 1, 0.25, 0, np.array([3, 7]), np.array([3]))
    data = bytearray(old.to_bytes()[: -4 * 2])  # an update of version 2 held no values
    data[0] = 2
    back = Update.from_bytes(bytes(data), model.size)
    assert back.values is None
    before = model.weights_[[3, 7]].copy()
    model.apply(back)
    np.testing.assert_allclose(model.weights_[[3, 7]], before + 0.25)
