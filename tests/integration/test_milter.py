"""The milter daemon behind a real, private Postfix on loopback (integration.md, 2b).

One Postfix and one clamd for the module; the milter runs as a subprocess
(``python -m mailguard milter --config FILE``), as it would under systemd, with two scanner
worker processes, and shares its SQLite store with the test so per-user thresholds can be
set before sending.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailguard.config import PolicyConfig
from mailguard.policy import Policy
from mailguard.stores.sqlite import SqliteStore
from mailguard.testing.system import free_port
from mailguard.testing import EICAR, ClamdServer, PostfixInstance, clamd_binary, postfix_binary

from ..conftest import SAMPLES

DOMAIN = PostfixInstance.domain
IN_TRANSIT = ("maildrop", "incoming", "active", "deferred")  # the hold queue keeps quarantined mail


def require(what: str, ok: bool, hint: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {what} ({hint}); the milter integration tests cannot run")
        pytest.skip(f"{what} not available ({hint})")


def _has_pymilter() -> bool:
    try:
        import Milter  # noqa: F401
    except ImportError:
        return False
    return True




class MilterProcess:
    """``mailguard milter`` as a subprocess; stderr (status and JSON lines) goes to a file."""

    def __init__(self, config: Path, port: int, workdir: Path, unix_path: Path | None = None) -> None:
        self.config, self.port, self.workdir, self.unix_path = config, port, workdir, unix_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = workdir / "milter.stderr"

    def start(self, timeout: float = 30.0) -> None:
        err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailguard", "milter", "--config", str(self.config)], stdout=subprocess.DEVNULL, stderr=err
        )
        err.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milter exited with {self.proc.returncode}: {self.output()[-2000:]}")
            if "listening on" in self.output():
                try:
                    if self.unix_path is not None:
                        with socket.socket(socket.AF_UNIX) as probe:
                            probe.connect(str(self.unix_path))
                    else:
                        socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"milter not listening after {timeout}s: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    def line_for(self, queue_id: str) -> dict:
        return next(line for line in self.lines() if line["queue_id"] == queue_id)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def write_config(
    path: Path, *, store: Path, port: int, clamd: ClamdServer | None, extra: str = "", socket: str = "", metrics_port: int = 0
) -> None:
    scorers = '["bayes", "virus"]' if clamd else '["bayes"]'
    virus = f'[scorers.virus]\nsocket = "{clamd.socket_path}"\n' if clamd else ""
    path.write_text(
        f"""[store]
path = "{store}"
[scanner]
scorers = {scorers}
network = false
[policy]
# through Postfix the samples score about 7.2 (advance fee) and 7.6 (pharmacy): 550 for those
thresholds = {{ reject = 6.0 }}
{extra}
[milter]
socket = "{socket or f"inet:{port}@127.0.0.1"}"
socket_group = "postfix"
metrics_port = {metrics_port}
workers = 2
deadline = 10.0
max_body_bytes = 65536
drain_timeout = 10.0
{virus}"""
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require("postfix", postfix_binary() is not None, "scripts/system-deps installs it")
    require("pymilter", _has_pymilter(), "pip install 'mailguard[milter]' (needs libmilter-dev)")
    require("root", os.geteuid() == 0, "a private Postfix instance needs root")
    work = tmp_path_factory.mktemp("milter")
    clamd = ClamdServer().start() if clamd_binary() else None
    port = free_port()
    config = work / "mailguard.toml"
    store = work / "store.sqlite3"
    metrics_port = free_port()
    write_config(config, store=store, port=port, clamd=clamd, metrics_port=metrics_port)
    milter = MilterProcess(config, port, work)
    milter.start()
    pf = PostfixInstance(milter=f"inet:127.0.0.1:{port}", settings={"milter_connect_timeout": "2s"})
    try:
        pf.start()
        yield {"pf": pf, "milter": milter, "config": config, "store": store, "port": port, "clamd": clamd, "metrics_port": metrics_port}
    finally:
        milter.stop()
        pf.close()
        if clamd:
            clamd.close()


@pytest.fixture()
def pf(env):
    env["pf"].clear_maildir()
    return env["pf"]


def send(pf: PostfixInstance, raw: bytes, rcpts: list[str], sender: str = "alice@example.org") -> str:
    """Send one message; returns Postfix's queue id (from the 250 reply)."""
    with pf.smtp(timeout=20) as s:
        s.ehlo("client.example.org")
        s.mail(sender)
        for r in rcpts:
            code, msg = s.rcpt(r)
            assert code == 250, (code, msg)
        code, msg = s.data(raw)
        if code != 250:
            raise smtplib.SMTPDataError(code, msg)
    return msg.decode().rsplit(" ", 1)[-1]


