"""Replay a corpus TREC style: scan each message, then feed back its label at once.

    python benchmarks/replay.py [--corpora DIR] [--corpus spamassassin|trec06p|trec06c-zh]
        [--seed 0] [--warmup-pct 5] [--warmup-min 50] [--mode auto|train-everything|train-on-error]
        [--retrain-every N] [--store sqlite|memory] [--limit N] [--no-bogofilter] [--no-plot]

``--corpus trec06p`` (37,821 messages; ``--corpora "$(../shared/corpora/unpack)"``) replays
the corpus in its delivery order and starts as a new site would: mailguard with the shipped
model and an empty store, bogofilter with an empty word list, nothing fitted on the stream.
``--corpus trec06c-zh`` (12,246 Chinese messages) has no delivery order: it is replayed the
same way in a fixed shuffled order (``--seed``), and the run also prints how fast each filter
adapts: errors over the first 100, 500 and 1,000 messages, and the error rate after the
first 500 (compare it with the site-trained 5-fold rate, ``quality.py --corpus trec06c-zh``).
The corpus carries no dates, so the scanner's clock advances one minute per message.

The SpamAssassin corpus (the default) is what the shipped model was trained on, so it keeps
a warm-up protocol: its 6,046 messages are put in the order they were written (the Date
header; a Date that does not parse, or lies more than a week from the message's own newest
Received hop, gives way to that hop's date; a message with neither keeps its place in the
file order), and both filters start from the first ``--warmup-pct`` of the stream (default
5%) extended until it holds ``--warmup-min`` messages of each class (default 50: the
corpus's spam starts a year before its ham): mailguard fits its model on it (exactly as
``mailguard train`` would, and seeds the store's reputation and fingerprints with it),
bogofilter registers it; those messages are not counted. bogofilter's scores from a truly
empty start over the whole stream are reported as well.

Each filter then sees the stream once. mailguard learns every message through
``Scanner.learn(raw, label, source="report")``, globally, into a fresh store (SQLite in a
temporary directory by default), under a clock that follows the stream (each message's
date), as the reputation scorer's rule for replayed mail asks; its text classifier learns
online in its default regime (``--mode auto``: on a script it has learned few messages of,
only what it got wrong or nearly, its thick threshold; every message otherwise) or in either
plain one (``train-everything``, ``train-on-error``). bogofilter registers every message, or
with ``--mode train-on-error`` those it got wrong.
``--retrain-every N`` adds offline retrainings (every N scored messages, on all of the
stream so far, as a nightly ``mailguard train`` would).

Prints 1-AUC, TREC's lam%, false positives and negatives at each filter's own default
threshold (mailguard: medium level; bogofilter: its spam_cutoff), how many of those false
positives repeat a message (same sender and subject) the stream labelled spam before, the
errors in each tenth of the stream and messages per second; writes out/replay.json,
out/replay_scores.csv and the learning curve out/replay.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import email.utils
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from scipy.special import expit, logit

from mailguard.config import Config, StoreConfig, default_model_dir
from mailguard.learning.datasets import Sample, load_labels
from mailguard.learning.evaluate import quality_metrics
from mailguard.message import MessageContext
from mailguard.model import ModelBundle, load_model
from mailguard.policy import LEVELS
from mailguard.scanner import Scanner
from mailguard.classifier.features import text_features
from mailguard.stores import MemoryStore, SqliteStore
from mailguard.learning.train import fit_model, seed

from common import add_corpora_option, bogofilter_cutoff, corpus_labels  # benchmarks/common.py, beside this file

MODES = {"auto": "auto", "train-everything": "everything", "train-on-error": "on-error"}  # --mode -> [scorers.bayes] train
PLAUSIBLE = timedelta(days=7)  # how far a Date header may be from the newest Received hop's date
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # a message bigger than this is cut before bogofilter sees it


@dataclasses.dataclass
class Message:
    sample: Sample
    raw: bytes
    when: datetime | None
    source: str  # "date" | "received" | "file order"

    @property
    def y(self) -> int:
        return self.sample.y


# -- ordering -------------------------------------------------------------------------------


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)  # "-0000": UTC, unknown zone


def written_at(ctx: MessageContext) -> tuple[datetime | None, str]:
    """When the message was written: its Date header, unless that is unreadable or more than a
    week from the date our newest Received hop stamped (spam forges Dates, and some 2002 mail
    says year 102); then that hop's date; else None."""
    date = _parse_date(ctx.header("date"))
    hops = ctx.received
    received = hops[0].date if hops else None
    if received is not None and received.tzinfo is None:
        received = received.replace(tzinfo=timezone.utc)
    if date is not None and (received is None or abs(date - received) <= PLAUSIBLE):
        return date, "date"
    if received is not None:
        return received, "received"
    return None, "file order"


