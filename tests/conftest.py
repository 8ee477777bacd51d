"""Shared fixtures: a tiny model trained on synthetic mail, so scanner tests need no corpus."""

from __future__ import annotations

import os
import random
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest

from mailguard.message import MessageContext
from mailguard.model import ModelBundle
from mailguard.classifier.features import text_features
from mailguard.learning.train import fit_model

HAM_WORDS = "meeting agenda budget review thursday draft minutes project schedule notes team lunch report figures".split()
SPAM_WORDS = "viagra cialis lottery winner prize cheap pills discount offer unsubscribe casino bonus millions".split()
SAMPLES = Path(__file__).resolve().parent.parent / "datasets" / "samples"


def make_message(words: list[str], *, subject: str = "hello", sender: str = "alice@example.org", seed: int = 0) -> bytes:
    rng = random.Random(seed)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "bob@example.net"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{seed}.{rng.random()}@example.org>"
    msg.set_content(" ".join(rng.choice(words) for _ in range(60)) + "\n")
    return msg.as_bytes()


def synthetic_corpus(n: int = 40) -> tuple[list[bytes], np.ndarray]:
    raws, labels = [], []
    for i in range(n):
        spam = i % 2 == 1
        words = SPAM_WORDS if spam else HAM_WORDS
        raws.append(make_message(words, subject="offer" if spam else "agenda", seed=i))
        labels.append(int(spam))
    return raws, np.array(labels)


@pytest.fixture(scope="session")
def tiny_model() -> ModelBundle:
    raws, y = synthetic_corpus()
    ids = [text_features(MessageContext(r)) for r in raws]
    return fit_model(ids, y, params={"bits": 16}, combiner_C=100.0)  # a small table: tests build many scanners


@pytest.fixture()
def ham_message() -> bytes:
    return make_message(HAM_WORDS, subject="agenda", seed=1001)


@pytest.fixture()
def spam_message() -> bytes:
    return make_message(SPAM_WORDS, subject="offer", seed=1002)


@pytest.fixture(scope="session")
def corpus_labels() -> Path:
    """The SpamAssassin corpus's folds.csv from $MAILGUARD_CORPORA (default ../shared/corpora).
    In CI its absence is an error, not a skip."""
    root = os.environ.get("MAILGUARD_CORPORA")
    labels = Path(root or "../shared/corpora") / "spamassassin" / "folds.csv"
    if not labels.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the corpora: {labels} not found (MAILGUARD_CORPORA={root!r})")
        pytest.skip(f"public corpora not found at {labels}; set MAILGUARD_CORPORA")
    return labels
