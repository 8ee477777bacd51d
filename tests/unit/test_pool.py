"""The scanner worker pool (mailguard/pool.py): real worker processes, killed for real.

Workers are spawned processes (a second or two to start on this machine); waits poll
for a state, they never assert on how long anything took."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from mailguard import Config
from mailguard import cli
from mailguard.cli import main
from mailguard.config import MilterConfig, StoreConfig
from mailguard.errors import MailguardError
from mailguard.pool import ScanPool, WorkerDied

from ..conftest import HAM_WORDS, SAMPLES, make_message
from .pool_jobs import dying_scanner, explode, linger_at_exit, pid_after, stalling_scanner

pytestmark = pytest.mark.real_clock  # workers are started, killed and waited for in real time

WAIT = 60.0  # upper bound for a worker to start or die: generous, only reached on a failure


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what} after {WAIT}s")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def pool():
    with ScanPool(stalling_scanner, 2) as p:
        yield p


def test_a_job_error_reaches_the_caller_and_the_worker_goes_on(pool):
    with pytest.raises(MailguardError, match="ValueError: bad input"):
        pool.submit(explode).result(WAIT)
    assert pool.submit(pid_after, 0).result(WAIT) in pool.pids


def test_a_killed_worker_fails_only_its_jobs_and_is_restarted(pool):
    stalled = pool.submit(pid_after, 3600)  # held by one worker until it dies
    wait_until(lambda: 1 in pool.holding().values(), "the job to reach a worker")
    victim = next(pid for pid, held in pool.holding().items() if held)
    other = next(pid for pid in pool.pids if pid != victim)
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerDied, match=f"scanner worker {victim} (exited|is gone)"):  # seen by the monitor, or the pipe broke
        stalled.result(WAIT)
    wait_until(lambda: victim not in pool.pids and len(pool.pids) == 2, "a replacement worker")
    assert other in pool.pids  # the other worker was left alone
    both = [pool.submit(pid_after, 0.5) for _ in range(2)]  # one each: the least busy worker gets a job
    assert {job.result(WAIT) for job in both} == set(pool.pids)


def test_reload_replaces_every_worker_and_close_drains_what_they_hold():
    pool = ScanPool(stalling_scanner, 2)
    before = set(pool.pids)
    old_job = pool.submit(pid_after, 1.0)  # the reload must not cut it short
    pool.reload()
    after = set(pool.pids)
    assert after.isdisjoint(before) and len(after) == 2
    new_job = pool.submit(pid_after, 1.0)  # still running when close() is called
    pool.close()
    assert old_job.result(0) in before and new_job.result(0) in after  # answered, not WorkerDied


def test_close_never_kills_a_worker_that_exited_when_told(caplog):
    """A worker that takes a moment to exit after closing its pipe is waited for by two threads
    at once: its reader (which reaps it) and close(). Two joins of one process race in waitpid,
    and the loser was told "still alive": close() logged "still busy" and killed a worker that
    had exited cleanly (or whatever process had its pid by then)."""
    for _ in range(3):
        pool = ScanPool(stalling_scanner, 2)
        processes = [w.process for w in pool._all]
        pids = {job.result(WAIT) for job in [pool.submit(linger_at_exit, 0.3) for _ in range(4)]}
        assert pids <= {p.pid for p in processes}
        pool.close()
        assert [p.exitcode for p in processes] == [0, 0]  # exited by themselves, not killed
    assert "still busy" not in caplog.text


# -- the milter's answer for a message whose worker dies ---------------------------------------

Milter = pytest.importorskip("Milter", reason="pymilter not installed (pip install 'mailguard[milter]')")


@pytest.mark.parametrize("on_error", ["tempfail", "accept"])
def test_milter_answers_on_error_for_a_message_held_by_a_killed_worker(on_error):
    from mailguard.milter.daemon import MilterDaemon

    from .test_milter import eom

    config = Config(store=StoreConfig(backend="memory"), milter=MilterConfig(workers=2, deadline=3600.0, on_error=on_error))
    daemon = MilterDaemon(config, scanner_factory=stalling_scanner)
    daemon.service.start()
    pool = daemon.service.pool
    try:
        answer: list = []
        stalled = threading.Thread(target=lambda: answer.append(eom(daemon, make_message(HAM_WORDS, subject="stall"), ["<bob@example.net>"])))
        stalled.start()
        wait_until(lambda: 1 in pool.holding().values(), "the message to reach a worker")
        victim = next(pid for pid, held in pool.holding().items() if held)
        os.kill(victim, signal.SIGKILL)
        stalled.join(WAIT)
        code, rec = answer[0]
        if on_error == "tempfail":
            assert code == Milter.TEMPFAIL
            assert rec.calls == [("setreply", "451", "4.7.1", "Message could not be scanned, try again later")]
        else:
            assert code == Milter.ACCEPT and rec.headers()["X-Mailguard-Action"] == "unscanned"
            # killed before or after the parent finished handing it the message: "is gone" (the
            # pipe broke) or "exited" (seen by the monitor); either way that worker, and said so
            assert f"WorkerDied: scanner worker {victim} " in rec.headers()["X-Mailguard-Report"]
        assert daemon.metrics.errors.labels(kind="worker")._value.get() == 1
        wait_until(lambda: victim not in pool.pids and len(pool.pids) == 2, "a replacement worker")
        code, rec = eom(daemon, make_message(HAM_WORDS, subject="agenda"), ["<bob@example.net>"])
        assert code == Milter.ACCEPT and rec.headers()["X-Mailguard-Action"] == "accept"
    finally:
        daemon.service.stop()


# -- scan --jobs ------------------------------------------------------------------------------


def test_scan_jobs_2_prints_what_jobs_1_prints_in_the_same_order(tmp_path, capsys):
    bad = tmp_path / "missing.eml"  # an unreadable input keeps its place too
    paths = [str(SAMPLES), str(bad), str(SAMPLES / "ham-agenda.eml")]
    outputs = []
    for jobs in ("1", "2"):
        status = main(["scan", "--jobs", jobs, "--no-network", "--store", str(tmp_path / f"store-{jobs}.sqlite3"), *paths])
        out, err = capsys.readouterr()
        outputs.append((status, out, err))
    assert outputs[0] == outputs[1]
    status, out, err = outputs[0]
    assert status == 1 and f"{bad}: no such file or directory" in err
    lines = out.splitlines()
    assert len(lines) == len(list(Path(SAMPLES).iterdir())) + 1
    assert [line.split(":")[0] for line in lines] == sorted(str(p) for p in Path(SAMPLES).iterdir()) + [str(SAMPLES / "ham-agenda.eml")]


def test_scan_jobs_a_worker_dying_fails_the_files_it_held_and_the_run_goes_on(tmp_path):
    files = []
    for i in range(2 * cli._BATCH + 3):  # the worker holding the first batch dies on its fourth file
        files.append(tmp_path / f"{i:03}.eml")
        files[-1].write_bytes(make_message(HAM_WORDS, subject="die" if i == 3 else f"note {i}", seed=i))
    args = argparse.Namespace(paths=[str(tmp_path)], user=None, learn=False, json=False)
    with ScanPool(dying_scanner, 2) as pool:
        outcomes = list(cli._scan_in_workers(args, pool))
    assert [line.split(":")[0] for line, _ in outcomes] == [str(f) for f in files]  # input order, none lost
    batches = [outcomes[i : i + cli._BATCH] for i in range(0, len(outcomes), cli._BATCH)]
    died = [all(action is None and "not scanned: scanner worker" in line and "exited (code 70)" in line for line, action in b) for b in batches]
    scanned = [all(action == "accept" for _, action in b) for b in batches]
    assert died[0] and scanned[1]  # the dead worker's batch; the other worker's
    assert all(d != s for d, s in zip(died, scanned))  # a batch fails whole (its worker died) or is scanned whole
