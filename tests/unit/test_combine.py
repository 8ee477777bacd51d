"""Combiner: logistic regression over symbol values, group caps, explanation, persistence."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mailguard.combine import Combiner, sigmoid
from mailguard.result import Hit
from mailguard.scorer import ScorerInfo

SYMBOLS = ["BAYES", "HAM_SIGNAL", "NOISE", "SPAM_RULE"]


def synthetic(n: int = 400, seed: int = 7):
    """SPAM_RULE fires mostly on spam, HAM_SIGNAL mostly on ham, NOISE on either; BAYES is a real value."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = []
    for label in y:
        row = {}
        if rng.random() < (0.85 if label else 0.1):
            row["SPAM_RULE"] = 1.0
        if rng.random() < (0.1 if label else 0.8):
            row["HAM_SIGNAL"] = 1.0
        if rng.random() < 0.5:
            row["NOISE"] = 1.0
        row["BAYES"] = float(rng.normal(2.0 if label else -2.0, 1.5))
        X.append(row)
    return X, y


def matrix(X):
    return np.array([[row.get(s, 0.0) for s in SYMBOLS] for row in X])


def info(group: str, weights: dict[str, float], *, learns: bool = False) -> ScorerInfo:
    return ScorerInfo(group=group, symbols={s: s for s in weights}, default_weights=weights, learns=learns)


def test_sigmoid():
    assert sigmoid(0.0) == 0.5
    for x in (0.3, 2.0, 9.0):
        assert sigmoid(x) == pytest.approx(1 - sigmoid(-x))
        assert sigmoid(x) == pytest.approx(1 / (1 + math.exp(-x)))
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0


def test_fit_learns_signed_weights():
    X, y = synthetic()
    combiner = Combiner(C=1.0).fit(X, y)
    assert combiner.symbols_ == SYMBOLS
    assert combiner.weights_["SPAM_RULE"] > 0
    assert combiner.weights_["BAYES"] > 0
    assert combiner.weights_["HAM_SIGNAL"] < 0
    assert abs(combiner.weights_["NOISE"]) < abs(combiner.weights_["SPAM_RULE"])


def test_predict_proba_matches_sklearn():
    X, y = synthetic()
    combiner = Combiner(C=0.5).fit(X, y)
    proba = combiner.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    reference = LogisticRegression(C=0.5, max_iter=1000).fit(matrix(X), y)
    np.testing.assert_allclose(proba, reference.predict_proba(matrix(X)), atol=1e-6)
    np.testing.assert_allclose(combiner.decision_function(X), reference.decision_function(matrix(X)), atol=1e-6)


def test_separates_the_training_data():
    X, y = synthetic()
    combiner = Combiner().fit(X, y)
    accuracy = ((combiner.predict_proba(X)[:, 1] > 0.5) == y).mean()
    assert accuracy > 0.9


def test_unknown_symbols_ignored_in_prediction():
    X, y = synthetic()
    combiner = Combiner().fit(X, y)
    base = combiner.decision_function([{"SPAM_RULE": 1.0}])
    assert combiner.decision_function([{"SPAM_RULE": 1.0, "NEVER_SEEN": 50.0}]) == pytest.approx(base)


