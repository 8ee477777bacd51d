"""Command line: ``mailguard scan|train|eval|user|report|doctor|milter``.

Errors about one input (an unreadable file, a bad CSV row) print one line on stderr and
the rest is still processed; the exit status is then 1. Usage and start-up errors
(bad config, missing model) exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from . import __version__
from .addresses import canonical_address
from .config import Config, StoreConfig, load_config
from .datasets import load_corpus
from .errors import MailguardError
from .evaluate import quality_metrics
from .model import load_model, save_model
from .policy import LEVELS
from .reportqueue import check_source
from .reports import arf_label, iter_messages
from .result import ScanResult
from .scanner import Scanner

__all__ = ["main"]


class _Progress:
    """Progress on stderr, at most a few times a second, only for a terminal or when asked."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0

    def __call__(self, done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.5 and done < total):
            return
        self.last = now
        end = "\n" if done >= total else ""
        print(f"\r{what}: {done}/{total} ({100 * done / max(total, 1):.0f}%)", end=end, file=sys.stderr, flush=True)


def _error(message: str) -> None:
    print(f"mailguard: error: {message}", file=sys.stderr)


def _iter_paths(paths: Sequence[str]) -> Iterator[tuple[Path, str | None]]:
    """Files to scan; directories are walked (sorted). Yields (path, error or None)."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for file in sorted(files):
                    yield Path(root) / file, None
        elif path.exists():
            yield path, None
        else:
            yield path, "no such file or directory"


def _load_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if getattr(args, "model", None):
        config = config.replace(model=type(config.model)(path=Path(args.model)))
    if getattr(args, "no_network", False):
        config = config.replace(scanner=type(config.scanner)(**{**config.scanner.__dict__, "network": False}))
    if getattr(args, "store", None):
        config = config.replace(store=StoreConfig(backend="sqlite", path=Path(args.store)))
    return config


def _format_result(path: Path, result: ScanResult) -> str:
    v = result.verdict
    why = ", ".join(
        f"{c.scorer}:{c.symbol} {c.points:+.2f}" + (f" ({c.reason})" if c.reason else "") for c in result.top(3)
    )
    extra = ""
    if result.failures:
        extra += " failed: " + ", ".join(f"{f.scorer} ({f.kind}: {f.message})" for f in result.failures)
    if result.problems:
        extra += f" [{len(result.problems)} parse note(s): {result.problems[0]}]"
    if result.learned:
        extra += f" learned as {result.learned}"
    user = f" user={v.user}" if v.user else ""
    return f"{path}: {v.action.upper()} score={result.score:.2f} required={v.required:.2f} p={result.probability:.4f}{user} <- {why or 'no evidence'}{extra}"


async def _scan(args: argparse.Namespace, scanner: Scanner) -> int:
    status = 0
    counts: dict[str, int] = {}
    for path, problem in _iter_paths(args.paths):
        if problem is None:
            try:
                raw = path.read_bytes()
            except OSError as exc:
                problem = exc.strerror or str(exc)
        if problem is not None:
            _error(f"{path}: {problem}")
            status = 1
            continue
        result = await scanner.scan(raw, user=args.user, learn=args.learn)
        counts[result.verdict.action] = counts.get(result.verdict.action, 0) + 1
        if args.json:
            print(json.dumps({"path": str(path), **result.to_dict()}, ensure_ascii=False))
        else:
            print(_format_result(path, result))
    if not args.json:
        summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing scanned"
        print(f"-- {sum(counts.values())} message(s): {summary}", file=sys.stderr)
    return status


def cmd_scan(args: argparse.Namespace) -> int:
    scanner = Scanner(_load_config(args))
    try:
        return scanner._run(_scan(args, scanner))
    finally:
        scanner.close()


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    config = _load_config(args)
    samples, errors = load_corpus(args.labels, args.root)
    if args.exclude_fold is not None:
        samples = [s for s in samples if s.fold != args.exclude_fold]
    for line in errors:
        _error(line)
    progress = _Progress(args.progress or sys.stderr.isatty())
    bundle, info, read_errors = train(samples, limits=config.limits, progress=progress)
    for line in read_errors:
        _error(line)
    info["source"] = {"labels": str(args.labels), "exclude_fold": args.exclude_fold}
    info["version"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = save_model(bundle, args.out, info)
    print(f"model written to {out}: {info['training_data']['ham']} ham, {info['training_data']['spam']} spam, {info['vocabulary']} tokens")
    return 1 if errors or read_errors else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .train import cross_validate

    config = _load_config(args)
    samples, errors = load_corpus(args.labels, args.root)
    for line in errors:
        _error(line)
    progress = _Progress(args.progress or sys.stderr.isatty())
    kept, y, scores, read_errors = cross_validate(samples, config=config, k=args.folds, progress=progress)
    for line in read_errors:
        _error(line)
    threshold = args.threshold if args.threshold is not None else LEVELS[config.policy.level].required
    metrics = quality_metrics(y, scores, threshold)
    if args.scores:
        with open(args.scores, "w", encoding="utf-8") as fh:
            fh.write("path,label,score\n")
            fh.writelines(f"{s.path},{s.label},{score:.6f}\n" for s, score in zip(kept, scores))
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_metrics(metrics, f"{args.folds}-fold cross-validation, pooled"))
        worst = np.argsort(-np.where(y == 0, scores, -np.inf))[:3]
        print("highest-scoring ham: " + "; ".join(f"{kept[i].path.name} {scores[i]:.2f}" for i in worst if y[i] == 0))
    return 1 if errors or read_errors else 0


def format_metrics(m: dict[str, float], title: str) -> str:
    return "\n".join(
        [
            f"{title}: {m['ham']} ham, {m['spam']} spam, threshold {m['threshold']:.2f}",
            f"  spam caught          {m['catch_rate'] * 100:.2f}% ({m['caught']}/{m['spam']})",
            f"  ham false positives  {m['false_positives']} ({m['fp_rate'] * 100:.3f}%, 95% upper bound {m['fp_rate_upper95'] * 100:.3f}%)",
            f"  1-AUC                {m['one_minus_auc_pct']:.4f}%",
            f"  caught at 0 FP       {m['catch_at_zero_fp'] * 100:.2f}%",
            f"  caught at 2 FP       {m['catch_at_two_fp'] * 100:.2f}%",
        ]
    )


def cmd_user(args: argparse.Namespace) -> int:
    config = _load_config(args)
    scanner = Scanner(config, scorers=[])
    try:
        if args.action == "set":
            overrides = {k: getattr(args, k) for k in ("tag", "junk", "quarantine", "reject") if getattr(args, k) is not None}
            overrides = {k: (None if v < 0 else v) for k, v in overrides.items()}
            scanner._run(scanner.policy.set_user(args.address, level=args.level, thresholds=overrides))
        thresholds = scanner._run(scanner.policy.thresholds_for(args.address))
        print(f"{args.address}: " + " ".join(f"{k}={v}" for k, v in thresholds.__dict__.items()))
    finally:
        scanner.close()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    scanner = Scanner(_load_config(args))
    try:
        report = scanner.health_sync()
    finally:
        scanner.close()
    for name, (ok, detail) in report.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    return 0 if all(ok for ok, _ in report.values()) else 1


async def _report(args: argparse.Namespace, scanner: Scanner) -> int:
    """One line per message (status and digest prefix), errors on stderr, a summary last."""
    config = scanner.config
    budget = args.max_messages if args.max_messages is not None else config.users.report_max_messages
    counts = {"new": 0, "duplicate": 0, "replaced": 0, "stale": 0, "failed": 0}
    for name in args.paths:
        if budget <= 0:
            _error(f"{name}: not read: more than the maximum number of messages for one run")
            counts["failed"] += 1
            continue
        for item in iter_messages(name, max_bytes=config.limits.max_parse_bytes, max_messages=budget):
            budget -= 1
            says = arf_label(item.feedback_type) if item.arf else None
            if item.error is None and says is not None and says != args.label:  # never learn the opposite of the report
                item = dataclasses.replace(item, raw=None, error=f"the feedback report says {item.feedback_type}, not {args.label}; skipped")
            if item.error is not None or item.raw is None:
                _error(f"{item.where}: {item.error}")
                counts["failed"] += 1
                continue
            source = args.source or ("arf" if item.arf else "cli")
            try:
                outcome = await scanner.report(item.raw, args.label, user=args.user, source=source)
            except MailguardError as exc:
                _error(f"{item.where}: {exc}")
                counts["failed"] += 1
                continue
            counts[outcome.status] += 1
            extra = f" (was {outcome.previous})" if outcome.previous else ""
            if item.arf:
                extra += f" arf {item.feedback_type or 'no feedback type'}" + (f" for {item.original_rcpt}" if item.original_rcpt else "")
                extra += " (headers only)" if item.headers_only else ""
            print(f"{item.where}: {outcome.status} {outcome.digest[:12]}{extra}")
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n or status in ("new", "failed"))
    print(f"-- {sum(counts.values())} message(s) reported as {args.label} by {_report_user(scanner, args.user)}: {summary}", file=sys.stderr)
    return 1 if counts["failed"] else 0


def _report_user(scanner: Scanner, user: str) -> str:
    users = scanner.config.users
    return canonical_address(user, aliases=users.aliases, plus_separators=users.plus_separators)


def cmd_report(args: argparse.Namespace) -> int:
    if args.source is not None:
        check_source(args.source)
    if args.max_messages is not None and args.max_messages < 1:
        raise ValueError("--max-messages must be at least 1")
    scanner = Scanner(_load_config(args))
    try:
        _report_user(scanner, args.user)  # a bad --user is a usage error (exit 2), before reading anything
        return scanner._run(_report(args, scanner))
    finally:
        scanner.close()


def cmd_milter(args: argparse.Namespace) -> int:
    try:
        from .milter import run_milter
    except ImportError as exc:  # pymilter is an optional extra (it needs libmilter to build)
        _error(f"the milter needs pymilter and prometheus-client: pip install 'mailguard[milter]' ({exc})")
        return 2
    return run_milter(args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailguard", description="Spam and virus filtering for mail servers.")
    parser.add_argument("--version", action="version", version=f"mailguard {__version__}")
    parser.add_argument("--config", help="TOML configuration file (default: $MAILGUARD_CONFIG or built-in defaults)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log warnings and details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="scan messages (files or directories) and print each verdict and why")
    scan.add_argument("paths", nargs="+", metavar="PATH")
    scan.add_argument("--model", help="model directory (default: the shipped models/default)")
    scan.add_argument("--user", help="recipient whose thresholds and learned data apply")
    scan.add_argument("--json", action="store_true", help="one JSON object per message")
    scan.add_argument("--no-network", action="store_true", help="turn off every scorer that needs the network")
    scan.add_argument("--learn", action="store_true", help="run the learn phase (autolearn); off by default")
    scan.add_argument("--store", help="SQLite store file (default: $MAILGUARD_STORE or the XDG state dir)")
    scan.set_defaults(func=cmd_scan)

    for name, func, text in (
        ("train", cmd_train, "train a model from a labelled corpus"),
        ("eval", cmd_eval, "cross-validate on a labelled corpus and print quality metrics"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--labels", required=True, help="CSV with path,label[,fold], or a folder with ham/ and spam/")
        p.add_argument("--root", help="folder the CSV paths are relative to (default: the CSV's folder)")
        p.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
        p.set_defaults(func=func)
        if name == "train":
            p.add_argument("--exclude-fold", type=int, help="leave this fold out (to evaluate on it later)")
            p.add_argument("--out", required=True, help="model directory to write")
        else:
            p.add_argument("--folds", type=int, default=5)
            p.add_argument("--threshold", type=float, help="score threshold (default: the policy's required score)")
            p.add_argument("--json", action="store_true")
            p.add_argument("--scores", help="write path,label,score of every message to this CSV")

    doctor = sub.add_parser("doctor", help="check the store, the model and every enabled scorer's service")
    doctor.add_argument("--store", help="SQLite store file")
    doctor.set_defaults(func=cmd_doctor)

    user = sub.add_parser("user", help="show or set a user's spam thresholds")
    user.add_argument("action", choices=("show", "set"))
    user.add_argument("address")
    user.add_argument("--level", choices=sorted(LEVELS))
    for name in ("tag", "junk", "quarantine", "reject"):
        user.add_argument(f"--{name}", type=float, help=f"score for {name} (negative: turn it off)")
    user.add_argument("--store", help="SQLite store file")
    user.set_defaults(func=cmd_user)

    report = sub.add_parser(
        "report",
        help="record users' spam/ham reports (messages, Maildir, mbox, ARF) and learn them for the user at once",
    )
    label = report.add_mutually_exclusive_group(required=True)
    label.add_argument("--spam", dest="label", action="store_const", const="spam", help="the messages are spam")
    label.add_argument("--ham", dest="label", action="store_const", const="ham", help="the messages are not spam")
    report.add_argument("--user", required=True, help="who reports (canonicalised: case, +tag, [users] aliases)")
    report.add_argument("--source", help="where the reports come from, e.g. imapsieve (default: cli, or arf for feedback reports)")
    report.add_argument("--max-messages", type=int, help="read at most this many messages (default: [users] report_max_messages)")
    report.add_argument("--model", help="model directory (default: the shipped models/default)")
    report.add_argument("--store", help="SQLite store file (default: $MAILGUARD_STORE or the XDG state dir)")
    report.add_argument("paths", nargs="+", metavar="PATH", help="message file, Maildir, mbox file, directory, or - for standard input")
    report.set_defaults(func=cmd_report)

    milter = sub.add_parser("milter", help="run the Postfix milter daemon in the foreground ([milter] in the config)")
    # also accepted after the subcommand; SUPPRESS keeps a global --config from being reset
    milter.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file")
    milter.set_defaults(func=cmd_milter)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    if args.command == "eval" and args.folds < 2:
        parser.error("--folds must be at least 2")
    try:
        return int(args.func(args))
    except MailguardError as exc:
        _error(str(exc))
        return 2
    except ValueError as exc:
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