def headers_of(raw: bytes) -> dict[str, str]:
    import email

    msg = email.message_from_bytes(raw)
    return {k: " ".join(str(v).split()) for k, v in msg.items()}


def set_user(store: Path, user: str, **kw) -> None:
    async def run():
        s = SqliteStore(store)
        try:
            await Policy(PolicyConfig(), s).set_user(user, **kw)
        finally:
            await s.close()

    asyncio.run(run())


def test_ham_is_delivered_with_the_verdict_headers(env, pf):
    queue_id = send(pf, (SAMPLES / "ham-agenda.eml").read_bytes(), [f"bob@{DOMAIN}"])
    copies = pf.wait_for(1)
    assert len(copies) == 1
    h = headers_of(copies[0])
    assert h["X-Spam-Flag"] == "NO" and h["X-Mailguard-Action"] == "accept"
    assert float(h["X-Spam-Score"]) < 0
    assert h["X-Mailguard-Report"].startswith("action=accept") and "bayes:BAYES" in h["X-Mailguard-Report"]
    if env["clamd"]:
        assert h["X-Virus-Status"] == "Clean"
    line = env["milter"].line_for(queue_id)  # one structured line per message, keyed by queue id
    assert line["action"] == "accept" and line["rcpt"] == {f"bob@{DOMAIN}": "accept"} and line["scan_ms"] > 0


def test_spam_is_rejected_with_550(env, pf):
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(pf, (SAMPLES / "spam-pharmacy-html.eml").read_bytes(), [f"bob@{DOMAIN}"])
    assert err.value.smtp_code == 550
    assert err.value.smtp_error.startswith(b"5.7.1 Message rejected as spam")
    time.sleep(0.3)
    assert pf.delivered() == [] and pf.queued(IN_TRANSIT) == []


def test_multi_recipient_mail_goes_only_to_the_accepting_recipient(env, pf):
    set_user(env["store"], f"carol@{DOMAIN}", level="medium")  # no reject threshold: junk instead
    queue_id = send(pf, (SAMPLES / "spam-advance-fee.eml").read_bytes(), [f"bob@{DOMAIN}", f"carol@{DOMAIN}"])
    copies = pf.wait_for(1)
    time.sleep(0.3)
    copies = pf.delivered()
    assert len(copies) == 1
    h = headers_of(copies[0])
    assert h["Delivered-To"] == f"carol@{DOMAIN}"
    assert h["X-Spam-Flag"] == "YES" and h["X-Mailguard-Action"] == "junk"
    line = env["milter"].line_for(queue_id)
    assert line["rcpt"] == {f"bob@{DOMAIN}": "reject", f"carol@{DOMAIN}": "junk"}
    assert line["removed"] == [f"<bob@{DOMAIN}>"]


def test_quarantine_goes_to_the_hold_queue(env, pf):
    set_user(env["store"], f"erin@{DOMAIN}", thresholds={"quarantine": 3.0})
    queue_id = send(pf, (SAMPLES / "spam-advance-fee.eml").read_bytes(), [f"erin@{DOMAIN}"])
    time.sleep(0.5)
    assert pf.delivered() == []
    held = pf.queued(("hold",))
    assert [p.name for p in held] == [queue_id]
    assert env["milter"].line_for(queue_id)["action"] == "quarantine"


def test_infected_mail_is_rejected_when_clamd_runs(env, pf):
    require("clamd", env["clamd"] is not None, "apt-get install clamav-daemon")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.org", f"bob@{DOMAIN}", "the agenda, attached"
    msg.set_content("Hi Bob, the budget review agenda for Thursday is attached.\n")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="agenda.com")
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(pf, msg.as_bytes(), [f"bob@{DOMAIN}"])
    assert err.value.smtp_code == 550 and b"Eicar-Test-Signature" in err.value.smtp_error
    time.sleep(0.3)
    assert pf.delivered() == []


def test_body_past_the_bound_is_scanned_in_part_and_delivered(env, pf):
    raw = (SAMPLES / "ham-agenda.eml").read_bytes() + b"\r\n" + (b"x" * 99 + b"\r\n") * 2000  # ~200 KB > 64 KiB
    queue_id = send(pf, raw, [f"bob@{DOMAIN}"])
    copies = pf.wait_for(1)
    assert len(copies) == 1 and len(copies[0]) > 200_000  # the whole message is delivered
    line = env["milter"].line_for(queue_id)
    assert line["truncated"] is True and line["action"] == "accept"


