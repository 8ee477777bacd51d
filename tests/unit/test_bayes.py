"""BayesClassifier: scikit-learn conventions, counts checked against BernoulliNB, rules."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.naive_bayes import BernoulliNB

from mailguard.classifier.bayes import BayesClassifier


def random_docs(seed: int = 0, n: int = 200, vocab: int = 300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    docs = []
    for label in y:
        # spam draws from the top of the vocabulary more often
        weights = np.linspace(1, 3, vocab) if label else np.linspace(3, 1, vocab)
        ids = rng.choice(vocab, size=30, replace=True, p=weights / weights.sum())
        docs.append(np.unique(ids.astype(np.uint64)))
    return docs, y, vocab


def test_document_counts_match_sklearn_bernoulli_nb():
    docs, y, vocab = random_docs()
    ours = BayesClassifier().fit(docs, y)
    matrix = np.zeros((len(docs), vocab))
    for row, ids in enumerate(docs):
        matrix[row, ids.astype(int)] = 1
    nb = BernoulliNB().fit(matrix, y)
    spam, ham, _ = ours.lookup(np.arange(vocab, dtype=np.uint64))
    assert np.array_equal(spam, nb.feature_count_[1])
    assert np.array_equal(ham, nb.feature_count_[0])
    assert (ours.n_ham_, ours.n_spam_) == tuple(nb.class_count_.astype(int))


def test_partial_fit_equals_fit_on_everything():
    """partial_fit adds counts; with the regression off both paths must agree exactly."""
    docs, y, _ = random_docs(seed=1)
    whole = BayesClassifier(lr_C=0, fisher_weight=1.0).fit(docs, y)
    parts = BayesClassifier(lr_C=0, fisher_weight=1.0).partial_fit(docs[:50], y[:50]).partial_fit(docs[50:], y[50:])
    for name in ("vocab_", "spam_counts_", "ham_counts_"):
        assert np.array_equal(getattr(whole, name), getattr(parts, name))
    assert np.allclose(whole.decision_function(docs), parts.decision_function(docs))


@pytest.mark.parametrize("params", [{}, {"fisher_weight": 1.0, "lr_C": 0}], ids=["blend", "fisher-only"])
def test_rules_separate_the_classes(params):
    docs, y, _ = random_docs(seed=2, n=400)
    clf = BayesClassifier(**params).fit(docs[:300], y[:300])
    scores = clf.decision_function(docs[300:])
    assert scores[y[300:] == 1].mean() > 0 > scores[y[300:] == 0].mean()
    proba = clf.predict_proba(docs[300:])
    assert proba.shape == (100, 2) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(clf.predict(docs[300:]), (proba[:, 1] > 0.5).astype(int))


def test_unknown_tokens_give_no_opinion():
    docs, y, vocab = random_docs(seed=3)
    clf = BayesClassifier(lr_C=0, fisher_weight=1.0).fit(docs, y)
    assert clf.score_one(np.arange(vocab + 10, vocab + 50, dtype=np.uint64)) == 0.0
    blend = BayesClassifier().fit(docs, y)
    unknown = np.arange(vocab + 10, vocab + 50, dtype=np.uint64)
    # with no known token only the regression's intercept is left: the score is the prior, not evidence
    assert abs(blend.score_one(unknown)) < abs(blend.score_one(docs[0]))


def test_regression_side_matches_sklearn_on_nb_features():
    """The regression's weights are scikit-learn's LogisticRegression on |NB log-ratio| features."""
    from sklearn.linear_model import LogisticRegression

    docs, y, vocab = random_docs(seed=8)
    clf = BayesClassifier().fit(docs, y)
    spam, ham, _ = clf.lookup(np.arange(vocab, dtype=np.uint64))
    r = np.abs(np.log((spam + 1) / (clf.n_spam_ + 2)) - np.log((ham + 1) / (clf.n_ham_ + 2)))
    matrix = np.zeros((len(docs), vocab))
    for row, ids in enumerate(docs):
        matrix[row, ids.astype(int)] = r[ids.astype(int)]
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ref = LogisticRegression(C=clf.lr_C, solver="liblinear").fit(matrix, y)
    present = np.isin(np.arange(vocab), clf.vocab_.astype(int))
    assert np.allclose(ref.coef_.ravel()[present], clf.weights_, atol=1e-3)
    assert ref.intercept_[0] == pytest.approx(clf.intercept_, abs=1e-3)


def test_deltas_move_the_score():
    docs, y, _ = random_docs(seed=4)
    clf = BayesClassifier(lr_C=0, fisher_weight=1.0).fit(docs, y)
    unseen = np.array([10_000, 10_001, 10_002], dtype=np.uint64)
    delta = {int(i): (20.0, 0.0) for i in unseen}
    assert clf.score_one(unseen, delta, (20.0, 0.0)) > clf.score_one(unseen) == 0.0


def test_prune_and_array_round_trip():
    docs, y, _ = random_docs(seed=5)
    clf = BayesClassifier().fit(docs, y).prune(5)
    assert ((clf.spam_counts_.astype(int) + clf.ham_counts_) >= 5).all()
    copy = BayesClassifier.from_arrays(clf.to_arrays(), clf.get_params())
    assert np.allclose(copy.decision_function(docs), clf.decision_function(docs))


def test_bad_labels_and_arrays_are_refused():
    docs, y, _ = random_docs(seed=6, n=10)
    with pytest.raises(ValueError):
        BayesClassifier().fit(docs, np.full(10, 2))
    clf = BayesClassifier().fit(docs, y)
    arrays = clf.to_arrays()
    arrays["vocab"] = arrays["vocab"][::-1].copy()
    with pytest.raises(ValueError):
        BayesClassifier.from_arrays(arrays, clf.get_params())
