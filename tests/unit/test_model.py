"""Model artifacts: save/load round trip, and refusal of anything tampered with before loading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mailguard.bayes import BayesClassifier
from mailguard.combine import Combiner
from mailguard.errors import ModelError
from mailguard.model import SCHEMA_VERSION, ModelBundle, load_model, save_model

UNPICKLED: list[str] = []


def _record_unpickle(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Booby:
    """Unpickling this records that it happened (a stand-in for arbitrary code execution)."""

    def __reduce__(self):
        return (_record_unpickle, ("booby trap ran",))


def tiny_bundle() -> ModelBundle:
    X = [np.array(ids, dtype=np.uint64) for ids in ([1, 2, 3], [2, 3, 4], [10, 11, 12], [11, 12, 13], [3, 12])]
    y = [1, 1, 0, 0, 1]
    bayes = BayesClassifier(min_dev=0.05).fit(X, y)
    combiner = Combiner(C=2.0, group_caps={"rules": 3.0}).fit(
        [{"BAYES": 3.0, "R": 1.0}, {"BAYES": 2.0}, {"BAYES": -3.0}, {"BAYES": -1.0, "H": 1.0}], [1, 1, 0, 0]
    )
    return ModelBundle(bayes=bayes, combiner=combiner)


@pytest.fixture()
def saved(tmp_path) -> tuple[ModelBundle, Path]:
    bundle = tiny_bundle()
    directory = save_model(bundle, tmp_path / "models" / "t1", {"version": "t1", "metrics": {"auc": 0.99}})
    return bundle, directory


def rewrite_manifest(directory: Path, change) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text("utf-8"))
    manifest = change(manifest)
    path.write_text(json.dumps(manifest), "utf-8")


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def test_save_writes_manifest_with_hashes(saved):
    bundle, directory = saved
    manifest = json.loads((directory / "manifest.json").read_text("utf-8"))
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["version"] == "t1" and manifest["metrics"] == {"auc": 0.99}
    for name in ("bayes.npz", "combiner.json"):
        assert manifest["files"][name] == hashlib.sha256((directory / name).read_bytes()).hexdigest()
    assert bundle.path == directory and bundle.version == "t1"
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".tmp-")]


def test_round_trip(saved):
    bundle, directory = saved
    loaded = load_model(directory)
    assert loaded.path == directory and loaded.version == "t1"
    for name, array in bundle.bayes.to_arrays().items():
        np.testing.assert_array_equal(loaded.bayes.to_arrays()[name], array)
    assert loaded.bayes.get_params() == bundle.bayes.get_params()
    docs = [np.array([1, 2, 99], dtype=np.uint64), np.array([11, 12], dtype=np.uint64), np.array([], dtype=np.uint64)]
    np.testing.assert_array_equal(loaded.bayes.decision_function(docs), bundle.bayes.decision_function(docs))
    rows = [{"BAYES": 1.5}, {"BAYES": -2.0, "H": 1.0}, {"R": 1.0}]
    np.testing.assert_array_equal(loaded.combiner.predict_proba(rows), bundle.combiner.predict_proba(rows))
    assert loaded.combiner.group_caps == bundle.combiner.group_caps


def test_save_overwrites_existing_model(saved, tmp_path):
    _, directory = saved
    other = tiny_bundle()
    other.combiner.intercept_ += 1.0
    save_model(other, directory, {"version": "t2"})
    loaded = load_model(directory)
    assert loaded.version == "t2"
    assert loaded.combiner.intercept_ == pytest.approx(other.combiner.intercept_)


@pytest.mark.parametrize("name", ["bayes.npz", "combiner.json"])
@pytest.mark.parametrize("where", [0, 57, -1])
def test_tampered_file_refused(saved, name, where):
    _, directory = saved
    flip_byte(directory / name, where)
    with pytest.raises(ModelError, match="manifest hash"):
        load_model(directory)


def test_tampered_npz_with_pickled_objects_never_unpickled(saved):
    _, directory = saved
    UNPICKLED.clear()
    evil = np.array([Booby(), Booby()], dtype=object)
    np.savez(directory / "bayes.npz", vocab=evil, spam_counts=evil, ham_counts=evil, n_messages=evil)
    with pytest.raises(ModelError, match="manifest hash"):
        load_model(directory)
    assert UNPICKLED == []
    # even when the attacker also rewrites the manifest, nothing is unpickled
    digest = hashlib.sha256((directory / "bayes.npz").read_bytes()).hexdigest()
    rewrite_manifest(directory, lambda m: {**m, "files": {**m["files"], "bayes.npz": digest}})
    with pytest.raises(ModelError):
        load_model(directory)
    assert UNPICKLED == []
    # (the trap does work when unpickled: the assertions above are meaningful)
    np.load(directory / "bayes.npz", allow_pickle=True)["vocab"]
    assert UNPICKLED


def test_missing_manifest(saved):
    _, directory = saved
    (directory / "manifest.json").unlink()
    with pytest.raises(ModelError, match="manifest"):
        load_model(directory)


def test_no_model_directory(tmp_path):
    with pytest.raises(ModelError):
        load_model(tmp_path / "nothing-here")


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "1", None])
def test_wrong_schema_version(saved, version):
    _, directory = saved
    rewrite_manifest(directory, lambda m: {**m, "schema_version": version})
    with pytest.raises(ModelError, match="schema"):
        load_model(directory)


@pytest.mark.parametrize("content", ["[1, 2, 3]", "\"a string\"", "{not json", ""])
def test_malformed_manifest(saved, content):
    _, directory = saved
    (directory / "manifest.json").write_text(content, "utf-8")
    with pytest.raises(ModelError):
        load_model(directory)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: {k: v for k, v in m.items() if k != "files"},
        lambda m: {**m, "files": ["bayes.npz"]},
        lambda m: {**m, "files": {"bayes.npz": m["files"]["bayes.npz"]}},
        lambda m: {k: v for k, v in m.items() if k != "bayes_params"},
        lambda m: {**m, "bayes_params": {"no_such_param": 1}},
    ],
    ids=["no-files", "files-not-table", "combiner-hash-missing", "no-bayes-params", "bad-bayes-params"],
)
def test_incomplete_manifest(saved, change):
    _, directory = saved
    rewrite_manifest(directory, change)
    with pytest.raises(ModelError):
        load_model(directory)


@pytest.mark.parametrize("name", ["bayes.npz", "combiner.json"])
def test_missing_artifact(saved, name):
    _, directory = saved
    (directory / name).unlink()
    with pytest.raises(ModelError, match=name):
        load_model(directory)


def test_corrupt_but_consistently_hashed_npz(saved):
    _, directory = saved
    (directory / "bayes.npz").write_bytes(b"PK\x03\x04 not really a zip")
    digest = hashlib.sha256((directory / "bayes.npz").read_bytes()).hexdigest()
    rewrite_manifest(directory, lambda m: {**m, "files": {**m["files"], "bayes.npz": digest}})
    with pytest.raises(ModelError):
        load_model(directory)


def test_unsorted_vocabulary_refused(saved):
    bundle, directory = saved
    arrays = bundle.bayes.to_arrays()
    arrays["vocab"] = arrays["vocab"][::-1].copy()
    np.savez_compressed(directory / "bayes.npz", **arrays)
    digest = hashlib.sha256((directory / "bayes.npz").read_bytes()).hexdigest()
    rewrite_manifest(directory, lambda m: {**m, "files": {**m["files"], "bayes.npz": digest}})
    with pytest.raises(ModelError, match="malformed"):
        load_model(directory)
