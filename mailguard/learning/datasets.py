"""Labelled corpora: a ``path,label[,fold]`` CSV (the layout of ``../shared/corpora``) or
plain ``ham/`` and ``spam/`` folders. Bad rows are reported, not fatal, so one typo does
not stop a long training run; a file that is not such a CSV at all is an error.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from pathlib import Path

from ..errors import ConfigError
from ..scorer import Label

__all__ = ["Sample", "load_corpus", "load_folders", "load_labels", "data_hash"]


@dataclasses.dataclass(frozen=True)
class Sample:
    path: Path
    label: Label
    fold: int | None = None

    @property
    def y(self) -> int:
        return 1 if self.label == "spam" else 0


def load_labels(csv_path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> tuple[list[Sample], list[str]]:
    """Samples from a CSV with columns ``path,label[,fold]``; paths are relative to ``root``
    (default: the CSV's folder). Returns (samples, one error line per bad row)."""
    csv_path = Path(csv_path)
    base = Path(root) if root is not None else csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "path" not in fields or "label" not in fields:
                raise ConfigError(f"{csv_path}: needs a header with columns path,label[,fold]; found {','.join(fields) or 'nothing'}")
            rows = list(reader)
    except OSError as exc:
        raise ConfigError(f"cannot read {csv_path}: {exc.strerror or exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{csv_path}: not a readable CSV: {exc}") from exc
    samples: list[Sample] = []
    errors: list[str] = []
    for line, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip().lower()
        path = (row.get("path") or "").strip()
        if label not in ("ham", "spam"):
            errors.append(f"{csv_path}:{line}: unknown label {row.get('label')!r} (use ham or spam)")
            continue
        if not path:
            errors.append(f"{csv_path}:{line}: empty path")
            continue
        fold: int | None = None
        if (row.get("fold") or "").strip():
            try:
                fold = int(row["fold"])
            except ValueError:
                errors.append(f"{csv_path}:{line}: fold {row['fold']!r} is not a whole number")
                continue
        samples.append(Sample(base / path, label, fold))  # type: ignore[arg-type]
    return samples, errors


def load_folders(root: str | os.PathLike[str]) -> list[Sample]:
    """Samples from ``root/ham/**`` and ``root/spam/**`` (every regular file, sorted)."""
    root = Path(root)
    samples = []
    for label in ("ham", "spam"):
        folder = root / label
        if folder.is_dir():
            samples.extend(Sample(p, label) for p in sorted(folder.rglob("*")) if p.is_file())  # type: ignore[arg-type]
    if not samples:
        raise ConfigError(f"{root}: no ham/ or spam/ folder with messages")
    return samples


def load_corpus(source: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> tuple[list[Sample], list[str]]:
    """A CSV file or a folder with ham/ and spam/."""
    source = Path(source)
    if source.is_dir():
        return load_folders(source), []
    return load_labels(source, root)


def data_hash(samples: list[Sample]) -> str:
    """Identity of a training set: sha256 over each sample's label and file name, in order."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.label}\t{s.path.name}\n".encode())
    return digest.hexdigest()
