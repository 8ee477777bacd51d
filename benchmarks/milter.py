"""Milter throughput and latency through a real Postfix on this machine, and proof that no
message is lost: 8 concurrent SMTP clients send the SpamAssassin corpus through a private
Postfix (mailguard.testing.PostfixInstance) with ``mailguard milter`` as a subprocess.

    python benchmarks/milter.py [--corpora ../shared/corpora] [--limit N] [--clients 8] [--workers N]

Every message gets one recipient. 550 counts as rejected; any 4xx is retried (after a
short pause) until the message is accepted or rejected; 250 counts as accepted, and the
Maildir is counted once the queue is empty. lost = sent - (delivered + rejected) must be
0. Scan latency p50/p99 comes from the milter's own JSON log line per message (the time
from end of message to its reply); the SMTP DATA-to-reply time is measured by the clients,
with and without the milter (a baseline run on the first --baseline messages).
Needs root, Debian's postfix and pymilter (``pip install 'mailguard[milter]'``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mailguard.testing.system import free_port
from mailguard.testing import PostfixInstance

from common import drop_smtp  # benchmarks/common.py, beside this file

REPO = Path(__file__).resolve().parent.parent




def load_messages(corpora: Path, limit: int) -> list[bytes]:
    root = corpora / "spamassassin"
    with open(root / "folds.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if limit:
        rows = rows[:limit]
    return [(root / r["path"]).read_bytes() for r in rows]


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted = self.rejected = self.tempfails = self.retried_ok = self.other = 0
        self.latency: list[float] = []
        self.errors: list[str] = []


def client(pf: PostfixInstance, jobs: list[tuple[int, bytes]], counts: Counts, max_tries: int = 50) -> None:
    """One SMTP client: one connection reused for many messages, reconnecting after errors."""
    smtp: smtplib.SMTP | None = None
    for i, raw in jobs:
        for attempt in range(max_tries):
            try:
                if smtp is None:
                    smtp = pf.smtp(timeout=60)
                    smtp.ehlo("bench.example.org")
                t0 = time.perf_counter()
                smtp.sendmail("bench@example.org", [f"user{i % 8}@{pf.domain}"], raw)
                dt = time.perf_counter() - t0
                with counts.lock:
                    counts.accepted += 1
                    counts.retried_ok += attempt > 0
                    counts.latency.append(dt)
                break
            except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused) as exc:
                code = getattr(exc, "smtp_code", None) or next(iter(exc.recipients.values()))[0]  # type: ignore[attr-defined]
                if 500 <= code < 600:
                    with counts.lock:
                        counts.rejected += code == 550
                        counts.other += code != 550
                        if code != 550:
                            counts.errors.append(f"message {i}: {exc}")
                    try:
                        smtp.rset()  # type: ignore[union-attr]
                    except smtplib.SMTPException:
                        smtp = None
                    break
                with counts.lock:
                    counts.tempfails += 1
                smtp = drop_smtp(smtp)
                time.sleep(0.2)
            except (smtplib.SMTPException, OSError) as exc:
                with counts.lock:
                    counts.tempfails += 1
                    counts.errors.append(f"message {i} try {attempt}: {type(exc).__name__}: {exc}")
                smtp = drop_smtp(smtp)
                time.sleep(0.2)
        else:
            with counts.lock:
                counts.errors.append(f"message {i}: gave up after {max_tries} tries")
    drop_smtp(smtp)


def run(pf: PostfixInstance, messages: list[bytes], clients: int) -> tuple[Counts, float]:
    counts = Counts()
    jobs = [list(enumerate(messages))[k::clients] for k in range(clients)]
    threads = [threading.Thread(target=client, args=(pf, j, counts)) for j in jobs]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts, time.perf_counter() - t0


def settle(pf: PostfixInstance, expected: int, timeout: float = 120.0) -> int:
    """Wait until Postfix has delivered everything it accepted; returns the Maildir count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pf.queued(("maildrop", "incoming", "active", "deferred")) and len(pf.delivered_paths()) >= expected:
            break
        time.sleep(0.2)
    return len(pf.delivered_paths())


