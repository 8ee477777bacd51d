"""Quality on the public corpus: the quick protocol (train on folds 1-4, score fold 0)
through the real training and scanning code. The full 5-fold numbers come from
benchmarks/quality.py; these floors only catch regressions."""

from __future__ import annotations

import numpy as np

from mailguard.config import Config
from mailguard.learning.datasets import load_labels
from mailguard.learning.evaluate import quality_metrics
from mailguard.policy import LEVELS
from mailguard.learning.train import cross_validate


def test_quick_fold_quality(corpus_labels):
    samples, errors = load_labels(corpus_labels)
    assert not errors and len(samples) == 6046
    kept, y, scores, read_errors = cross_validate(samples, config=Config(), k=5, only_fold=0)
    assert not read_errors
    held_out = np.array([s.fold == 0 for s in kept])
    m = quality_metrics(y[held_out], scores[held_out], LEVELS["medium"].required)
    assert m["ham"] > 700 and m["spam"] > 300
    assert m["one_minus_auc_pct"] < 0.1, m
    assert m["false_positives"] <= 1, m
    # 41 of the corpus's 1,896 spam are Chinese, Korean or Japanese and it holds 2 such ham:
    # training leaves them out (a script without ham is no spam evidence), so the classifier
    # reads them only through what they share with English mail and the other scorers do the
    # rest; 93% before any such rule, 92% with the say cut on them
    assert m["catch_rate"] >= 0.92, m
