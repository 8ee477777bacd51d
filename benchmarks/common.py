"""What the benchmarks share: the corpus as bytes, one-core pinning, timed scans."""

from __future__ import annotations

import argparse
import os
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mailguard.learning.datasets import load_labels
from mailguard.scanner import Scanner


def add_corpora_option(parser: argparse.ArgumentParser) -> None:
    """``--corpora``: where ../shared/corpora is (default ``$MAILGUARD_CORPORA``)."""
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", "../shared/corpora"))


def corpus_labels(corpora: str, name: str = "spamassassin") -> Path | None:
    """A corpus's folds.csv, or None after saying on stderr where it was looked for. The TREC
    corpora are archives: ``--corpora "$(../shared/corpora/unpack)"`` gives all three."""
    labels = Path(corpora) / name / "folds.csv"
    if labels.exists():
        return labels
    print(f"no corpus at {labels}; see ../shared/corpora/README.md (its unpack script)", file=sys.stderr)
    return None


def bogofilter_cutoff() -> float:
    """bogofilter's own spam cutoff (``bogofilter -Q``), the threshold it is judged at; 0.99,
    its compiled-in default, when the configuration does not say."""
    config = subprocess.run(["bogofilter", "-Q"], capture_output=True, text=True).stdout
    return next((float(line.split("=")[1].split()[0]) for line in config.splitlines() if line.startswith("spam_cutoff")), 0.99)


def corpus_bytes(corpora: str, limit: int = 0) -> list[bytes]:
    """The public corpus's messages in folds.csv order (the first ``limit`` if given)."""
    samples, _ = load_labels(Path(corpora) / "spamassassin" / "folds.csv")
    return [s.path.read_bytes() for s in (samples[:limit] if limit else samples)]


def pin_one_core() -> None:
    """Measure on one core, as the targets are stated."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def timed_scans(scanner: Scanner, raws: list[bytes], warmup: int = 30) -> np.ndarray:
    """Seconds per message for scanning each of ``raws`` (after a short warm-up)."""

    async def run() -> list[float]:
        for raw in raws[:warmup]:
            await scanner.scan(raw)
        out = []
        for raw in raws:
            started = time.perf_counter()
            await scanner.scan(raw)
            out.append(time.perf_counter() - started)
        return out

    return np.array(scanner._run(run()))


def percentiles_ms(seconds: np.ndarray) -> str:
    return f"p50 {np.percentile(seconds, 50) * 1e3:.2f} ms, p99 {np.percentile(seconds, 99) * 1e3:.2f} ms"


def drop_smtp(smtp: smtplib.SMTP | None) -> None:
    """Close an SMTP client connection however it is; None, for ``smtp = drop_smtp(smtp)``."""
    if smtp is not None:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
    return None