def chronological(samples: list[Sample], config: Config) -> list[Message]:
    """The samples in the order they were written. A message with no usable date takes the
    date of the message before it in the file order (the corpus folders are numbered in
    arrival order), or of the first dated one after it, and stays right behind that message."""
    messages = []
    for sample in samples:
        raw = sample.path.read_bytes()
        when, source = written_at(MessageContext(raw, limits=config.limits))
        messages.append(Message(sample, raw, when, source))
    keys: list[tuple[datetime, int]] = []
    first = next((m.when for m in messages if m.when is not None), datetime(1970, 1, 1, tzinfo=timezone.utc))
    last = first
    for i, m in enumerate(messages):
        if m.when is not None:
            last = m.when
        keys.append((m.when if m.when is not None else last, i))
    order = sorted(range(len(messages)), key=lambda i: keys[i])
    return [messages[i] for i in order]


def delivery_order(samples: list[Sample], config: Config) -> list[Message]:
    """The samples as listed (trec06p's folds.csv is its delivery order), each with its date
    for the scanner's clock."""
    messages = []
    for sample in samples:
        raw = sample.path.read_bytes()
        when, source = written_at(MessageContext(raw, limits=config.limits))
        messages.append(Message(sample, raw, when, source))
    return messages


def shuffled(samples: list[Sample], seed: int) -> list[Message]:
    """The samples in a fixed random order, for a corpus with no delivery order. Undated
    messages get a clock one minute apart, so what is learned is seen by the next scan."""
    order = np.random.default_rng(seed).permutation(len(samples))
    start = datetime(2005, 1, 1, tzinfo=timezone.utc)
    return [Message(samples[i], samples[i].path.read_bytes(), start + timedelta(minutes=n), "shuffled") for n, i in enumerate(order)]


def adaptation(y: np.ndarray, scores: np.ndarray, threshold: float, after: int = 500) -> dict:
    """How fast a filter that starts new learns a site's mail: errors at its default threshold
    over the first 100, 500 and 1,000 messages, and its error rate over the rest after ``after``."""
    errors = (scores >= threshold) != (y == 1)
    first = {str(n): int(errors[:n].sum()) for n in (100, 500, 1000) if n <= len(y)}
    rest = errors[after:]
    return {"errors_in_first": first, "error_rate_after": float(rest.mean()) if len(rest) else float("nan"), "after": after}


def warmup_length(y: np.ndarray, pct: float, min_each: int) -> int:
    """The shortest prefix that is ``pct`` percent of the stream and holds ``min_each`` ham and
    ``min_each`` spam: a model fitted on one class alone says nothing (the corpus's first
    600 messages are 2001-2002 spam with 4 ham among them)."""
    need = max(1, round(len(y) * pct / 100))
    for label in (0, 1):
        where = np.flatnonzero(y == label)
        need = max(need, int(where[min_each - 1]) + 1 if len(where) >= min_each else len(y))
    return need


# -- mailguard ------------------------------------------------------------------------------


def offline_config() -> Config:
    """The default scorers (bayes, reputation, fingerprint, behaviour), network off."""
    config = Config()
    return config.replace(scanner=dataclasses.replace(config.scanner, network=False))


def fit_on(messages: list[Message], config: Config) -> ModelBundle:
    """What ``mailguard train`` fits on these labelled messages: classifier and combiner."""
    ids = [text_features(MessageContext(m.raw, limits=config.limits)) for m in messages]
    y = np.array([m.y for m in messages])
    return fit_model(ids, y, raws=[m.raw for m in messages], config=config.replace(store=StoreConfig(backend="memory")))


