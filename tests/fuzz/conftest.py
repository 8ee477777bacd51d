"""Fuzzing fixtures: the hypothesis profiles and one scanner per session.

CI runs the ``ci`` profile: a fixed seed (derandomize) and few examples, so these tests add
a few seconds and find the same thing every run. ``MAILGUARD_FUZZ_PROFILE=deep`` runs many
random examples for a local hunt; a failure found that way belongs in crashers/ (see
test_fuzz.py). benchmarks/fuzz.py runs 100,000 inputs outside pytest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from mailguard import Scanner
from mailguard.config import Config, PolicyConfig, ScannerConfig, StoreConfig
from mailguard.testing.fuzz import FuzzTargets

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None, database=None,
                          suppress_health_check=_SLOW_IS_FINE, print_blob=True)
settings.register_profile("deep", max_examples=5000, deadline=None, suppress_health_check=_SLOW_IS_FINE, print_blob=True)
settings.load_profile(os.environ.get("MAILGUARD_FUZZ_PROFILE", "ci"))

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples"


def fuzz_config(store: StoreConfig) -> Config:
    # subject_tag: tagged verdicts rewrite the Subject, so the milter's Subject path is fuzzed too
    return Config(store=store, scanner=ScannerConfig(network=False), policy=PolicyConfig(subject_tag="[SPAM] "))


@pytest.fixture(scope="session")
def targets(tiny_model, tmp_path_factory) -> Iterator[FuzzTargets]:
    """Every entry point, with a scanner on an in-memory store (network off)."""
    with Scanner(fuzz_config(StoreConfig(backend="memory")), model=tiny_model) as scanner:
        yield FuzzTargets(scanner, tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="session")
def sqlite_targets(tiny_model, tmp_path_factory) -> Iterator[FuzzTargets]:
    """The same on a temporary SQLite store, as `mailguard scan` and `report` use by default."""
    where = tmp_path_factory.mktemp("fuzz-sqlite")
    with Scanner(fuzz_config(StoreConfig(backend="sqlite", path=where / "store.sqlite3")), model=tiny_model) as scanner:
        yield FuzzTargets(scanner, where)


@pytest.fixture(scope="session")
def samples() -> list[bytes]:
    return [p.read_bytes() for p in sorted(SAMPLES.glob("*.eml"))]
