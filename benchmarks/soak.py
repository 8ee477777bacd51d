"""Soak: one process scans a long stream of mail, learning as it goes, and shows whether its
memory and its store stay bounded.

    python benchmarks/soak.py [--corpora ../shared/corpora] [--count 200000] [--learn-every 10]
                              [--users 50] [--seconds-per-message 180] [--warmup 20000]

The SpamAssassin corpus is cycled with cheap mutations so that nothing repeats: every message
gets its own Subject suffix, From/envelope sender, Message-ID, client IP (one of
``--ips``) and a few body words, so fingerprints, reputation and rate keys keep growing. Every scan
autolearns (``learn=True``) and every ``--learn-every``-th message is also reported by one of
``--users`` rotating users (``Scanner.report``: queued, re-scanned, learned for that user).

Time is injected: the clock given to the Scanner and to the SQLite store advances
``--seconds-per-message`` per message (180 s: 200,000 messages span 417 days), so every TTL
(rate windows, 30-day fingerprints, 12-week reputation, 90-day learned digests, 180-day
reports) expires during the run and the store should level off. Nothing here depends on the
wall clock.

Every ``--every`` messages it prints messages/s, RSS, the store file's size (with its WAL)
and its live row counts. At the end: whether RSS grew less than 10% after ``--warmup``
messages (the target), and the store's growth per learned message before and after it levels
off. ``--trace N`` runs tracemalloc and prints the N source lines whose memory grew most
since the warm-up (slow: use it on a short run to find a growing cache).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from common import add_corpora_option

from mailguard.config import load_config
from mailguard.message.context import Envelope
from mailguard.scanner import Scanner
from mailguard.stores.sqlite import SqliteStore

START = 1_767_225_600.0  # 2026-01-01 UTC; any fixed start would do
WORDS = ("invoice meeting lottery winner garden holiday pharmacy mortgage update account paper "
         "review weekend offer crypto delivery parcel ticket dinner report budget quarterly").split()


class Clock:
    """Injected time: advanced by the stream, never read from the machine."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_corpus(corpora: Path) -> list[tuple[bytes, str]]:
    root = corpora / "spamassassin"
    with open(root / "folds.csv", newline="") as fh:
        return [((root / row["path"]).read_bytes(), row["label"]) for row in csv.DictReader(fh)]


_HEADER = re.compile(rb"^(Subject|From|Message-ID|Message-Id|To):[^\n]*\n(?:[ \t][^\n]*\n)*", re.I | re.M)


def mutate(raw: bytes, i: int, ips: int) -> tuple[bytes, Envelope]:
    """A new message from corpus message ``raw``: its own subject, sender, Message-ID, client
    IP and a few body words. Cheap byte surgery; the header block is kept otherwise (but for
    the mbox "From " line the corpus files start with, which would end the new header block)."""
    if raw.startswith(b"From "):
        raw = raw[raw.find(b"\n") + 1 :]
    sep = raw.find(b"\n\n")
    head, body = (raw[: sep + 1], raw[sep + 1 :]) if sep >= 0 else (raw + b"\n", b"")
    subject = b""
    match = re.search(rb"^Subject:([^\n]*)", head, re.I | re.M)
    if match:
        subject = match.group(1).strip()[:120]
    head = _HEADER.sub(b"", head)
    words = " ".join(WORDS[(i * k + 7) % len(WORDS)] for k in (3, 5, 11, 13))
    domain = f"d{i % 20011}.example"
    sender = f"s{i}@{domain}"
    new_head = (
        f"From: Sender {i} <{sender}>\nTo: rcpt@soak.example\nMessage-ID: <soak.{i}@{domain}>\n".encode()
        + b"Subject: " + subject + f" {WORDS[i % len(WORDS)]} {i}\n".encode()
    )
    raw = new_head + head + body + f"\n{words} ref {i}\n".encode()
    n = i % ips
    ip = f"{11 + n % 200}.{(n >> 8) & 255}.{n & 255}.{(n >> 16) % 250 + 1}"
    return raw, Envelope(client_ip=ip, helo=f"mx.{domain}", mail_from=sender, rcpt_to=("rcpt@soak.example",))


def store_stats(path: Path) -> tuple[float, dict[str, int]]:
    """File size in MB (with the WAL) and live-or-expired row counts per table."""
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()) / 1e6
    with sqlite3.connect(path, timeout=30) as db:
        rows = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("kv", "counters", "sets", "logs")}
    return size, rows