def ms(values: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", "../shared/corpora"))
    parser.add_argument("--limit", type=int, default=0, help="messages to send (default: the whole corpus)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--socket", choices=("unix", "inet"), default="inet", help="milter socket kind (unix: given to group postfix, mode 0660)")
    parser.add_argument("--baseline", type=int, default=1000, help="messages for the no-milter baseline (0: skip)")
    parser.add_argument("--workers", type=int, default=0, help="[milter] workers: scanner processes (0, the default: one per core)")
    args = parser.parse_args()
    messages = load_messages(Path(args.corpora), args.limit)
    work = Path(tempfile.mkdtemp(prefix="mg-bench-"))
    port = free_port()
    work.chmod(0o755)  # Postfix's cleanup (user postfix) must reach the unix socket
    sock = work / "milter.sock"
    listen, mta_side = (f"unix:{sock}", f"unix:{sock}") if args.socket == "unix" else (f"inet:{port}@127.0.0.1", f"inet:127.0.0.1:{port}")
    config = work / "mailguard.toml"
    log_path = work / "milter.log"
    config.write_text(
        f'[store]\npath = "{work}/store.sqlite3"\n[scanner]\nnetwork = false\n'
        f"[policy]\nthresholds = {{ reject = 8.0 }}\n"
        f'[milter]\nsocket = "{listen}"\nsocket_group = "postfix"\nlog_file = "{log_path}"\nworkers = {args.workers}\n'
    )
    stderr = open(work / "milter.stderr", "wb")
    milter = subprocess.Popen([sys.executable, "-m", "mailguard", "milter", "--config", str(config)], stderr=stderr, cwd=REPO)
    for _ in range(300):
        if b"listening on" in (work / "milter.stderr").read_bytes():
            break
        time.sleep(0.1)
    # Postfix sleeps a second after each error reply (smtpd_error_sleep_time) to slow down
    # abusive clients; a benchmark that gets 1,666 rejects would measure that sleep, not the milter
    pf = PostfixInstance(milter=mta_side, settings={"smtpd_error_sleep_time": "0s"})
    try:
        pf.start()
        workers = args.workers or len(os.sched_getaffinity(0))
        print(f"sending {len(messages)} messages with {args.clients} concurrent clients through Postfix + milter "
              f"({workers} scanner worker{'s' if workers > 1 else ' (in process)'}) on {os.cpu_count()} cores ...", flush=True)
        counts, wall = run(pf, messages, args.clients)
        delivered = settle(pf, counts.accepted)
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        scan = [line["ms"] for line in lines]
        actions: dict[str, int] = {}
        for line in lines:
            actions[line["action"]] = actions.get(line["action"], 0) + 1
        lost = len(messages) - (delivered + counts.rejected)
        print(f"milter run: {len(messages)} sent in {wall:.1f}s = {len(messages) / wall:.1f} messages/s")
        print(f"  accepted (250) {counts.accepted}, delivered to Maildir {delivered}, rejected (550) {counts.rejected}, "
              f"other 5xx {counts.other}, 4xx/connection errors retried {counts.tempfails} ({counts.retried_ok} messages needed a retry)")
        print(f"  lost = sent - (delivered + rejected) = {lost}")
        print(f"  milter verdicts: {json.dumps(dict(sorted(actions.items())))}")
        print(f"  milter scan latency (end of message -> reply, {len(scan)} log lines): p50 {ms(scan, 50):.1f} ms, p99 {ms(scan, 99):.1f} ms")
        print(f"  SMTP transaction latency at the client: p50 {ms(counts.latency, 50) * 1000:.1f} ms, p99 {ms(counts.latency, 99) * 1000:.1f} ms")
        for line in counts.errors[:10]:
            print("  error:", line)
        if args.baseline:
            pf.reload(smtpd_milters="")
            time.sleep(1.5)
            pf.clear_maildir()
            base, bwall = run(pf, messages[: args.baseline], args.clients)
            print(f"baseline without milter: {len(messages[: args.baseline])} sent in {bwall:.1f}s = "
                  f"{len(messages[: args.baseline]) / bwall:.1f} messages/s; SMTP transaction p50 "
                  f"{ms(base.latency, 50) * 1000:.1f} ms, p99 {ms(base.latency, 99) * 1000:.1f} ms")
        return 0 if lost == 0 and not counts.other else 1
    finally:
        milter.terminate()
        try:
            milter.wait(timeout=15)
        except subprocess.TimeoutExpired:
            milter.kill()
        stderr.close()
        pf.close()


if __name__ == "__main__":
    sys.exit(main())
