"""Faults during load, through a real Postfix: nothing may be lost or delivered twice.

    python benchmarks/faults.py [--corpora ../shared/corpora] [--count 5000] [--clients 8] [--dns-outage 30]

``--count`` corpus messages (the SpamAssassin corpus, cycled), each with its own Message-ID
and ``X-Faults-Id`` header, go through a private Postfix (mailguard.testing.PostfixInstance,
``milter_default_action = tempfail``) with ``mailguard milter`` using a real redis-server as
its store, the virus scorer against a private clamd (``on_failure = tempfail``) and the
dnsbl and auth scorers against a loopback DNS server (mailguard.testing.dns.FakeDNS).
``--clients`` SMTP clients send; a 4xx (or a dropped connection) is retried after a short
pause on a new connection, as an MTA's queue would, until 250 or 5xx.

While mail flows, one fault at a time, each when a given share of the messages is done:
redis-server killed (SIGKILL) and restarted (empty: it has no persistence here); clamd
killed and restarted; the DNS server stops answering for ``--dns-outage`` seconds; the milter
killed with SIGKILL, restarted by the supervisor loop below (as systemd's Restart= would);
SIGHUP sent to the milter twice.

At the end the Maildir is read and every delivered copy is matched to its X-Faults-Id.
Target: lost 0 (neither delivered nor rejected), delivered twice 0, and every message that
got a 4xx delivered or rejected on a later try. Needs root, Postfix, clamd, redis-server,
pymilter and dnslib (scripts/system-deps, ``pip install -e '.[test,clamav,milter]'``).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailguard.testing import ClamdServer, PostfixInstance, RedisServer
from mailguard.testing.dns import FakeDNS
from mailguard.testing.system import free_port

from common import drop_smtp  # benchmarks/common.py, beside this file

REPO = Path(__file__).resolve().parent.parent
ID_HEADER = re.compile(rb"^X-Faults-Id: (\d+)\r?$", re.M)
SENDER_DOMAIN = "sender.mailguard.test"
# Postfix settings: a milter that is down or dies is 451 (milter_default_action), quickly
# (connect 5 s), and a scan gets longer than the milter's own 20 s deadline (content 30 s)
POSTFIX_SETTINGS = {
    "smtpd_error_sleep_time": "0s",  # else every 4xx/5xx costs the client a second
    "milter_connect_timeout": "5s",
    "milter_command_timeout": "10s",
    "milter_content_timeout": "30s",
}


def load_messages(corpora: Path) -> list[bytes]:
    root = corpora / "spamassassin"
    with open(root / "folds.csv", newline="") as fh:
        return [(root / row["path"]).read_bytes() for row in csv.DictReader(fh)]


def tagged(raw: bytes, n: int) -> bytes:
    """The corpus message with its own Message-ID and X-Faults-Id (the old Message-ID dropped,
    and the mbox "From " line the corpus files start with, which would end the header block)."""
    if raw.startswith(b"From "):
        raw = raw[raw.find(b"\n") + 1 :]
    raw = re.sub(rb"^Message-I[dD]:[^\n]*\n(?:[ \t][^\n]*\n)*", b"", raw, count=1, flags=re.M | re.I)
    return f"X-Faults-Id: {n}\nMessage-ID: <faults.{n}@{SENDER_DOMAIN}>\n".encode() + raw


def dns_records() -> dict[tuple[str, str], list[object]]:
    """The loopback zone: the sender's SPF and DMARC, and one listed client on each list."""
    return {
        (SENDER_DOMAIN, "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
        (f"_dmarc.{SENDER_DOMAIN}", "TXT"): ["v=DMARC1; p=none"],
        ("2.0.0.127.bl.mailguard.test", "A"): ["127.0.0.2"],
        ("spam-domain.example.uri.mailguard.test", "A"): ["127.0.0.2"],
    }


def write_config(path: Path, work: Path, port: int, redis: RedisServer, clamd: ClamdServer, dns: FakeDNS) -> None:
    path.write_text(
        f"""[store]
backend = "redis"
url = "{redis.url}"
timeout = 1.0
[scanner]
scorers = ["bayes", "reputation", "fingerprint", "behaviour", "virus", "dnsbl", "auth"]
deadline = 10.0
[dns]
nameservers = ["127.0.0.1"]
port = {dns.port}
timeout = 1.0
lifetime = 2.0
[scorers.virus]
socket = "{clamd.socket_path}"
timeout = 5.0
[scorers.auth]
authserv_id = "mx.mailfilter.test"
[[scorers.dnsbl.lists]]
zone = "bl.mailguard.test"
kind = "ip"
[[scorers.dnsbl.lists]]
zone = "uri.mailguard.test"
kind = "uri"
[policy]
thresholds = {{ reject = 8.0 }}
on_failure = {{ virus = "tempfail" }}
[milter]
socket = "inet:{port}@127.0.0.1"
deadline = 20.0
on_error = "tempfail"
log_file = "{work}/milter.log"
"""
    )


class Supervisor:
    """Keeps ``mailguard milter`` running: a restart loop, as systemd's Restart=always is."""

    def __init__(self, config: Path, work: Path) -> None:
        self.config, self.work = config, work
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.stopping = False
        self.lock = threading.Lock()  # a restart and stop() never cross
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _spawn(self) -> None:
        with open(self.work / "milter.stderr", "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "mailguard", "milter", "--config", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)

    def start(self, port: int, timeout: float = 60.0) -> None:
        self._spawn()
        self.wait_listening(port, timeout)
        self.thread.start()

    def wait_listening(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"milter not listening: {(self.work / 'milter.stderr').read_text()[-2000:]}")

    def _loop(self) -> None:
        while not self.stopping:
            assert self.proc is not None
            self.proc.wait()
            if self.stopping:
                return
            time.sleep(0.5)  # systemd's RestartSec
            with self.lock:
                if self.stopping:
                    return
                self.restarts += 1
                self._spawn()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    final: dict[int, str] = field(default_factory=dict)  # id -> accepted | rejected | other-5xx | gave-up
    tempfails: collections.Counter[int] = field(default_factory=collections.Counter)  # id -> 4xx/connection errors
    ambiguous: set[int] = field(default_factory=set)  # the connection broke after the data was sent
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, message id) of every 4xx, for the fault windows
    finished: list[float] = field(default_factory=list)  # when each message ended (250 or 5xx)
    done: int = 0


def client(pf: PostfixInstance, jobs: list[tuple[int, bytes]], tally: Tally, give_up: float) -> None:
    """One SMTP client: 250 and 5xx end a message; a 4xx or a broken connection is retried
    on a new connection after a pause, for up to ``give_up`` seconds."""
    smtp: smtplib.SMTP | None = None
    for n, raw in jobs:
        first = time.monotonic()
        outcome = "gave-up"
        while time.monotonic() - first < give_up:
            sent_data = False
            try:
                if smtp is None:
                    smtp = pf.smtp(timeout=60)
                    smtp.ehlo("client.mailguard.test")
                code, _ = smtp.mail(f"bulk@{SENDER_DOMAIN}")
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, b"", "")
                code, msg = smtp.rcpt(f"user{n % 8}@{pf.domain}")
                if code != 250:
                    raise smtplib.SMTPRecipientsRefused({"x": (code, msg)})
                sent_data = True
                code, _ = smtp.data(raw)
                if code == 250:
                    outcome = "accepted"
                    break
                raise smtplib.SMTPDataError(code, b"")
            except (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as exc:
                code = getattr(exc, "smtp_code", None) or next(iter(exc.recipients.values()))[0]  # type: ignore[attr-defined]
                if 500 <= code < 600:
                    outcome = "rejected" if code == 550 else f"other-{code}"
                    try:
                        smtp.rset()  # type: ignore[union-attr]
                    except (smtplib.SMTPException, OSError):
                        smtp = drop_smtp(smtp)
                    break
            except (smtplib.SMTPException, OSError):
                if sent_data:
                    with tally.lock:
                        tally.ambiguous.add(n)
            with tally.lock:
                tally.tempfails[n] += 1
                tally.events.append((time.monotonic(), n))
            smtp = drop_smtp(smtp)
            time.sleep(0.5)
        with tally.lock:
            tally.final[n] = outcome
            tally.finished.append(time.monotonic())
            tally.done += 1
    drop_smtp(smtp)


def wait_done(tally: Tally, share: float, total: int) -> None:
    while tally.done < share * total:
        time.sleep(0.2)


def run_faults(tally: Tally, total: int, redis: RedisServer, clamd: ClamdServer, dns: FakeDNS,
               milter: Supervisor, dns_outage: float, log: list[tuple[str, float, float, int]]) -> None:
    """Each fault in turn, when its share of the messages is done; ``log`` gets
    (what, start, end, messages done at the start)."""

    def record(what: str, action) -> None:  # noqa: ANN001
        started, at = time.monotonic(), tally.done
        print(f"  fault at {at} messages done: {what}", flush=True)
        action()
        log.append((what, started, time.monotonic(), at))

    def redis_kill() -> None:
        assert redis.process is not None
        redis.process.send_signal(signal.SIGKILL)
        redis.process.wait()
        time.sleep(5)
        redis.start()

    def clamd_kill() -> None:
        assert clamd.process is not None
        clamd.process.send_signal(signal.SIGKILL)
        clamd.process.wait()
        time.sleep(5)
        clamd.start()

    def dns_silent() -> None:
        dns.pause()
        time.sleep(dns_outage)
        dns.resume()

    def milter_kill() -> None:
        before = milter.restarts
        milter.signal(signal.SIGKILL)
        while milter.restarts == before:
            time.sleep(0.05)

    def sighup_twice() -> None:
        milter.signal(signal.SIGHUP)
        time.sleep(3)
        milter.signal(signal.SIGHUP)

    schedule = [
        (0.10, "redis-server killed (SIGKILL), restarted 5 s later", redis_kill),
        (0.25, "clamd killed (SIGKILL), restarted 5 s later", clamd_kill),
        (0.40, f"DNS server silent for {dns_outage:g} s", dns_silent),
        (0.60, "milter killed (SIGKILL), restarted by the supervisor", milter_kill),
        (0.80, "SIGHUP to the milter twice, 3 s apart", sighup_twice),
    ]
    for share, what, action in schedule:
        wait_done(tally, share, total)
        record(what, action)


def delivered_ids(pf: PostfixInstance) -> collections.Counter[int]:
    found: collections.Counter[int] = collections.Counter()
    for path in pf.delivered_paths():
        try:
            head = path.read_bytes()[:20000]
        except FileNotFoundError:
            continue
        match = ID_HEADER.search(head)
        found[int(match.group(1)) if match else -1] += 1
    return found


def settle(pf: PostfixInstance, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pf.queued(("maildrop", "incoming", "active", "deferred")):
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", "../shared/corpora"))
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--dns-outage", type=float, default=30.0, help="seconds the DNS server stays silent")
    parser.add_argument("--give-up", type=float, default=600.0, help="seconds a client retries one message")
    args = parser.parse_args()
    corpus = load_messages(Path(args.corpora))
    # a fixed stride through the corpus (7919 is prime to its size) mixes ham and spam from the start
    messages = [(n, tagged(corpus[n * 7919 % len(corpus)], n)) for n in range(args.count)]
    work = Path(tempfile.mkdtemp(prefix="mg-faults-"))
    port = free_port()
    redis, clamd = RedisServer().start(), ClamdServer().start()
    dns = FakeDNS(dns_records()).start()
    config = work / "mailguard.toml"
    write_config(config, work, port, redis, clamd, dns)
    milter = Supervisor(config, work)
    pf = PostfixInstance(milter=f"inet:127.0.0.1:{port}", milter_default_action="tempfail", settings=POSTFIX_SETTINGS)
    try:
        milter.start(port)
        pf.start()
        tally = Tally()
        faults: list[tuple[str, float, float, int]] = []
        print(f"sending {args.count} messages with {args.clients} clients through Postfix + milter (redis, clamd, DNS); work dir {work}", flush=True)
        jobs = [messages[k :: args.clients] for k in range(args.clients)]
        threads = [threading.Thread(target=client, args=(pf, j, tally, args.give_up)) for j in jobs]
        started = time.monotonic()
        for t in threads:
            t.start()
        injector = threading.Thread(target=run_faults, args=(tally, args.count, redis, clamd, dns, milter, args.dns_outage, faults))
        injector.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        injector.join(timeout=120)
        settle(pf)
        got = delivered_ids(pf)
        report(args.count, tally, got, faults, wall, milter, work, pf)
        lost = sum(1 for n in range(args.count) if got[n] == 0 and tally.final.get(n) != "rejected")
        twice = sum(1 for n in range(args.count) if got[n] > 1)
        unretried = sum(1 for n in tally.tempfails if tally.final.get(n) not in ("accepted", "rejected"))
        return 0 if lost == twice == unretried == 0 else 1
    finally:
        milter.stop()
        pf.close()
        dns.stop()
        clamd.close()
        redis.close()


def report(count: int, tally: Tally, got: collections.Counter[int], faults: list[tuple[str, float, float, int]],
           wall: float, milter: Supervisor, work: Path, pf: PostfixInstance) -> None:
    ids = range(count)
    final = tally.final
    delivered_once = sum(1 for n in ids if got[n] == 1)
    twice = sum(1 for n in ids if got[n] > 1)
    rejected = sum(1 for n in ids if final.get(n) == "rejected")
    rejected_and_delivered = sum(1 for n in ids if final.get(n) == "rejected" and got[n])
    accepted_not_delivered = sum(1 for n in ids if final.get(n) == "accepted" and not got[n])
    lost = sum(1 for n in ids if not got[n] and final.get(n) != "rejected")
    tempfailed = [n for n in ids if tally.tempfails[n]]
    retried_delivered = sum(1 for n in tempfailed if final.get(n) == "accepted" and got[n])
    retried_rejected = sum(1 for n in tempfailed if final.get(n) == "rejected")
    other = collections.Counter(v for v in final.values() if v not in ("accepted", "rejected"))
    print(f"\n{count} messages in {wall:.0f} s ({count / wall:.1f} messages/s), {sum(tally.tempfails.values())} 4xx replies "
          f"or broken connections retried, milter restarted {milter.restarts} time(s) by the supervisor\n")
    rows = [
        ("sent (distinct X-Faults-Id)", count),
        ("delivered exactly once", delivered_once),
        ("rejected (550)", rejected),
        ("lost (neither delivered nor rejected)", lost),
        ("delivered twice or more", twice),
        ("tempfailed (4xx) at least once", len(tempfailed)),
        ("  ... then delivered on a retry", retried_delivered),
        ("  ... then rejected (550) on a retry", retried_rejected),
        ("  ... never ended (client gave up, other 5xx)", len(tempfailed) - retried_delivered - retried_rejected),
        ("accepted (250) but not in the Maildir", accepted_not_delivered),
        ("rejected (550) but in the Maildir", rejected_and_delivered),
        ("connection broke after DATA was sent (retried)", len(tally.ambiguous)),
        ("delivered copies without an X-Faults-Id", got[-1]),
    ]
    print("| outcome | messages |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if other:
        print(f"other endings: {dict(other)}")
    print("\n| fault | at message | lasted | until the next fault: messages ended, messages/s | 4xx replies | messages given a 4xx |"
          "\n|---|---|---|---|---|---|")
    ends = [start for _, start, _, _ in faults[1:]] + [max([*tally.finished, *(end for _, _, end, _ in faults)])]
    for (what, start, end, at), until in zip(faults, ends):
        ended = sum(1 for t in tally.finished if start <= t < until)
        fours = [n for t, n in tally.events if start <= t < until]
        rate = ended / (until - start) if until > start else 0.0
        print(f"| {what} | {at} | {end - start:.1f} s | {ended} in {until - start:.0f} s, {rate:.1f}/s | {len(fours)} | {len(set(fours))} |")
    lines = [json.loads(line) for line in (work / "milter.log").read_text().splitlines() if line.startswith("{")]
    actions = collections.Counter(line["action"] for line in lines)
    failures = collections.Counter(f for line in lines for f in line["failures"])
    errors = collections.Counter(line.get("error", "").split(":")[0] for line in lines if line.get("error"))
    print(f"\nmilter log: {len(lines)} verdicts {dict(sorted(actions.items()))}")
    print(f"  scorer failures: {dict(failures.most_common(8))}")
    print(f"  errors answered on_error: {dict(errors)}")
    postfix_log = pf.log()
    print(f"postfix log: {postfix_log.count('milter-reject: END-OF-MESSAGE')} milter 5xx/4xx at end of message, "
          f"{len(re.findall(r'Milter service|milter .* (read|write) error|can.t read SMFIC', postfix_log))} milter connection errors "
          f"(answered with milter_default_action = tempfail)")


if __name__ == "__main__":
    sys.exit(main())
