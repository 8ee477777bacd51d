"""Corpus tests read the public corpora from $MAILGUARD_CORPORA (CI sets it; scripts/test
sets it when ../shared/corpora exists). In CI their absence is an error, not a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def corpus_labels() -> Path:
    root = os.environ.get("MAILGUARD_CORPORA")
    labels = Path(root or "../shared/corpora") / "spamassassin" / "folds.csv"
    if not labels.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the corpora: {labels} not found (MAILGUARD_CORPORA={root!r})")
        pytest.skip(f"public corpora not found at {labels}; set MAILGUARD_CORPORA")
    return labels