def replay_mailguard(
    stream: list[Message], warm: int, mode: str, store_kind: str, workdir: Path, retrain_every: int = 0, shipped: ModelBundle | None = None
) -> dict:
    """Fit on ``stream[:warm]``, then scan and learn each later message in turn. With
    ``retrain_every``, every that many scored messages the model is fitted again on all
    of the stream so far and a fresh store is seeded with it (an offline retraining; the
    learned deltas it replaces are part of its training data). With ``shipped`` (and no
    warm-up), start as a new site would: that model and an empty store."""
    config = offline_config()
    config = config.replace(scorers={**config.scorers, "bayes": {"train": MODES[mode]}})
    threshold = LEVELS["medium"].required
    starts = list(range(warm, len(stream), retrain_every)) if retrain_every else [warm]
    scores = np.zeros(len(stream) - warm)
    per_message = np.zeros(len(stream) - warm)  # seconds to scan and learn each message
    training = scan_time = learn_time = 0.0
    learned = 0
    vocabulary: list[int] = []
    # "now" for the scanner follows the stream (offline replay keeps the messages' own time)
    stream_clock = [max((m.when.timestamp() for m in stream[:warm] if m.when is not None), default=0.0)]

    async def run(scanner: Scanner, begin: int, end: int) -> None:
        nonlocal scan_time, learn_time, learned
        for n in range(begin, end):
            m = stream[n]
            if m.when is not None:  # the stream's clock: what is learned now is seen by the next scan
                stream_clock[0] = max(stream_clock[0], m.when.timestamp())
            t0 = time.perf_counter()
            ctx = scanner.context(m.raw)  # parsed once: the label follows the scan at once (TREC's immediate feedback)
            result = await scanner.scan(ctx)
            t1 = time.perf_counter()
            scores[n - warm] = result.score
            # every label is handed over; in train-on-error mode the classifier itself skips
            # what it got right by its margin (a thick threshold), as it would in service
            learned += await scanner.learn(ctx, "spam" if m.y else "ham", source="report")
            learn_time += time.perf_counter() - t1
            scan_time += t1 - t0
            per_message[n - warm] = time.perf_counter() - t0
            if (n - warm + 1) % 500 == 0:
                print(f"  mailguard: {n - warm + 1} of {len(stream) - warm}", file=sys.stderr, flush=True)

    for segment, (begin, end) in enumerate(zip(starts, starts[1:] + [len(stream)])):
        started = time.perf_counter()
        bundle = shipped if shipped is not None and begin == 0 else fit_on(stream[:begin], config)
        vocabulary.append(int((bundle.bayes.weights_ != 0).sum()))
        store = SqliteStore(workdir / f"replay-{segment}.sqlite3") if store_kind == "sqlite" else MemoryStore()
        scanner = Scanner(config, store=store, model=bundle, clock=lambda: stream_clock[0])
        try:
            asyncio.run(seed(scanner, [(m.raw, m.y) for m in stream[:begin]]))
            training += time.perf_counter() - started
            asyncio.run(run(scanner, begin, end))
        finally:
            scanner.close()
    return {
        "scores": scores,
        "threshold": threshold,
        "trainings": len(starts),
        "training_seconds": training,
        "scan_seconds": scan_time,
        "learn_seconds": learn_time,
        "scan_learn_ms_p50": float(np.percentile(per_message, 50) * 1e3),
        "scan_learn_ms_p99": float(np.percentile(per_message, 99) * 1e3),
        "learned": learned,
        "vocabulary": vocabulary,
    }


# -- bogofilter -----------------------------------------------------------------------------



def replay_bogofilter(stream: list[Message], warm: int, mode: str, db: Path, cutoff: float) -> dict:
    """Every message, from an empty database: score it (-T, message on stdin), then register it
    (-s/-n), always during the warm-up and per ``mode`` after it. Before anything is
    registered bogofilter has no word list; those messages get its neutral 0.5."""
    scores = np.zeros(len(stream))
    scan_time = learn_time = 0.0
    learned = 0
    for n, m in enumerate(stream):
        raw = m.raw[:MAX_MESSAGE_BYTES]
        t0 = time.perf_counter()
        if learned == 0:
            scores[n] = 0.5
        else:
            proc = subprocess.run(["bogofilter", "-d", str(db), "-T"], input=raw, capture_output=True)
            if proc.returncode == 3 or not proc.stdout.split():  # 0 spam, 1 ham, 2 unsure, 3 error
                raise RuntimeError(f"bogofilter failed on {m.sample.path}: {proc.stderr[:500]!r}")
            scores[n] = float(proc.stdout.split()[-1])
        t1 = time.perf_counter()
        if n < warm or mode != "train-on-error" or (scores[n] >= cutoff) != bool(m.y):
            subprocess.run(["bogofilter", "-d", str(db), "-s" if m.y else "-n"], input=raw, check=True, capture_output=True)
            learned += 1
        learn_time += time.perf_counter() - t1
        scan_time += t1 - t0
    return {"scores": scores, "threshold": cutoff, "scan_seconds": scan_time, "learn_seconds": learn_time, "learned": learned}