def test_sighup_reloads_config_without_a_restart(env, pf):
    milter = env["milter"]
    pid = milter.proc.pid
    write_config(env["config"], store=env["store"], port=env["port"], clamd=env["clamd"], metrics_port=env["metrics_port"], extra='subject_tag = "[SPAM] "')
    try:
        milter.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reloaded config" not in milter.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "reloaded config" in milter.output()
        set_user(env["store"], f"dave@{DOMAIN}", level="medium")
        send(pf, (SAMPLES / "spam-advance-fee.eml").read_bytes(), [f"dave@{DOMAIN}"])
        h = headers_of(pf.wait_for(1)[0])
        assert h["Subject"].startswith("[SPAM] ") and h["X-Mailguard-Action"] == "junk"
        assert milter.proc.poll() is None and milter.proc.pid == pid
    finally:
        write_config(env["config"], store=env["store"], port=env["port"], clamd=env["clamd"], metrics_port=env["metrics_port"])
        milter.signal(signal.SIGHUP)


def worker_pids(milter: MilterProcess) -> list[int]:
    """The milter's scanner worker processes (its spawned children)."""
    assert milter.proc is not None
    children: set[int] = set()
    for task in Path(f"/proc/{milter.proc.pid}/task").iterdir():
        try:
            children |= {int(pid) for pid in (task / "children").read_text().split()}
        except OSError:
            pass
    found = []
    for pid in sorted(children):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what} after {timeout}s")
        time.sleep(0.05)


def test_workers_killed_holding_a_message_answer_451_and_are_restarted(env, pf):
    """Both workers stopped, a message handed to one of them, both killed: the message gets
    the on_error answer (451), never silence, and new workers take the next message."""
    milter = env["milter"]
    wait_until(lambda: len(worker_pids(milter)) == 2, "two workers")
    old = worker_pids(milter)
    restarts = milter.output().count("started in place of")
    for pid in old:
        os.kill(pid, signal.SIGSTOP)
    answer: dict = {}

    def sender() -> None:
        try:
            answer["queue_id"] = send(pf, (SAMPLES / "ham-agenda.eml").read_bytes(), [f"bob@{DOMAIN}"])
        except smtplib.SMTPDataError as exc:
            answer["error"] = exc

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        wait_until(lambda: metric_samples(env["metrics_port"]).get("mailguard_milter_scans_in_flight", 0) >= 1, "a scan in a worker")
    finally:
        for pid in old:
            os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert "error" in answer, answer
    assert answer["error"].smtp_code == 451 and answer["error"].smtp_error.startswith(b"4.7.1 Message could not be scanned")
    # The kill may land while the job is still on its way to a worker (the in-flight gauge
    # rises just before the hand-over): the answer is the same, only the error's wording differs.
    failed = [line for line in milter.lines() if line.get("error", "").startswith("WorkerDied: ")]
    assert len(failed) == 1 and failed[0]["reply"] == "tempfail", failed
    wait_until(lambda: milter.output().count("started in place of") == restarts + 2, "both workers restarted")
    new = worker_pids(milter)
    assert len(new) == 2 and set(new).isdisjoint(old)
    time.sleep(0.3)
    assert pf.delivered() == [] and pf.queued(IN_TRANSIT) == []
    send(pf, (SAMPLES / "ham-agenda.eml").read_bytes(), [f"bob@{DOMAIN}"])
    copies = pf.wait_for(1)
    assert len(copies) == 1 and headers_of(copies[0])["X-Mailguard-Action"] == "accept"


def test_a_worker_killed_mid_run_loses_no_message(env, pf):
    """Three clients send 30 messages; one worker is killed once some are delivered. A
    message it held gets 451 and is sent again (as an MTA would): all 30 arrive."""
    milter = env["milter"]
    wait_until(lambda: len(worker_pids(milter)) == 2, "two workers")
    victim = worker_pids(milter)[0]
    raw = (SAMPLES / "ham-agenda.eml").read_bytes()
    tempfails: list[int] = []

    def client(count: int) -> None:
        for _ in range(count):
            for _attempt in range(20):
                try:
                    send(pf, raw, [f"bob@{DOMAIN}"])
                    break
                except smtplib.SMTPDataError as exc:
                    assert exc.smtp_code == 451, exc
                    tempfails.append(exc.smtp_code)
                    time.sleep(0.1)

    clients = [threading.Thread(target=client, args=(10,)) for _ in range(3)]
    for c in clients:
        c.start()
    wait_until(lambda: len(pf.delivered_paths()) >= 3, "the first deliveries")
    os.kill(victim, signal.SIGKILL)
    for c in clients:
        c.join(120)
    assert len(pf.wait_for(30, timeout=60)) == 30
    wait_until(lambda: len(worker_pids(milter)) == 2 and victim not in worker_pids(milter), "a replacement worker")
    assert milter.proc.poll() is None