def test_extreme_scores_no_overflow_warning():
    combiner = Combiner.from_dict({"C": 1.0, "group_caps": {}, "weights": {"A": 1.0}, "intercept": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proba = combiner.predict_proba([{"A": -5000.0}, {"A": 5000.0}])
    np.testing.assert_allclose(proba, [[1.0, 0.0], [0.0, 1.0]])


# -- combine (scan time) ------------------------------------------------------------------


def test_combine_default_weights_and_explanations():
    combiner = Combiner()
    rules = info("rules", {"R1": 2.0, "R2": -0.5})
    score, contributions = combiner.combine([("rules", rules, [Hit("R1", 1.0, "why R1"), Hit("R2", 2.0)])])
    assert score == pytest.approx(2.0 * 1.0 + -0.5 * 2.0)
    assert [(c.symbol, c.points) for c in contributions] == [("R1", 2.0), ("R2", -1.0)]
    assert contributions[0].reason == "why R1" and contributions[0].scorer == "rules"
    assert contributions[1].weight == -0.5 and contributions[1].value == 2.0


def test_combine_agrees_with_decision_function():
    X, y = synthetic()
    combiner = Combiner().fit(X, y)
    row = {"SPAM_RULE": 1.0, "BAYES": 3.2, "NOISE": 1.0}
    bayes = info("bayes", {"BAYES": 1.0}, learns=True)
    rules = info("rules", {"SPAM_RULE": 1.0, "NOISE": 1.0})
    score, contributions = combiner.combine(
        [("bayes", bayes, [Hit("BAYES", 3.2)]), ("rules", rules, [Hit("SPAM_RULE"), Hit("NOISE")])]
    )
    assert score == pytest.approx(float(combiner.decision_function([row])[0]))
    assert {c.symbol: c.weight for c in contributions} == {s: combiner.weights_[s] for s in row}


def test_contributions_sorted_by_effect():
    combiner = Combiner()
    rules = info("rules", {"A": 0.5, "B": -3.0, "C": 1.0})
    _, contributions = combiner.combine([("rules", rules, [Hit("A"), Hit("B"), Hit("C")])])
    assert [c.symbol for c in contributions] == ["B", "C", "A"]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_group_cap_limits_group_total(sign):
    combiner = Combiner(group_caps={"rules": 4.0})
    rules = info("rules", {"A": 3.0 * sign, "B": 2.0 * sign, "C": 1.0 * sign})
    other = info("other", {"O": 5.0 * sign})
    score, contributions = combiner.combine(
        [("rules", rules, [Hit("A"), Hit("B"), Hit("C")]), ("other", other, [Hit("O")])]
    )
    group_total = sum(c.points for c in contributions if c.scorer == "rules")
    assert group_total == pytest.approx(4.0 * sign)
    assert [c.points for c in contributions if c.scorer == "other"] == [5.0 * sign]  # uncapped group
    assert score == pytest.approx(9.0 * sign)
    points = {c.symbol: c.points for c in contributions}
    assert points["A"] / points["C"] == pytest.approx(3.0)  # scaled in proportion


def test_group_under_cap_untouched():
    combiner = Combiner(group_caps={"rules": 10.0})
    rules = info("rules", {"A": 3.0})
    score, _ = combiner.combine([("rules", rules, [Hit("A")])])
    assert score == 3.0


def test_skip_learning_leaves_out_learning_scorers():
    combiner = Combiner()
    bayes = info("bayes", {"BAYES": 1.0}, learns=True)
    rules = info("rules", {"R": 1.5})
    hits = [("bayes", bayes, [Hit("BAYES", 6.0)]), ("rules", rules, [Hit("R")])]
    full, full_contrib = combiner.combine(hits)
    without, contrib = combiner.combine(hits, skip_learning=True)
    assert {c.scorer for c in full_contrib} == {"bayes", "rules"}
    assert {c.scorer for c in contrib} == {"rules"}
    assert full - without == pytest.approx(6.0)


def test_to_dict_from_dict_round_trip():
    X, y = synthetic()
    combiner = Combiner(C=0.3, group_caps={"rules": 2.5}).fit(X, y)
    clone = Combiner.from_dict(json.loads(json.dumps(combiner.to_dict())))
    assert clone.C == combiner.C and clone.group_caps == combiner.group_caps
    assert clone.weights_ == combiner.weights_ and clone.intercept_ == combiner.intercept_
    np.testing.assert_array_equal(clone.predict_proba(X), combiner.predict_proba(X))
    rules = info("rules", {"SPAM_RULE": 1.0, "NOISE": 1.0, "HAM_SIGNAL": 1.0, "BAYES": 1.0})
    hits = [("rules", rules, [Hit("SPAM_RULE"), Hit("NOISE"), Hit("BAYES", 4.0)])]
    assert clone.combine(hits) == combiner.combine(hits)


def test_unfitted_combiner_round_trip():
    clone = Combiner.from_dict(Combiner(group_caps={"g": 1.0}).to_dict())
    rules = info("g", {"A": 0.7})
    assert clone.combine([("r", rules, [Hit("A")])])[0] == pytest.approx(0.7)


def test_directions_keep_each_symbol_on_its_declared_side():
    # SPAMMY is declared spam evidence but, in this data, rises with ham; INFO has no direction
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    X = [{"BAYES": (2.0 if label else -2.0) + rng.normal(), "SPAMMY": float(1 - label), "INFO": float(label)} for label in y]
    free = Combiner().fit(X, y)
    assert free.weights_["SPAMMY"] < 0 and free.weights_["INFO"] > 0  # what the data alone says
    bounded = Combiner(directions={"BAYES": 1.0, "SPAMMY": 1.0, "INFO": 0.0}).fit(X, y)
    assert bounded.weights_["SPAMMY"] == 0.0 and bounded.weights_["INFO"] == 0.0
    assert bounded.weights_["BAYES"] > 0.5
    assert np.mean((bounded.decision_function(X) > 0) == y) > 0.9
    clone = Combiner.from_dict(bounded.to_dict())
    assert clone.directions == {"BAYES": 1.0, "SPAMMY": 1.0, "INFO": 0.0}
    assert np.allclose(clone.decision_function(X), bounded.decision_function(X))


def test_bounded_fit_matches_scikit_learn_when_no_bound_binds():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    X = [{"A": (1.5 if label else -1.5) + rng.normal(), "B": rng.normal()} for label in y]
    free = Combiner(C=0.7).fit(X, y)
    bounded = Combiner(C=0.7, directions={"A": 1.0, "B": 1.0 if free.weights_["B"] > 0 else -1.0}).fit(X, y)
    for symbol in ("A", "B"):
        assert bounded.weights_[symbol] == pytest.approx(free.weights_[symbol], abs=1e-2)  # solver tolerances differ
    assert bounded.intercept_ == pytest.approx(free.intercept_, abs=1e-2)