# -- reporting ------------------------------------------------------------------------------


def lam_pct(fp: int, ham: int, fn: int, spam: int) -> float:
    """TREC's logistic average misclassification, with its +0.5 smoothing of zero counts."""
    hm = (fp + 0.5) / (ham + 0.5)
    sm = (fn + 0.5) / (spam + 0.5)
    return float(100.0 * expit((logit(hm) + logit(sm)) / 2.0))


def summarise(y: np.ndarray, scores: np.ndarray, threshold: float, seconds: float) -> dict:
    """Whole-stream metrics at the filter's own threshold, and errors per tenth of the stream."""
    m = quality_metrics(y, scores, threshold)
    errors = (scores >= threshold) != (y == 1)
    tenths = [int(part.sum()) for part in np.array_split(errors, 10)]
    return {
        "messages": int(len(y)),
        "one_minus_auc_pct": m["one_minus_auc_pct"],
        "lam_pct": lam_pct(m["false_positives"], m["ham"], m["false_negatives"], m["spam"]),
        "threshold": threshold,
        "false_positives": m["false_positives"],
        "false_negatives": m["false_negatives"],
        "errors": m["false_positives"] + m["false_negatives"],
        "errors_per_tenth": tenths,
        "catch_at_zero_fp": m["catch_at_zero_fp"],
        "messages_per_second": len(y) / seconds if seconds else float("nan"),
        "cumulative_errors": np.cumsum(errors).tolist(),
    }


def sender_and_subject(raw: bytes, config: Config) -> tuple[str, str]:
    """What makes two messages the same notice: the From address and the Subject, case and
    spacing aside."""
    ctx = MessageContext(raw, limits=config.limits)
    address = email.utils.parseaddr(ctx.header("from"))[1].lower()
    return address, " ".join(ctx.subject.split()).casefold()


def contradicted(
    stream: list[Message], warm: int, y: np.ndarray, scores: np.ndarray, threshold: float, config: Config,
    keys: list[tuple[str, str]] | None = None,
) -> list[dict]:
    """The false positives that repeat a message the stream itself labelled spam earlier
    (same sender, same subject): ham that a filter learning every label is taught to flag.
    trec06p's gold standard holds such pairs (an identical notice labelled spam, then ham,
    one message apart). ``keys``: the stream's keys found so far, shared between the filters
    of one run so each message is parsed for it once."""
    false_positives = np.flatnonzero((scores >= threshold) & (y == 0))
    if not len(false_positives):
        return []
    keys = [] if keys is None else keys
    keys += [sender_and_subject(m.raw, config) for m in stream[len(keys) : warm + int(false_positives[-1]) + 1]]
    spam_at: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(keys):
        if stream[i].y == 1 and key[0]:
            spam_at.setdefault(key, []).append(i)
    found: list[dict] = []
    for n in map(int, false_positives):
        message = stream[warm + n]
        before = sum(1 for i in spam_at.get(keys[warm + n], []) if i < warm + n)
        if before:
            path = f"{message.sample.path.parent.name}/{message.sample.path.name}"
            found.append({"path": path, "score": float(scores[n]), "labelled_spam_before": before})
    return found


def line(name: str, s: dict) -> str:
    return (
        f"| {name} | {s['messages']} | {s['one_minus_auc_pct']:.3f}% | {s['lam_pct']:.3f}% | {s['false_positives']} FP + "
        f"{s['false_negatives']} FN = {s['errors']} (at {s['threshold']:g}) | {' '.join(map(str, s['errors_per_tenth']))} "
        f"| {s['messages_per_second']:.0f} |"
    )


