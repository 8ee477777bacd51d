"""Versioned model artifacts under ``models/<name>/``, verified before anything is loaded.

A model directory holds ``manifest.json`` (schema version, sha256 of every file, training
data description, metrics), ``bayes.npz`` (token counts) and ``combiner.json`` (weights).
Nothing is pickled: arrays load with ``allow_pickle=False``, the rest is JSON, and a file
whose hash differs from the manifest is refused before it is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .bayes import BayesClassifier
from .combine import Combiner
from .errors import ModelError

__all__ = ["SCHEMA_VERSION", "ModelBundle", "load_model", "save_model", "sha256_file"]

SCHEMA_VERSION = 1
_FILES = ("bayes.npz", "combiner.json")


@dataclasses.dataclass
class ModelBundle:
    """Everything a trained model consists of: classifier, combiner, and where they came from."""

    bayes: BayesClassifier
    combiner: Combiner
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = None

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unsaved"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_verified(directory: Path, name: str, expected: Mapping[str, str]) -> bytes:
    """The bytes of ``name``, only if they hash to what the manifest says."""
    want = expected.get(name)
    if not isinstance(want, str):
        raise ModelError(f"{directory}/manifest.json lists no sha256 for {name}")
    try:
        data = (directory / name).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {directory / name}: {exc.strerror or exc}") from exc
    if hashlib.sha256(data).hexdigest() != want:
        raise ModelError(f"{directory / name} does not match its manifest hash; refusing to load it")
    return data


def load_model(directory: str | os.PathLike[str]) -> ModelBundle:
    """Load and verify a model directory; raises ModelError on anything missing or tampered."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / "manifest.json").read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"no model at {directory} (manifest.json missing)") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable manifest in {directory}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{directory}/manifest.json is not a JSON object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(f"{directory}: model schema {manifest.get('schema_version')!r} is not {SCHEMA_VERSION}")
    hashes = manifest.get("files", {})
    if not isinstance(hashes, dict):
        raise ModelError(f"{directory}/manifest.json: 'files' must map file names to sha256")
    try:
        with np.load(io.BytesIO(_read_verified(directory, "bayes.npz", hashes)), allow_pickle=False) as arrays:
            bayes = BayesClassifier.from_arrays(dict(arrays), manifest["bayes_params"])
        combiner = Combiner.from_dict(json.loads(_read_verified(directory, "combiner.json", hashes)))
    except ModelError:
        raise
    except (KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{directory}: malformed model artifact: {exc}") from exc
    return ModelBundle(bayes=bayes, combiner=combiner, manifest=manifest, path=directory)


def save_model(bundle: ModelBundle, directory: str | os.PathLike[str], info: Mapping[str, Any]) -> Path:
    """Write the artifacts and a manifest with their hashes; ``info`` adds data and metrics.
    Files are written to a temporary directory first and moved in place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
    np.savez_compressed(tmp / "bayes.npz", **bundle.bayes.to_arrays())
    (tmp / "combiner.json").write_text(json.dumps(bundle.combiner.to_dict(), indent=1, sort_keys=True), "utf-8")
    manifest = {
        **info,
        "schema_version": SCHEMA_VERSION,
        "bayes_params": bundle.bayes.get_params(),
        "files": {name: sha256_file(tmp / name) for name in _FILES},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", "utf-8")
    directory.mkdir(exist_ok=True)
    for name in (*_FILES, "manifest.json"):
        os.replace(tmp / name, directory / name)
    tmp.rmdir()
    bundle.manifest, bundle.path = manifest, directory
    return directory
