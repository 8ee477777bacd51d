"""Model artifacts: save/load round trip, and refusal of anything tampered with before loading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mailguard.classifier.features import TextFeatures
from mailguard.classifier.online import OnlineClassifier
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
    X = [TextFeatures(np.array(ids, dtype=np.uint64), np.array([7, ids[0]], dtype=np.uint64))
         for ids in ([1, 2, 3], [2, 3, 4], [10, 11, 12], [11, 12, 13], [3, 12])]
    y = [1, 1, 0, 0, 1]
    bayes = OnlineClassifier(bits=12, min_dev=0.05).fit(X, y)
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
    docs = [TextFeatures(np.array(d, dtype=np.uint64), np.array([7], dtype=np.uint64)) for d in ([1, 2, 99], [11, 12], [])]
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
    np.savez(directory / "bayes.npz", weight_buckets=evil, weights=evil, count_buckets=evil, spam_counts=evil, ham_counts=evil)
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
    np.load(directory / "bayes.npz", allow_pickle=True)["weight_buckets"]
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


def test_bucket_outside_the_table_refused(saved):
    bundle, directory = saved
    arrays = bundle.bayes.to_arrays()
    arrays["weight_buckets"] = arrays["weight_buckets"] + np.uint32(1 << 12)
    np.savez_compressed(directory / "bayes.npz", **arrays)
    digest = hashlib.sha256((directory / "bayes.npz").read_bytes()).hexdigest()
    rewrite_manifest(directory, lambda m: {**m, "files": {**m["files"], "bayes.npz": digest}})
    with pytest.raises(ModelError, match="malformed"):
        load_model(directory)


# -- versioned model directories (CURRENT, HISTORY, rollback) ---------------------------------

import os  # noqa: E402

from mailguard import model as model_module  # noqa: E402
from mailguard.model import current_version, history, list_versions, promote, rollback, save_version  # noqa: E402


@pytest.fixture()
def versioned(tmp_path) -> Path:
    """v1, v2, v3 saved (distinct combiner intercepts) and promoted in that order."""
    root = tmp_path / "models" / "site"
    for n in range(3):
        bundle = tiny_bundle()
        bundle.combiner.intercept_ += n
        promote(root, save_version(bundle, root, {"metrics": {"n": n}}))
    return root


def test_versioned_load_follows_current(versioned):
    assert current_version(versioned) == "v3"
    loaded = load_model(versioned)
    assert loaded.version == "v3" and loaded.path == versioned / "v3" and loaded.manifest["metrics"] == {"n": 2}
    assert [v.name for v in list_versions(versioned)] == ["v1", "v2", "v3"]
    assert [v.current for v in list_versions(versioned)] == [False, False, True]
    assert not [p for p in versioned.iterdir() if p.name.startswith(".tmp-") or p.name.startswith(".CURRENT")]


def test_rollback_goes_back_one_promotion_at_a_time(versioned):
    intercept = {v: load_model(versioned / v).combiner.intercept_ for v in ("v1", "v2", "v3")}
    assert rollback(versioned) == ("v3", "v2")
    assert load_model(versioned).combiner.intercept_ == pytest.approx(intercept["v2"])
    assert rollback(versioned) == ("v2", "v1")
    with pytest.raises(ModelError, match="nothing to roll back"):
        rollback(versioned)
    assert current_version(versioned) == "v1"
    assert promote(versioned, "v3") == "v1"
    assert rollback(versioned) == ("v3", "v1")  # v2 was rolled back earlier: not in the stack any more
    assert [e.action for e in history(versioned)] == ["promote"] * 3 + ["rollback"] * 2 + ["promote", "rollback"]


@pytest.mark.parametrize("name", ["bayes.npz", "combiner.json"])
def test_tampered_version_refused(versioned, name):
    flip_byte(versioned / "v3" / name, 40)
    with pytest.raises(ModelError, match="manifest hash"):
        load_model(versioned)
    assert [v.problem is not None for v in list_versions(versioned)] == [False, False, True]
    flip_byte(versioned / "v3" / name, 40)  # restored
    load_model(versioned)
    flip_byte(versioned / "v2" / name, 40)
    with pytest.raises(ModelError, match="manifest hash"):
        rollback(versioned)  # never switches to a version that does not verify
    with pytest.raises(ModelError, match="manifest hash"):
        promote(versioned, "v2")
    assert current_version(versioned) == "v3"


@pytest.mark.parametrize("pointer", [b"../t1", b"v9", b"", b"v" * 300, b"\xff\xfe", b"v1/../v2"])
def test_bad_current_pointer_refused(versioned, pointer):
    (versioned / "CURRENT").write_bytes(pointer)
    with pytest.raises(ModelError):
        load_model(versioned)


def test_bad_version_names_refused(versioned):
    for name in ("../v1", "v1/x", "", ".hidden"):
        with pytest.raises(ModelError):
            promote(versioned, name)
    assert current_version(versioned) == "v3"


def test_interrupted_switch_keeps_the_old_version(versioned, monkeypatch):
    real_replace = os.replace

    def crash_on_current(src, dst):
        if Path(dst).name == "CURRENT":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(model_module.os, "replace", crash_on_current)
    with pytest.raises(ModelError, match="cannot switch"):
        promote(versioned, "v1")
    monkeypatch.undo()
    assert current_version(versioned) == "v3" and load_model(versioned).version == "v3"
    assert not [p for p in versioned.iterdir() if p.name.startswith(".CURRENT")]
    # HISTORY got the promotion, CURRENT did not: rollback refuses to guess, promote settles it
    with pytest.raises(ModelError, match="settle"):
        rollback(versioned)
    promote(versioned, "v3")
    assert rollback(versioned) == ("v3", "v1")


def test_concurrent_versions_get_distinct_names(tmp_path):
    import threading

    root = tmp_path / "m"
    names: list[str] = []
    threads = [threading.Thread(target=lambda: names.append(save_version(tiny_bundle(), root, {}))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(names) == ["v1", "v2", "v3", "v4"]
    assert all(load_model(root / n).version == n for n in names)
    assert current_version(root) is None  # saved, none promoted
    with pytest.raises(ModelError):
        load_model(tmp_path / "nothing")


def test_plain_and_versioned_directories_do_not_mix(saved, versioned):
    _, plain = saved
    with pytest.raises(ModelError, match="unversioned"):
        save_version(tiny_bundle(), plain, {})
    with pytest.raises(ModelError, match="versioned"):
        save_model(tiny_bundle(), versioned, {"version": "x"})
    assert load_model(plain).version == "t1" and load_model(versioned).version == "v3"