def plot(curves: dict[str, list[int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, cumulative in curves.items():
        ax.plot(np.arange(1, len(cumulative) + 1), cumulative, label=name)
    ax.set_xlabel("messages scored, in the order they were written")
    ax.set_ylabel("cumulative errors (FP + FN) at the default threshold")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_option(parser)
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--warmup-pct", type=float, default=5.0, help="first part of the stream both filters start from")
    parser.add_argument("--warmup-min", type=int, default=50, help="the warm-up is extended until it holds this many of each class")
    parser.add_argument(
        "--corpus", choices=("spamassassin", "trec06p", "trec06c-zh"), default="spamassassin",
        help="trec06p: delivery order, trec06c-zh: shuffled; both started as a new site would (shipped model, empty store; bogofilter empty)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the fixed order of a corpus with no delivery order (trec06c-zh)")
    parser.add_argument("--mode", choices=list(MODES), default="auto")
    parser.add_argument("--retrain-every", type=int, default=0, help="mailguard: fit the model again on the stream so far every N scored messages")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--limit", type=int, default=0, help="only the first N messages of the chronological stream")
    parser.add_argument("--no-bogofilter", action="store_true")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    labels = corpus_labels(args.corpora, args.corpus)
    if labels is None:
        return 2
    new_site = args.corpus != "spamassassin"  # the shipped model has seen the SpamAssassin corpus only
    if not 0 < args.warmup_pct < 100:
        parser.error("--warmup-pct must be between 0 and 100")
    if args.warmup_min < 1 or args.retrain_every < 0 or args.limit < 0:
        parser.error("--warmup-min must be at least 1; --retrain-every and --limit must not be negative")
    samples, errors = load_labels(labels)
    if errors:
        print("\n".join(errors), file=sys.stderr)
    if args.corpus == "trec06c-zh":
        stream = shuffled(samples, args.seed)
    elif new_site:
        stream = delivery_order(samples, offline_config())
    else:
        stream = chronological(samples, offline_config())
    if args.limit:
        stream = stream[: args.limit]
    y_all = np.array([m.y for m in stream])
    warm = 0 if new_site else warmup_length(y_all, args.warmup_pct, args.warmup_min)
    if not new_site and warm >= len(stream):
        print(f"the stream never holds {args.warmup_min} messages of each class", file=sys.stderr)
        return 2
    sources = {s: sum(m.source == s for m in stream) for s in ("date", "received", "file order")}
    y = y_all[warm:]
    dated = [m.when for m in stream if m.when is not None]
    if new_site:
        print(
            f"{len(stream)} messages of {args.corpus} ({int((y_all == 0).sum())} ham, {int(y_all.sum())} spam) "
            f"{'in a shuffled order (seed %d)' % args.seed if args.corpus == 'trec06c-zh' else 'in delivery order'}; "
            f"mailguard starts from the shipped model and an empty store, bogofilter from an empty word list; "
            f"{args.mode}; mailguard store: {args.store}\n"
        )
    else:
        print(
            f"{len(stream)} messages ({int((y_all == 0).sum())} ham, {int(y_all.sum())} spam) in the order written, "
            f"{min(dated):%Y-%m-%d} to {max(dated):%Y-%m-%d}: {sources['date']} by their Date header, "
            f"{sources['received']} by their newest Received date (Date unreadable or more than a week off), "
            f"{sources['file order']} by file order"
        )
        print(
            f"both filters start from the first {warm} ({warm / len(stream) * 100:.1f}%: {int((y_all[:warm] == 0).sum())} ham, "
            f"{int(y_all[:warm].sum())} spam, up to {stream[warm - 1].when:%Y-%m-%d}); {len(y)} scored; {args.mode}; "
            f"mailguard store: {args.store}\n"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "corpus": str(labels),
        "messages": len(stream),
        "ordered_by": sources,
        "warmup_messages": warm,
        "warmup_rule": f"at least {args.warmup_pct:g}% of the stream and {args.warmup_min} of each class",
        "mode": args.mode,
        "seed": args.seed if args.corpus == "trec06c-zh" else None,
        "store": args.store,
        "retrain_every": args.retrain_every,
        "filters": {},
    }
    header = "| filter | scored | 1-AUC | lam% | errors at its default threshold | errors per tenth of the stream | msg/s |\n|---|---|---|---|---|---|---|"
    rows = []
    curves: dict[str, list[int]] = {}
    sender_keys: list[tuple[str, str]] = []  # `contradicted`'s, filled once for both filters
    with tempfile.TemporaryDirectory(prefix="mg-replay-") as tmp:
        shipped = load_model(default_model_dir()) if new_site else None
        ours = replay_mailguard(stream, warm, args.mode, args.store, Path(tmp), args.retrain_every, shipped)
        s = summarise(y, ours["scores"], ours["threshold"], ours["scan_seconds"] + ours["learn_seconds"])
        s["adaptation"] = adaptation(y, ours["scores"], ours["threshold"])
        s["false_positives_labelled_spam_before"] = contradicted(stream, warm, y, ours["scores"], ours["threshold"], offline_config(), sender_keys)
        s.update({k: ours[k] for k in ("trainings", "training_seconds", "scan_seconds", "learn_seconds", "scan_learn_ms_p50", "scan_learn_ms_p99", "learned", "vocabulary")})
        report["filters"]["mailguard"] = s
        rows.append(line("mailguard (medium level)" + (f", retrained every {args.retrain_every}" if args.retrain_every else ""), s))
        curves["mailguard"] = s["cumulative_errors"]
        bogo = None
        if args.no_bogofilter:
            pass
        elif shutil.which("bogofilter") is None:
            rows.append("| bogofilter | not installed (apt-get install bogofilter) | | | | | |")
        else:
            version = subprocess.run(["bogofilter", "-V"], capture_output=True, text=True).stdout.split("\n")[0]
            bogo = replay_bogofilter(stream, warm, args.mode, Path(tmp) / "bogofilter", bogofilter_cutoff())
            per_message = (bogo["scan_seconds"] + bogo["learn_seconds"]) / len(stream)
            s = summarise(y, bogo["scores"][warm:], bogo["threshold"], per_message * len(y))
            s.update({"version": version, "learned": bogo["learned"]})
            s["adaptation"] = adaptation(y, bogo["scores"][warm:], bogo["threshold"])
            s["false_positives_labelled_spam_before"] = contradicted(stream, warm, y, bogo["scores"][warm:], bogo["threshold"], offline_config(), sender_keys)
            report["filters"]["bogofilter"] = s
            rows.append(line(f"{version} (spam_cutoff)", s))
            curves["bogofilter"] = s["cumulative_errors"]
            empty = summarise(y_all, bogo["scores"], bogo["threshold"], per_message * len(stream))
            report["filters"]["bogofilter_from_empty"] = empty
            rows.append(line("bogofilter from empty, whole stream", empty))
    print(header)
    print("\n".join(rows))
    if new_site:
        print("\nadapting to the site, errors at each filter's default threshold:")
        for name, f in report["filters"].items():
            if "adaptation" in f:
                a = f["adaptation"]
                firsts = ", ".join(f"{v} in the first {k}" for k, v in a["errors_in_first"].items())
                print(f"  {name}: {firsts}; error rate after the first {a['after']}: {a['error_rate_after'] * 100:.3f}%")
    print("\nfalse positives that repeat a message (same sender and subject) the stream labelled spam before:")
    for name, f in report["filters"].items():
        if "false_positives_labelled_spam_before" in f:
            same = f["false_positives_labelled_spam_before"]
            listed = "; ".join(f"{c['path']} at {c['score']:.2f} ({c['labelled_spam_before']} before)" for c in same)
            print(f"  {name}: {len(same)} of {f['false_positives']}" + (f": {listed}" if listed else ""))
    m = report["filters"]["mailguard"]
    print(
        f"\nmailguard: {m['trainings']} offline training(s) and store seeding, {m['training_seconds']:.1f} s in all "
        f"(vocabulary {', '.join(map(str, m['vocabulary']))}); "
        f"scan {m['scan_seconds'] / len(y) * 1e3:.2f} ms and learn {m['learn_seconds'] / len(y) * 1e3:.2f} ms per message "
        f"on average (scan + learn p50 {m['scan_learn_ms_p50']:.2f} ms, p99 {m['scan_learn_ms_p99']:.2f} ms), "
        f"{m['learned']} messages learned"
    )
    if bogo is not None:
        print(f"bogofilter: one process per score and per registration (process start included), {bogo['learned']} messages registered")
    with open(out / "replay_scores.csv", "w", encoding="utf-8") as fh:
        fh.write("position,path,label,written,ordered_by,mailguard,bogofilter\n")
        for n, msg in enumerate(stream):
            ours_score = f"{ours['scores'][n - warm]:.6f}" if n >= warm else ""
            bogo_score = f"{bogo['scores'][n]:.6f}" if bogo is not None else ""
            when = msg.when.isoformat() if msg.when else ""
            fh.write(f"{n},{msg.sample.path.parent.name}/{msg.sample.path.name},{msg.sample.label},{when},{msg.source},{ours_score},{bogo_score}\n")
    summary = {k: v for k, v in report.items() if k != "filters"}
    summary["filters"] = {name: {k: v for k, v in f.items() if k != "cumulative_errors"} for name, f in report["filters"].items()}
    (out / "replay.json").write_text(json.dumps(summary, indent=1) + "\n")
    written = [out / "replay.json", out / "replay_scores.csv"]
    if not args.no_plot:
        plot(curves, out / "replay.png", f"Chronological replay, {args.mode}, after a {warm}-message warm-up ({len(y)} scored)")
        written.append(out / "replay.png")
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
