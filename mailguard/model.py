"""Versioned model artifacts under ``models/<name>/``, verified before anything is loaded.

A model directory holds ``manifest.json`` (schema version, sha256 of every file, training
data description, metrics), ``bayes.npz`` (the text classifier's hashed weights and counts,
sparse) and ``combiner.json`` (weights).
Nothing is pickled: arrays load with ``allow_pickle=False``, the rest is JSON, and a file
whose hash differs from the manifest is refused before it is read.

A *versioned* directory (written by ``mailguard retrain``) holds such model directories as
``<root>/<version>/`` plus two small text files, so that a bad model can be taken back:

* ``CURRENT``  the name of the version in service (what `load_model` on the root loads);
* ``HISTORY``  one line per change, ``<UTC time> TAB promote|rollback TAB <version> TAB note``.
  Replaying it gives the stack of promoted versions: promote pushes, rollback pops, so
  rollback goes back one promotion at a time.

Versions are written complete in a temporary directory and renamed into place; ``CURRENT``
and ``HISTORY`` are replaced whole (temporary file + ``os.replace``), HISTORY first, so a
reader sees the old or the new version, never half of one. Writers take an exclusive lock
on ``<root>/.lock``. A version's manifest is written once and never changed: whether the
promotion gate accepted it is recorded there, whether it is in service is ``CURRENT``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .classifier.online import OnlineClassifier
from .combine import Combiner
from .errors import ModelError

__all__ = [
    "SCHEMA_VERSION",
    "HistoryEntry",
    "ModelBundle",
    "VersionInfo",
    "current_version",
    "history",
    "is_versioned",
    "list_versions",
    "load_model",
    "promote",
    "rollback",
    "save_model",
    "save_version",
    "sha256_file",
]

SCHEMA_VERSION = 2  # 2: the online text classifier (hashed weights and counts); 1 was the frozen Bayes
_FILES = ("bayes.npz", "combiner.json")
CURRENT = "CURRENT"
HISTORY = "HISTORY"
_LOCK = ".lock"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAX_POINTER_BYTES = 256
_MAX_HISTORY_BYTES = 1 << 20  # a line per promotion: thousands of years of weekly retrains


@dataclasses.dataclass
class ModelBundle:
    """Everything a trained model consists of: classifier, combiner, and where they came from."""

    bayes: OnlineClassifier  # the text classifier (the ``bayes`` scorer runs it)
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
    """Load and verify a model directory; raises ModelError on anything missing or tampered.
    For a versioned directory this is the version ``CURRENT`` names."""
    directory = Path(directory)
    if (directory / CURRENT).exists():
        version = current_version(directory)
        assert version is not None
        return _load_plain(directory / version)
    if not (directory / "manifest.json").exists() and (
        (directory / HISTORY).exists() or any((directory / f"v{n}" / "manifest.json").exists() for n in (1, 2, 3))
    ):
        raise ModelError(f"{directory} holds model versions but none is in service ({CURRENT} missing; mailguard model list)")
    return _load_plain(directory)


def _load_plain(directory: Path) -> ModelBundle:
    try:
        manifest = json.loads((directory / "manifest.json").read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"no model at {directory} (manifest.json missing)") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable manifest in {directory}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{directory}/manifest.json is not a JSON object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(
            f"{directory}: model schema {manifest.get('schema_version')!r} is not {SCHEMA_VERSION}; retrain it (mailguard train)"
        )
    hashes = manifest.get("files", {})
    if not isinstance(hashes, dict):
        raise ModelError(f"{directory}/manifest.json: 'files' must map file names to sha256")
    try:
        with np.load(io.BytesIO(_read_verified(directory, "bayes.npz", hashes)), allow_pickle=False) as arrays:
            bayes = OnlineClassifier.from_arrays(dict(arrays), manifest["bayes_params"])
        combiner = Combiner.from_dict(json.loads(_read_verified(directory, "combiner.json", hashes)))
    except ModelError:
        raise
    except (KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{directory}: malformed model artifact: {exc}") from exc
    return ModelBundle(bayes=bayes, combiner=combiner, manifest=manifest, path=directory)


def _write_artifacts(bundle: ModelBundle, directory: Path, info: Mapping[str, Any]) -> dict[str, Any]:
    """The artifacts and their manifest in ``directory`` (a fresh temporary one); returns the manifest."""
    np.savez_compressed(directory / "bayes.npz", **bundle.bayes.to_arrays())
    (directory / "combiner.json").write_text(json.dumps(bundle.combiner.to_dict(), indent=1, sort_keys=True), "utf-8")
    manifest = {
        **info,
        "schema_version": SCHEMA_VERSION,
        "bayes_params": bundle.bayes.get_params(),
        "files": {name: sha256_file(directory / name) for name in _FILES},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", "utf-8")
    return manifest


def save_model(bundle: ModelBundle, directory: str | os.PathLike[str], info: Mapping[str, Any]) -> Path:
    """Write the artifacts and a manifest with their hashes; ``info`` adds data and metrics.
    Files are written to a temporary directory first and moved in place. A versioned
    directory is refused: its versions are added with `save_version` and `promote`."""
    directory = Path(directory)
    if is_versioned(directory):
        raise ModelError(f"{directory} is a versioned model directory: add versions with mailguard retrain, not over it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
    try:
        manifest = _write_artifacts(bundle, tmp, info)
        directory.mkdir(exist_ok=True)
        for name in (*_FILES, "manifest.json"):
            os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bundle.manifest, bundle.path = manifest, directory
    return directory


# -- versions ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    time: str  # UTC, ISO 8601
    action: str  # promote | rollback
    version: str
    note: str = ""


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    name: str
    path: Path
    manifest: dict[str, Any] | None  # None when it could not be read
    current: bool
    problem: str | None = None  # why it would not load (verified), or None


def is_versioned(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds versions (has CURRENT or HISTORY) rather than one model."""
    directory = Path(directory)
    return (directory / CURRENT).exists() or (directory / HISTORY).exists()