async def soak(args: argparse.Namespace, corpus: list[tuple[bytes, str]], work: Path) -> int:
    clock = Clock(START)
    config_path = work / "mailguard.toml"
    config_path.write_text(
        '[scanner]\nscorers = ["bayes", "reputation", "fingerprint", "behaviour", "feedback"]\nnetwork = false\n'
        f'[store]\npath = "{work}/store.sqlite3"\n'
    )
    config = load_config(config_path)
    store_path = work / "store.sqlite3"
    store = SqliteStore(store_path, clock=clock)
    scanner = Scanner(config, store=store, clock=clock)
    users = [f"user{k}@soak.example" for k in range(args.users)]
    started = time.perf_counter()
    warm_rss = warm_store = None
    warm_learned = 0
    learned = reported = 0
    checkpoints: list[tuple[int, float, float, int]] = []
    snapshot = None
    print(f"soak: {args.count} messages, report every {args.learn_every} by {args.users} users, "
          f"clock +{args.seconds_per_message:g} s per message ({args.count * args.seconds_per_message / 86400:.0f} days), store {store_path}", flush=True)
    print(f"{'messages':>9} {'msgs/s':>7} {'RSS MB':>7} {'store MB':>9} {'learned':>8}  rows (kv / counters / sets / logs)", flush=True)
    try:
        for i in range(args.count):
            clock.now = START + i * args.seconds_per_message
            raw, label = corpus[i % len(corpus)]
            raw, envelope = mutate(raw, i, args.ips)
            result = await scanner.scan(raw, envelope, learn=True)
            learned += result.learned is not None
            if args.learn_every and i % args.learn_every == 0:
                outcome = await scanner.report(raw, label, user=users[(i // args.learn_every) % len(users)], source="soak")
                reported += 1
                learned += bool(outcome.learned)
            done = i + 1
            if done == args.warmup:
                warm_rss, warm_store = rss_mb(), store_stats(store_path)[0]
                warm_learned = learned
                if args.trace:
                    snapshot = tracemalloc.take_snapshot()
            if done % args.every == 0 or done == args.count:
                size, rows = store_stats(store_path)
                rate = done / (time.perf_counter() - started)
                checkpoints.append((done, rss_mb(), size, learned))
                print(f"{done:>9} {rate:>7.1f} {rss_mb():>7.1f} {size:>9.1f} {learned:>8}  "
                      f"{rows['kv']} / {rows['counters']} / {rows['sets']} / {rows['logs']}", flush=True)
    finally:
        await scanner.aclose()
    wall = time.perf_counter() - started
    final_rss, final_store = checkpoints[-1][1], checkpoints[-1][2]
    print(f"done: {args.count} messages in {wall:.0f} s ({args.count / wall:.1f} messages/s); "
          f"{learned} learned (autolearn + reports), {reported} reports by {args.users} users")
    if warm_rss is None:
        print(f"no verdict on RSS: the run is shorter than --warmup {args.warmup}")
        return 0
    growth = (final_rss - warm_rss) / warm_rss
    print(f"RSS after warm-up ({args.warmup} messages) {warm_rss:.1f} MB, at the end {final_rss:.1f} MB: "
          f"{growth:+.1%} ({'met' if growth < 0.10 else 'NOT met'}: target below +10%)")
    learned_after = learned - warm_learned
    if learned_after:
        print(f"store {warm_store:.1f} MB after warm-up, {final_store:.1f} MB at the end: "
              f"{(final_store - warm_store) * 1e6 / learned_after:.0f} bytes per learned message after warm-up")
    half = [c for c in checkpoints if c[0] >= args.count // 2]
    if len(half) >= 2 and half[-1][3] > half[0][3]:
        per = (half[-1][2] - half[0][2]) * 1e6 / (half[-1][3] - half[0][3])
        print(f"second half of the run ({half[0][0]} to {half[-1][0]} messages, TTLs expiring): "
              f"{per:.0f} bytes of store per learned message, peak RSS {max(c[1] for c in checkpoints):.1f} MB")
    if snapshot is not None:
        top = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
        print(f"memory grown since the warm-up, top {args.trace} lines (tracemalloc):")
        for stat in top[: args.trace]:
            print(f"  {stat}")
    return 0 if growth < 0.10 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_option(parser)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--learn-every", type=int, default=10, help="report every Nth message (0: autolearn only)")
    parser.add_argument("--users", type=int, default=50, help="rotating reporting users")
    parser.add_argument("--ips", type=int, default=50_000, help="distinct client IPs cycled through")
    parser.add_argument("--seconds-per-message", type=float, default=180.0)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=10_000, help="print a line every N messages")
    parser.add_argument("--trace", type=int, default=0, help="tracemalloc: show the N lines that grew most")
    parser.add_argument("--workdir", help="where the store goes (default: a new temporary folder)")
    args = parser.parse_args()
    corpus = load_corpus(Path(args.corpora))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mg-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.trace:
        tracemalloc.start(1)
    return asyncio.run(soak(args, corpus, work))


if __name__ == "__main__":
    sys.exit(main())
