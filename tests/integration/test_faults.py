"""A fault under load, through a real Postfix: redis-server killed (SIGKILL) and restarted
while 20 messages go through Postfix and the milter. Nothing is lost or delivered twice.

The store-backed behaviour scorer is configured ``on_failure = tempfail`` here, so a message
scanned while Redis is down gets 451 from the milter, and the client's retry after the
restart delivers it. Every component is required: a missing Postfix, redis-server or
pymilter, or not being root, fails the test (scripts/system-deps installs them).
The bigger run with every fault is benchmarks/faults.py.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import Milter  # noqa: F401  (pymilter: a missing one fails collection, no skip)
import pytest

from mailguard.testing import PostfixInstance, RedisServer
from mailguard.testing.system import free_port

from ..conftest import HAM_WORDS, make_message

ID = re.compile(rb"^X-Faults-Id: (\d+)\r?$", re.M)
COUNT = 20


def start_milter(config: Path, port: int, stderr: Path) -> subprocess.Popen[bytes]:
    with open(stderr, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mailguard", "milter", "--config", str(config)], stderr=err)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"milter exited with {proc.returncode}: {stderr.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"milter not listening: {stderr.read_text()[-2000:]}")


def send(pf: PostfixInstance, raw: bytes) -> int:
    """One SMTP transaction on a new connection: the final reply code (250, 4xx, 5xx)."""
    try:
        with pf.smtp(timeout=30) as smtp:
            smtp.sendmail("alice@example.org", [f"bob@{pf.domain}"], raw)
        return 250
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        return exc.smtp_code
    except smtplib.SMTPRecipientsRefused as exc:
        return next(iter(exc.recipients.values()))[0]


def send_until_done(pf: PostfixInstance, raw: bytes, tries: int = 20) -> tuple[int, int]:
    """Send, retrying 4xx as an MTA queue would: (final code, 4xx replies before it)."""
    for attempt in range(tries):
        code = send(pf, raw)
        if not 400 <= code < 500:
            return code, attempt
        time.sleep(0.3)
    return code, tries


def test_redis_killed_and_restarted_under_mail_loses_nothing(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "a private Postfix instance needs root (run the integration tests as root, as CI does)"
    tmp_path.chmod(0o755)
    port = free_port()
    config = tmp_path / "mailguard.toml"
    with RedisServer() as redis, PostfixInstance(milter=f"inet:127.0.0.1:{port}", settings={"smtpd_error_sleep_time": "0s"}) as pf:
        config.write_text(
            f'[store]\nbackend = "redis"\nurl = "{redis.url}"\ntimeout = 1.0\n'
            '[scanner]\nscorers = ["bayes", "behaviour"]\nnetwork = false\n'
            '[policy]\non_failure = { behaviour = "tempfail" }\n'
            f'[milter]\nsocket = "inet:{port}@127.0.0.1"\nlog_file = "{tmp_path}/milter.log"\n'
        )
        milter = start_milter(config, port, tmp_path / "milter.stderr")
        try:
            messages = [
                f"X-Faults-Id: {n}\n".encode() + make_message(HAM_WORDS, subject=f"notes {n}", seed=n) for n in range(COUNT)
            ]
            finals = {n: send_until_done(pf, messages[n]) for n in range(COUNT // 2)}

            redis.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            redis.process.wait()  # type: ignore[union-attr]
            down = COUNT // 2
            assert send(pf, messages[down]) == 451, "a scan while the store is down must tempfail (on_failure)"
            redis.start()  # same port, empty (no persistence)
            finals[down] = send_until_done(pf, messages[down])
            for n in range(down + 1, COUNT):
                finals[n] = send_until_done(pf, messages[n])

            deadline = time.monotonic() + 30
            while pf.queued(("maildrop", "incoming", "active", "deferred")) and time.monotonic() < deadline:
                time.sleep(0.1)
            delivered = [int(m.group(1)) for raw in pf.delivered() if (m := ID.search(raw))]
        finally:
            milter.kill()
            milter.wait()
    assert all(code == 250 for code, _ in finals.values()), finals
    assert finals[down][1] == 0  # the retry after the restart went through at once
    assert sorted(delivered) == list(range(COUNT)), "every message delivered exactly once"