def _check_version_name(name: str, where: Path) -> str:
    if not _VERSION.fullmatch(name):
        raise ModelError(f"{where}: {name!r} is not a version name (letters, digits, . _ -; at most 64)")
    return name


def current_version(root: str | os.PathLike[str]) -> str | None:
    """The version ``root/CURRENT`` names, or None when there is no CURRENT file."""
    root = Path(root)
    try:
        with open(root / CURRENT, "rb") as fh:
            data = fh.read(_MAX_POINTER_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelError(f"cannot read {root / CURRENT}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_POINTER_BYTES:
        raise ModelError(f"{root / CURRENT} is too long to be a version name")
    try:
        name = data.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise ModelError(f"{root / CURRENT} is not a version name") from exc
    return _check_version_name(name, root / CURRENT)


def history(root: str | os.PathLike[str]) -> list[HistoryEntry]:
    """Every promotion and rollback in ``root``, oldest first."""
    root = Path(root)
    try:
        with open(root / HISTORY, "rb") as fh:
            data = fh.read(_MAX_HISTORY_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ModelError(f"cannot read {root / HISTORY}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_HISTORY_BYTES:
        raise ModelError(f"{root / HISTORY} is larger than {_MAX_HISTORY_BYTES} bytes")
    entries = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3 or fields[1] not in ("promote", "rollback"):
            raise ModelError(f"{root / HISTORY}:{n}: not a history line")
        entries.append(HistoryEntry(fields[0], fields[1], _check_version_name(fields[2], root / HISTORY), "\t".join(fields[3:])))
    return entries


def _promoted_stack(entries: list[HistoryEntry]) -> list[str]:
    """Versions promoted and not rolled back, oldest first: the last one is in service."""
    stack: list[str] = []
    for entry in entries:
        if entry.action == "promote":
            stack.append(entry.version)
        elif stack:
            stack.pop()
    return stack


def list_versions(root: str | os.PathLike[str], *, verify: bool = True) -> list[VersionInfo]:
    """The versions under ``root``, oldest first; with ``verify`` each is loaded (hashes checked)."""
    root = Path(root)
    current = current_version(root)
    found = []
    try:
        children = [p for p in root.iterdir() if p.is_dir() and _VERSION.fullmatch(p.name) and (p / "manifest.json").exists()]
    except OSError as exc:
        raise ModelError(f"cannot list {root}: {exc.strerror or exc}") from exc
    for path in children:
        manifest: dict[str, Any] | None = None
        problem: str | None = None
        try:
            loaded = json.loads((path / "manifest.json").read_text("utf-8"))
            manifest = loaded if isinstance(loaded, dict) else None
        except (OSError, ValueError) as exc:
            problem = f"unreadable manifest: {exc}"
        if verify and problem is None:
            try:
                _load_plain(path)
            except ModelError as exc:
                problem = str(exc)
        found.append(VersionInfo(path.name, path, manifest, path.name == current, problem))
    return sorted(found, key=lambda v: (_version_number(v.name) or 0, str((v.manifest or {}).get("created", "")), v.name))


def _version_number(name: str) -> int | None:
    match = re.fullmatch(r"v([0-9]{1,9})", name)
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One writer at a time in ``root`` (processes on this host; the lock is advisory)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / _LOCK, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _replace_text(path: Path, text: str) -> None:
    """``path`` now holds ``text``, or (after a crash) still holds what it held before."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def save_version(bundle: ModelBundle, root: str | os.PathLike[str], info: Mapping[str, Any]) -> str:
    """Write ``bundle`` as a new version ``v<N>`` of ``root`` (not promoted); returns its name.
    ``info`` goes into its manifest, with ``version`` and ``created`` set here."""
    root = Path(root)
    if (root / "manifest.json").exists() and not is_versioned(root):
        raise ModelError(f"{root} holds a single (unversioned) model; retrain into a new directory")
    with _locked(root):
        existing = [n for p in root.iterdir() if p.is_dir() and (n := _version_number(p.name)) is not None]
        number = max(existing, default=0) + 1
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            while True:
                name = f"v{number}"
                manifest = _write_artifacts(bundle, tmp, {**info, "version": name, "created": _utc_now()})
                try:
                    os.rename(tmp, root / name)  # atomic; fails when the name holds anything
                    break
                except OSError:
                    if not (root / name).exists():
                        raise
                    number += 1
        except OSError as exc:
            raise ModelError(f"cannot write a version into {root}: {exc.strerror or exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    bundle.manifest, bundle.path = manifest, root / name
    return name


def _switch(root: Path, action: str, version: str, note: str) -> None:
    """Record ``action`` in HISTORY, then point CURRENT at ``version`` (caller holds the lock)."""
    line = "\t".join((_utc_now(), action, version, " ".join(note.split()))) + "\n"
    try:
        old = (root / HISTORY).read_text("utf-8") if (root / HISTORY).exists() else ""
        _replace_text(root / HISTORY, old + line)
        _replace_text(root / CURRENT, version + "\n")
    except OSError as exc:
        raise ModelError(f"cannot switch {root} to {version}: {exc.strerror or exc}") from exc


def promote(root: str | os.PathLike[str], version: str, *, note: str = "") -> str | None:
    """Put ``version`` in service (after loading it, hashes checked); returns the one it replaces."""
    root = Path(root)
    _check_version_name(version, root)
    with _locked(root):
        _load_plain(root / version)
        previous = current_version(root)
        _switch(root, "promote", version, note)
    return previous


def rollback(root: str | os.PathLike[str], *, note: str = "") -> tuple[str, str]:
    """Put the previously promoted version back in service; returns (from, to).
    ModelError when there is none, or when CURRENT is not the last promoted version
    (someone edited it by hand, or a promotion was interrupted): promote one explicitly."""
    root = Path(root)
    with _locked(root):
        current = current_version(root)
        stack = _promoted_stack(history(root))
        if current is None:
            raise ModelError(f"{root} has no version in service ({CURRENT} missing): nothing to roll back")
        if not stack or stack[-1] != current:
            raise ModelError(
                f"{root}: {CURRENT} says {current} but {HISTORY} says {stack[-1] if stack else 'nothing'} was promoted last; "
                "settle it with mailguard model promote VERSION"
            )
        if len(stack) < 2:
            raise ModelError(f"{root}: {current} is the only promoted version; there is nothing to roll back to")
        target = stack[-2]
        _load_plain(root / target)
        _switch(root, "rollback", target, note or f"from {current}")
    return current, target
