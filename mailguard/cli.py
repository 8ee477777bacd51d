"""Command line: ``mailguard scan|train|eval|retrain|model|user|report|doctor|milter``.

Errors about one input (an unreadable file, a bad CSV row) print one line on stderr and
the rest is still processed; the exit status is then 1. Usage and start-up errors
(bad config, missing model) exit 2. ``retrain`` exits 3 when the promotion gate refuses the
candidate (it is kept as a version, not put in service).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import dataclasses
import datetime
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .config import Config, StoreConfig, load_config
from .errors import MailguardError
from .message.addresses import canonical_address
from .pool import ScanPool, core_count
from .thresholds import LEVELS

# The scanner, the model and the report readers are imported by the commands that use them:
# with them, importing this module took half a second, which `scan --jobs` paid before it
# could start its workers (each of them imports the scanner anyway).
if TYPE_CHECKING:
    from .learning.datasets import Sample
    from .model import ModelBundle
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


# One file's outcome, ready to print: (the output line, the action), or (the error line, None).
Outcome = tuple[str, str | None]


def _outcome(path: Path, result: ScanResult | str, as_json: bool) -> Outcome:
    if isinstance(result, str):
        return f"{path}: {result}", None
    if as_json:
        return json.dumps({"path": str(path), **result.to_dict()}, ensure_ascii=False), result.verdict.action
    return _format_result(path, result), result.verdict.action


def _print_scans(args: argparse.Namespace, outcomes: Iterable[Outcome]) -> int:
    """Print each outcome in the order given, then the summary line."""
    status = 0
    counts: dict[str, int] = {}
    for line, action in outcomes:
        if action is None:
            _error(line)
            status = 1
            continue
        counts[action] = counts.get(action, 0) + 1
        print(line)
    if not args.json:
        summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing scanned"
        print(f"-- {sum(counts.values())} message(s): {summary}", file=sys.stderr)
    return status


def _read_message(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return exc.strerror or str(exc)


def _scan_here(args: argparse.Namespace, scanner: Scanner) -> Iterator[Outcome]:
    for path, problem in _iter_paths(args.paths):
        raw = problem or _read_message(path)
        result = raw if isinstance(raw, str) else scanner.scan_sync(raw, user=args.user, learn=args.learn)
        yield _outcome(path, result, args.json)


# Files go to the workers in batches, and come back as printable lines: the parent's share
# of the work per file (one pipe message each way, unpickling a result, formatting it) was
# 7% of the CPU of a two-worker run, on the core the workers need.
_BATCH = 8


async def _scan_batch(scanner: Scanner, paths: list[Path], user: str | None, learn: bool, as_json: bool) -> list[Outcome]:
    """A batch of files read, scanned and formatted in a worker process (``scan --jobs``).
    One file's failure is that file's error line, as in one process."""

    async def one(path: Path) -> Outcome:
        raw = _read_message(path)
        if isinstance(raw, str):
            return _outcome(path, raw, as_json)
        try:
            return _outcome(path, await scanner.scan(raw, user=user, learn=learn), as_json)
        except Exception as exc:  # this file only; the worker and the batch go on
            return _outcome(path, f"not scanned: {type(exc).__name__}: {exc}", as_json)

    return list(await asyncio.gather(*(one(path) for path in paths)))


def _scanner_for(args: argparse.Namespace) -> Scanner:
    """A worker's scanner for ``scan --jobs`` (runs in the worker process)."""
    from .scanner import Scanner

    return Scanner(_load_config(args))


def _scan_in_workers(args: argparse.Namespace, pool: ScanPool) -> Iterator[Outcome]:
    """Every worker busy, outcomes in input order: a bounded window of batches is in the
    workers' hands while the oldest is waited for."""
    window: collections.deque[tuple[list[Path], concurrent.futures.Future[list[Outcome]] | Outcome]] = collections.deque()

    def oldest() -> Iterator[Outcome]:
        paths, pending = window.popleft()
        if isinstance(pending, tuple):
            yield pending
            return
        try:
            yield from pending.result()
        except MailguardError as exc:  # its worker died: every file of the batch says so
            for path in paths:
                yield _outcome(path, f"not scanned: {exc}", args.json)

    def send(batch: list[Path]) -> None:
        if batch:
            window.append((batch, pool.submit(_scan_batch, batch, args.user, args.learn, args.json)))

    batch: list[Path] = []
    for path, problem in _iter_paths(args.paths):
        if problem is not None:  # keeps its place: the batch before it goes first
            send(batch)
            batch = []
            window.append(([path], _outcome(path, problem, args.json)))
        else:
            batch.append(path)
            if len(batch) == _BATCH:
                send(batch)
                batch = []
        while len(window) > 4 * pool.size:
            yield from oldest()
    send(batch)
    while window:
        yield from oldest()


