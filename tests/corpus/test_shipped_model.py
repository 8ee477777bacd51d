"""The shipped model: intact, described by its manifest, and right about the samples."""

from __future__ import annotations

import json
from pathlib import Path

from mailguard.config import Config, StoreConfig, default_model_dir
from mailguard.model import load_model, sha256_file
from mailguard.scanner import Scanner

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples"


def test_manifest_matches_the_files():
    directory = default_model_dir()
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["training_data"]["messages"] == 6046
    for name, digest in manifest["files"].items():
        assert sha256_file(directory / name) == digest
    assert sum((directory / n).stat().st_size for n in manifest["files"]) < 5 * 1024 * 1024
    model = load_model(directory)
    assert int((model.bayes.weights_ != 0).sum()) == manifest["vocabulary"]


# The public corpus (2002) holds Chinese spam but no Chinese ham, so the shipped model
# takes any CJK mail for spam; the English samples are what it can be held to.
CJK = ("ham-chinese-gb2312.eml", "spam-chinese-invoice.eml", "ham-japanese-iso2022jp.eml")


def test_samples_are_classified_by_their_label():
    with Scanner(Config(store=StoreConfig(backend="memory"))) as scanner:
        for path in sorted(SAMPLES.glob("*.eml")):
            if path.name.startswith("malformed") or path.name in CJK:
                continue
            result = scanner.scan_sync(path.read_bytes())
            assert result.verdict.is_spam == path.name.startswith("spam-"), (path.name, result.score)


def test_user_learning_repairs_what_the_corpus_never_taught():
    """A user who gets Chinese mail teaches the model so; other users are unaffected."""
    raw = (SAMPLES / "ham-chinese-gb2312.eml").read_bytes()
    with Scanner(Config(store=StoreConfig(backend="memory"))) as scanner:
        before = scanner.scan_sync(raw, user="wang@example.net").score
        for n in range(3):  # three similar messages reported as not spam
            variant = raw.replace(b"Message-ID: <", f"Message-ID: <{n}.".encode())
            assert scanner.learn_sync(variant, "ham", user="wang@example.net")
        after = scanner.scan_sync(raw, user="wang@example.net").score
        other = scanner.scan_sync(raw, user="someone@example.net").score
    assert after < before - 2
    assert other == before
