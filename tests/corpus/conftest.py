"""Corpus tests read the public corpora from $MAILGUARD_CORPORA through the ``corpus_labels``
fixture of tests/conftest.py (CI sets it; scripts/test sets it when ../shared/corpora exists)."""