def cmd_scan(args: argparse.Namespace) -> int:
    jobs = args.jobs or core_count()
    if jobs > 1:
        with ScanPool(functools.partial(_scanner_for, args), jobs) as pool:
            return _print_scans(args, _scan_in_workers(args, pool))
    from .scanner import Scanner

    scanner = Scanner(_load_config(args))
    try:
        return _print_scans(args, _scan_here(args, scanner))
    finally:
        scanner.close()


def cmd_train(args: argparse.Namespace) -> int:
    from .learning.datasets import load_corpus
    from .learning.train import train
    from .model import save_model

    config = _load_config(args)
    samples, errors = load_corpus(args.labels, args.root)
    if args.exclude_fold is not None:
        samples = [s for s in samples if s.fold != args.exclude_fold]
    for line in errors:
        _error(line)
    progress = _Progress(args.progress or sys.stderr.isatty())
    bundle, info, read_errors = train(samples, config=config, progress=progress)
    for line in read_errors:
        _error(line)
    info["source"] = {"labels": str(args.labels), "exclude_fold": args.exclude_fold}
    info["version"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = save_model(bundle, args.out, info)
    print(f"model written to {out}: {info['training_data']['ham']} ham, {info['training_data']['spam']} spam, {info['vocabulary']} weighted feature buckets")
    if args.seed_store:
        seeded = _seed_store(config, bundle, samples, progress)
        print(f"store seeded with {seeded} labelled messages (reputation, fingerprints)")
    return 1 if errors or read_errors else 0


def _seed_store(config: Config, bundle: ModelBundle, samples: list[Sample], progress: _Progress) -> int:
    """What `mailguard train` teaches the store in service: the corpus's senders and fingerprints."""
    from .learning.train import read_sample, seed
    from .scanner import Scanner

    labelled = []
    for sample in samples:
        try:
            labelled.append((read_sample(sample), sample.y))
        except OSError:
            continue  # already reported while training
    scanner = Scanner(config.replace(scanner=dataclasses.replace(config.scanner, network=False)), model=bundle)
    try:
        scanner._run(seed(scanner, labelled, progress))
    finally:
        scanner.close()
    return len(labelled)


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from .learning.datasets import load_corpus
    from .learning.evaluate import quality_metrics  # scipy.stats and scikit-learn: 2.5 s of imports
    from .learning.train import cross_validate

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
    from .scanner import Scanner

    config = _load_config(args)
    scanner = Scanner(config, scorers=[])
    try:
        return int(scanner._run(_user(args, scanner)))
    finally:
        scanner.close()


async def _user(args: argparse.Namespace, scanner: Scanner) -> int:
    """show | set thresholds, allow | block | unallow | unblock list entries; `show` prints
    the lists, then the thresholds in effect (after the shift the user's reports made)."""
    from .policy import canonical_user
    from .scorer import Services
    from .scorers.feedback import FeedbackScorer, ListFull, format_entry, parse_entry

    config = scanner.config
    user = canonical_user(args.address, config.users)
    section = config.scorers.get("feedback", {})
    lists = FeedbackScorer.from_config(section, Services(config, scanner.store, None)).lists
    if args.action in ("allow", "block", "unallow", "unblock"):
        if args.entry is None:
            raise ValueError(f"mailguard user {args.action} needs an ENTRY: an address or @domain")
        member = parse_entry(args.entry)
        kind = args.action.removeprefix("un")
        shown = format_entry(member)
        if args.action.startswith("un"):
            if not await lists.remove(user, kind, member):
                _error(f"{user}: {shown} is not on the {kind} list")
                return 1
            print(f"{user}: removed {shown} from the {kind} list")
            return 0
        try:
            added = await lists.add(user, kind, member)
        except ListFull as exc:
            _error(str(exc))
            return 1
        print(f"{user}: {'added' if added else 'already had'} {shown} {'to' if added else 'on'} the {kind} list")
        if "feedback" not in config.scanner.scorers:
            print('mailguard: note: the lists are only read when "feedback" is in [scanner] scorers', file=sys.stderr)
        return 0
    if args.entry is not None:
        raise ValueError("ENTRY goes with allow, block, unallow and unblock, not with " + args.action)
    policy = scanner.policy
    if args.action == "set":
        overrides = {k: getattr(args, k) for k in ("tag", "junk", "quarantine", "reject") if getattr(args, k) is not None}
        overrides = {k: (None if v < 0 else v) for k, v in overrides.items()}
        if args.level is not None or overrides or args.moves is not None or not args.reset_shift:
            await policy.set_user(user, level=args.level, thresholds=overrides, moves=args.moves)
        if args.reset_shift:
            await policy.reset_shift(user)
    if args.action == "show":
        found = await lists.get(user)
        for kind in ("allow", "block"):
            entries = " ".join(sorted(format_entry(m) for m in found[kind]))
            print(f"{user} {kind}: {entries or '(none)'}")
    thresholds = await policy.thresholds_for(user)
    _, moves = await policy.user_record(user)
    shift = await policy.shift_for(user)
    note = f" (moved {shift:+.2f} by reports)" if moves and shift else " (fixed)" if not moves else ""
    print(f"{user}: " + " ".join(f"{k}={v}" for k, v in thresholds.__dict__.items()) + note)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .scanner import Scanner

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
    from .reports.sources import arf_label, iter_messages

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
    from .reports.queue import check_source
    from .scanner import Scanner

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


def _reports_since(value: str) -> tuple[bool, float | None]:
    """``--reports``: ``all``, ``none``, or ``since=ISO-DATE`` (a bare date works too; UTC unless it says)."""
    if value in ("all", "none"):
        return value == "all", None
    text = value.removeprefix("since=")
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--reports takes all, none or since=ISO-DATE, not {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return True, when.timestamp()


def cmd_retrain(args: argparse.Namespace) -> int:
    from .learning.datasets import load_corpus
    from .learning.retrain import EXIT_REFUSED, RetrainSettings, format_comparison, retrain

    config = _load_config(args)
    use_reports, since = _reports_since(args.reports)
    settings = RetrainSettings(
        holdout_fold=args.holdout_fold,
        use_reports=use_reports,
        since=since,
        holdout_reports=args.holdout_reports,
        max_user_share=args.max_user_share,
        tolerance=args.tolerance,
        force=args.force,
    )
    samples, errors = load_corpus(args.base, args.root)
    for line in errors:
        _error(line)
    progress = _Progress(args.progress or sys.stderr.isatty())
    result = retrain(samples, out=args.out, config=config, settings=settings, labels_source=str(args.base), progress=progress)
    for line in result.errors:
        _error(line)
    print(format_comparison(result))
    if not result.promoted:
        return EXIT_REFUSED
    if Path(config.model.path).resolve() != Path(args.out).resolve():
        print(f"note: the configured model is {config.model.path}; set [model] path = \"{args.out}\" to use {args.out}", file=sys.stderr)
    return 1 if errors or result.errors else 0


def cmd_model(args: argparse.Namespace) -> int:
    from .model import history, is_versioned, list_versions, load_model, promote, rollback

    root = Path(_load_config(args).model.path)
    if args.action == "rollback":
        old, new = rollback(root, note="mailguard model rollback")
        print(f"{root}: {new} is in service again (was {old}); running milters load it on SIGHUP")
        return 0
    if args.action == "promote":
        previous = promote(root, args.version, note="mailguard model promote")
        print(f"{root}: {args.version} is in service (was {previous or 'none'}); running milters load it on SIGHUP")
        return 0
    if not is_versioned(root) and (root / "manifest.json").exists():
        print(f"{root}: a single unversioned model, version {load_model(root).version}")
        return 0
    versions = list_versions(root)
    if not versions:
        raise MailguardError(f"{root}: no model versions here")
    promoted = {e.version for e in history(root) if e.action == "promote"}
    for v in versions:
        m = v.manifest or {}
        gate = m.get("gate") or {}
        status = {"promoted": "gate passed", "refused": "gate REFUSED", "forced": "gate forced"}.get(
            str(gate.get("decision")), "imported" if "imported_from" in m else "-"
        )
        data = m.get("training_data") or {}
        line = (
            f"{'*' if v.current else ' '} {v.name:<8} {str(m.get('created', '?')):<20} {status:<12}"
            f" {'was in service' if v.name in promoted else 'never in service':<16} {data.get('ham', '?')} ham, {data.get('spam', '?')} spam"
        )
        if v.problem:
            line += f"  BROKEN: {v.problem}"
        elif gate.get("decision") in ("refused", "forced"):
            line += "  (" + "; ".join(str(r) for r in gate.get("failed", [])) + ")"
        print(line)
    return 0


def cmd_milter(args: argparse.Namespace) -> int:
    try:
        from .milter.daemon import run_milter
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
    scan.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="scanner processes (default 1; 0: one per core); the output stays in input order",
    )
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
            p.add_argument(
                "--no-seed-store", dest="seed_store", action="store_false",
                help="do not teach the configured store the corpus's senders and fingerprints",
            )
        else:
            p.add_argument("--folds", type=int, default=5)
            p.add_argument("--threshold", type=float, help="score threshold (default: the policy's required score)")
            p.add_argument("--json", action="store_true")
            p.add_argument("--scores", help="write path,label,score of every message to this CSV")

    doctor = sub.add_parser("doctor", help="check the store, the model and every enabled scorer's service")
    doctor.add_argument("--store", help="SQLite store file")
    doctor.set_defaults(func=cmd_doctor)

    user = sub.add_parser("user", help="show or set a user's spam thresholds and sender allow/block lists")
    user.add_argument("action", choices=("show", "set", "allow", "block", "unallow", "unblock"))
    user.add_argument("address")
    user.add_argument("entry", nargs="?", help="allow/block/unallow/unblock: a sender address or @domain (subdomains too)")
    user.add_argument("--level", choices=sorted(LEVELS))
    for name in ("tag", "junk", "quarantine", "reject"):
        user.add_argument(f"--{name}", type=float, help=f"score for {name} (negative: turn it off)")
    moving = user.add_mutually_exclusive_group()
    moving.add_argument("--fixed", dest="moves", action="store_const", const=False, help="set: the user's reports do not move these thresholds")
    moving.add_argument("--moving", dest="moves", action="store_const", const=True, help="set: the user's reports move them (the default)")
    user.add_argument("--reset-shift", action="store_true", help="set: forget how far the user's reports moved the thresholds")
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

    retrain = sub.add_parser(
        "retrain", help="train a candidate on a corpus plus users' reports; promote it only if it is no worse (exit 3 if refused)"
    )
    retrain.add_argument("--base", required=True, help="CSV with path,label[,fold], or a folder with ham/ and spam/")
    retrain.add_argument("--root", help="folder the CSV paths are relative to (default: the CSV's folder)")
    retrain.add_argument("--reports", default="all", help="reports from the store: all (default), none, or since=ISO-DATE")
    retrain.add_argument("--holdout-fold", type=int, help="base fold held out for evaluation (default 0)")
    retrain.add_argument("--holdout-reports", type=float, default=0.2, help="newest share of reports held out (default 0.2)")
    retrain.add_argument("--max-user-share", type=float, default=0.1, help="most of the report data one user may count (default 0.1)")
    retrain.add_argument("--tolerance", type=float, default=0.0, help="catch rate the candidate may lose, e.g. 0.01 (default 0)")
    retrain.add_argument("--out", required=True, help="versioned model directory to add the candidate to")
    retrain.add_argument("--force", action="store_true", help="promote even if the gate refuses (recorded in the manifest)")
    retrain.add_argument("--model", help="the model in service to compare with (default: the configured model)")
    retrain.add_argument("--store", help="SQLite store file with the reports (default: the configured store)")
    retrain.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    retrain.set_defaults(func=cmd_retrain)

    model = sub.add_parser("model", help="list the versions of a model directory, roll back, or promote a version")
    model_sub = model.add_subparsers(dest="action", required=True)
    for action, text in (
        ("list", "list versions: * marks the one in service"),
        ("rollback", "put the previously promoted version back in service"),
        ("promote", "put VERSION in service (its hashes are checked first)"),
    ):
        p = model_sub.add_parser(action, help=text)
        if action == "promote":
            p.add_argument("version", metavar="VERSION")
        p.add_argument("--model", help="model directory (default: the configured model)")
    model.set_defaults(func=cmd_model)

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
    if args.command == "scan" and args.jobs < 0:
        parser.error("--jobs must be 0 (one per core) or more")
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
