"""Fuzzing the parsing entry points: MessageContext and its views, Scanner.scan, the report
readers (file, Maildir, mbox, ARF) and the milter's header and reply building.

Inputs come from mailguard/testing/fuzz.py, driven by hypothesis' ``st.randoms()`` so a
failure shrinks to fewer, smaller choices. Under the ``ci`` profile (conftest.py) the
examples are fixed: the same inputs every run. Every input that ever failed is kept in
crashers/ and replayed by `test_crasher_stays_fixed`.

Keeping a crasher: write the failing input (hypothesis prints it, or benchmarks/fuzz.py
saves it under benchmarks/out/crashers/) to ``crashers/<what-broke>.eml``. Only synthetic
inputs or small mutations of the SpamAssassin corpus; never a TREC message.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.learning.datasets import load_labels
from mailguard.testing.fuzz import FuzzTargets, hostile_message, mutate

CRASHERS = sorted((Path(__file__).parent / "crashers").glob("*.eml"))
randoms = st.randoms(use_true_random=False)


@given(rng=randoms)
def test_hostile_messages(targets: FuzzTargets, rng: random.Random) -> None:
    targets.check(hostile_message(rng))


@given(rng=randoms)
def test_mutated_samples(targets: FuzzTargets, samples: list[bytes], rng: random.Random) -> None:
    targets.check(mutate(rng, rng.choice(samples), samples))


@settings(max_examples=10)
@given(rng=randoms)
def test_reports_of_hostile_messages(sqlite_targets: FuzzTargets, samples: list[bytes], rng: random.Random) -> None:
    """Recorded as a user report too (re-scan, learning, the report queue), on SQLite."""
    raw = hostile_message(rng, samples)
    outcome = sqlite_targets.check(raw, report=True)["report"]
    assert outcome.digest  # reported, or recognised as reported before


def test_near_the_parse_bound(targets: FuzzTargets) -> None:
    """A message of 7 MB or more, around the 8 MiB parse bound (benchmarks/fuzz.py runs many)."""
    raw = hostile_message(random.Random(1), big=1.0)
    assert len(raw) > 7_000_000
    targets.check(raw)


@pytest.mark.corpus
def test_mutated_corpus_messages(targets: FuzzTargets, corpus_labels: Path) -> None:
    """Mutations of a fixed sample of the SpamAssassin public corpus."""
    samples, _ = load_labels(corpus_labels)
    rng = random.Random(2002)
    seeds = [s.path.read_bytes() for s in rng.sample(samples, 60)]
    for _ in range(60):
        targets.check(mutate(rng, rng.choice(seeds), seeds))


@pytest.mark.parametrize("path", CRASHERS, ids=[p.stem for p in CRASHERS])
def test_crasher_stays_fixed(targets: FuzzTargets, path: Path) -> None:
    targets.check(path.read_bytes(), report=True)


def test_crashers_are_kept():
    assert CRASHERS, "tests/fuzz/crashers/ holds the inputs that once broke a parser"