def test_sigterm_drains_then_milter_down_tempfails_then_recovers(env, pf):
    milter = env["milter"]
    raw = (SAMPLES / "ham-agenda.eml").read_bytes()
    # Postfix talks to the milter only from the first DATA of a session on (it buffers the
    # no-reply events), so "in flight" is a session that has sent one message already:
    # a second message on it after SIGTERM is still scanned and delivered.
    s = pf.smtp(timeout=20)
    s.ehlo("client.example.org")
    s.sendmail("alice@example.org", [f"bob@{DOMAIN}"], raw)
    assert len(pf.wait_for(1)) == 1
    milter.signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "draining 1 connection" not in milter.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "draining 1 connection" in milter.output()
    s.sendmail("alice@example.org", [f"carol@{DOMAIN}"], raw)
    copies = pf.wait_for(2)
    assert len(copies) == 2 and headers_of(copies[1])["X-Mailguard-Action"] == "accept"
    assert milter.proc.poll() is None  # still draining while the session is open
    s.quit()
    assert milter.proc.wait(timeout=20) == 0

    # milter gone: Postfix answers 451 and accepts nothing
    pf.clear_maildir()
    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)) as err:
        with pf.smtp(timeout=20) as s2:
            s2.sendmail("alice@example.org", [f"bob@{DOMAIN}"], raw)
    code = getattr(err.value, "smtp_code", None) or next(iter(err.value.recipients.values()))[0]
    assert code == 451
    time.sleep(0.3)
    assert pf.delivered() == [] and pf.queued(IN_TRANSIT) == []

    # killed hard mid-life: same answer; restarted: mail flows again
    milter.start()
    milter.proc.kill()
    milter.proc.wait()
    with pytest.raises(smtplib.SMTPSenderRefused) as err2:
        with pf.smtp(timeout=20) as s3:
            s3.sendmail("alice@example.org", [f"bob@{DOMAIN}"], raw)
    assert err2.value.smtp_code == 451
    milter.start()
    send(pf, raw, [f"bob@{DOMAIN}"])
    assert len(pf.wait_for(1)) == 1


def metric_samples(port: int) -> dict[str, float]:
    """The exporter's text format read into {"name{labels}": value}."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_prometheus_metrics_count_messages_by_reply_and_time_scans(env, pf):
    before = metric_samples(env["metrics_port"])
    send(pf, (SAMPLES / "ham-agenda.eml").read_bytes(), [f"bob@{DOMAIN}"])
    with pytest.raises(smtplib.SMTPDataError):
        send(pf, (SAMPLES / "spam-pharmacy-html.eml").read_bytes(), [f"bob@{DOMAIN}"])
    after = metric_samples(env["metrics_port"])

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew('mailguard_milter_messages_total{action="accept"}') == 1
    assert grew('mailguard_milter_messages_total{action="reject"}') == 1
    assert grew("mailguard_milter_scan_seconds_count") == 2
    assert grew("mailguard_milter_scan_seconds_sum") > 0


def test_unix_socket_is_reachable_by_postfix(tmp_path_factory):
    """The socket libmilter creates gets mode 0660 and group postfix, so Postfix (user postfix) can connect."""
    require("postfix", postfix_binary() is not None, "scripts/system-deps installs it")
    require("pymilter", _has_pymilter(), "pip install 'mailguard[milter]' (needs libmilter-dev)")
    require("root", os.geteuid() == 0, "a private Postfix instance needs root")
    work = tmp_path_factory.mktemp("milter-unix", numbered=True)
    work.chmod(0o755)  # user postfix must reach the socket inside
    sock = Path("/tmp") / f"mg-{os.getpid()}-{work.name}.sock"  # unix socket paths must stay short
    config = work / "mailguard.toml"
    write_config(config, store=work / "store.sqlite3", port=0, clamd=None, socket=f"unix:{sock}")
    milter = MilterProcess(config, 0, work, unix_path=sock)
    milter.start()
    pf = PostfixInstance(milter=f"unix:{sock}")
    try:
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        pf.start()
        queue_id = send(pf, (SAMPLES / "ham-agenda.eml").read_bytes(), [f"bob@{DOMAIN}"])
        copies = pf.wait_for(1)
        assert len(copies) == 1 and headers_of(copies[0])["X-Mailguard-Action"] == "accept"
        assert milter.line_for(queue_id)["action"] == "accept"
    finally:
        milter.stop()
        pf.close()
        sock.unlink(missing_ok=True)
