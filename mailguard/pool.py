"""Scanner processes: use every core for scanning (the milter's ``[milter] workers``, ``scan --jobs``).

One Python process scans on one core at a time (the GIL), so `ScanPool` starts N worker
processes, each with its own `Scanner` on the shared store (SQLite in WAL mode on one host,
Redis across hosts: what one worker learns, the others read). The caller's threads hand
jobs to them and get a `concurrent.futures.Future` back.

Why not `concurrent.futures.ProcessPoolExecutor`: a worker that dies breaks that whole
executor, and nothing says which jobs the dead worker held. Here each worker has its own
private pipe and the pool knows which jobs each one holds, so:

- a worker that dies (kill -9, a crash in a C library) fails exactly its own jobs with
  `WorkerDied` (the milter answers those ``on_error``) and is started again;
- `reload` starts a fresh set of workers (config and model read again), switches new jobs
  to them once every one of them is ready, and lets the old ones finish what they hold;
- `close` drains: every worker finishes its jobs, then exits.

A worker runs one asyncio loop, so the jobs it holds are scanned concurrently (network
scorers wait on DNS or clamd, not on each other), as in the single-process milter. Jobs and
results travel pickled over the private pipes between this process and its own children
(spawned, not forked: no copied locks or threads); nothing else is ever unpickled. Workers
ignore SIGINT, SIGTERM and SIGHUP: the parent decides when they stop, and a worker whose
parent is gone (its pipe closed) exits by itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .errors import MailguardError

if TYPE_CHECKING:
    from .scanner import Scanner

__all__ = ["ScanPool", "WorkerDied", "core_count"]

log = logging.getLogger("mailguard.pool")

# A job: a module-level coroutine function called as ``await job(scanner, *args)`` in a worker
# (pickled by name, so it must be importable there).
Job = Callable[..., Awaitable[Any]]
ScannerFactory = Callable[[], "Scanner"]

_RESTART_PAUSE = 1.0  # seconds before restarting a worker that died before it was ready


class WorkerDied(MailguardError):
    """The worker process holding a job exited before answering it."""


def core_count() -> int:
    """The cores this process may run on (its CPU affinity, not just the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# -- the worker process ---------------------------------------------------------------------


def _worker_main(conn: multiprocessing.connection.Connection, factory: ScannerFactory) -> None:
    """A worker: build the scanner, say ready, then run every job it is sent until told to stop
    (``None``) or until the parent is gone; jobs still running are finished first."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    try:
        scanner = factory()
    except Exception as exc:  # e.g. a missing model: the parent reports it
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    loop = asyncio.new_event_loop()
    send_lock = threading.Lock()
    tasks: set[asyncio.Task[None]] = set()
    stopping = asyncio.Event()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    async def run(job_id: int, job: Job, args: tuple[Any, ...]) -> None:
        try:
            value = await job(scanner, *args)
        except Exception as exc:  # reported to the caller as this job's error
            value, ok = f"{type(exc).__name__}: {exc}", False
        else:
            ok = True
        try:
            send((job_id, ok, value))
        except (OSError, ValueError):  # the parent is gone
            stopping.set()
        except Exception as exc:  # the result would not pickle
            send((job_id, False, f"result not sendable: {type(exc).__name__}: {exc}"))

    def start(job_id: int, job: Job, args: tuple[Any, ...]) -> None:
        task = loop.create_task(run(job_id, job, args))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def receive(data: bytes) -> None:
        """Unpickle on the loop's thread: reading a job may import its module, and imports
        stay on the main thread, never racing a scan's."""
        try:
            message = pickle.loads(data)  # from our own parent, over our private pipe
        except Exception as exc:  # a job that cannot be read: exit, so the parent fails what this worker held
            print(f"mailguard scanner worker {os.getpid()}: cannot read a job: {type(exc).__name__}: {exc}", file=sys.stderr)
            message = None
        if message is None:
            stopping.set()
        else:
            start(*message)

    def read() -> None:  # a thread: the pipe is read while the loop scans
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(stopping.set)
                return
            loop.call_soon_threadsafe(receive, data)

    async def main() -> None:
        await stopping.wait()
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
        await scanner.aclose()

    send(("ready", os.getpid()))
    threading.Thread(target=read, name="mailguard-worker-reader", daemon=True).start()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        conn.close()


# -- the parent's side ----------------------------------------------------------------------


class _Worker:
    """One worker process as the parent sees it: its pipe, and the jobs it holds."""

    def __init__(self, ctx: Any, factory: ScannerFactory, slot: int) -> None:
        self.slot = slot
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, factory), name=f"mailguard-worker-{slot}", daemon=True)
        self.process.start()
        child.close()  # so the parent sees EOF when the worker dies
        self.started = time.monotonic()
        self.ready = threading.Event()
        self.failed: str | None = None  # the scanner could not be built
        self.retiring = False  # replaced (reload) or closing: not restarted, sent no new jobs
        self.dead = False  # its pipe closed: the jobs it held have been failed
        self.jobs: dict[int, concurrent.futures.Future[Any]] = {}
        self.send_lock = threading.Lock()
        self.reap_lock = threading.Lock()  # see `join`

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the process to exit; whether it has. One thread at a time:
        two threads joining one process race in waitpid, and the loser is told the child is
        still alive (multiprocessing reads ECHILD as "not yet"), which once made `close`
        kill a worker that had already exited, and could hit a reused pid."""
        with self.reap_lock:
            self.process.join(timeout)
            return self.process.exitcode is not None

    @property
    def pid(self) -> int | None:
        return self.process.pid


class ScanPool:
    """N scanner processes behind one ``submit``; see the module docstring."""

    def __init__(self, factory: ScannerFactory, workers: int, *, start_timeout: float = 120.0) -> None:
        if workers < 1:
            raise ValueError("a scan pool needs at least one worker")
        self.size = workers
        self.start_timeout = start_timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._closing = False
        self._workers: list[_Worker] = []  # taking new jobs
        self._all: set[_Worker] = set()  # every worker not yet reaped (retiring ones too)
        self._changed = threading.Condition(self._lock)
        self._factory = factory
        self._start_set(factory, self._workers)

    # -- starting and stopping workers ----------------------------------------------------

    def _start_set(self, factory: ScannerFactory, into: list[_Worker]) -> None:
        """Start ``size`` workers into ``into`` and wait until all are ready; on failure they
        are stopped and MailguardError says why."""
        new = [self._spawn(factory, slot) for slot in range(self.size)]
        deadline = time.monotonic() + self.start_timeout
        try:
            for worker in new:
                worker.ready.wait(max(0.0, deadline - time.monotonic()))
                if worker.failed or not worker.ready.is_set():
                    raise MailguardError(f"scanner worker did not start: {worker.failed or f'not ready after {self.start_timeout:.0f}s'}")
        except BaseException:
            for worker in new:
                self._retire(worker)
            raise
        into[:] = new

    def _spawn(self, factory: ScannerFactory, slot: int) -> _Worker:
        worker = _Worker(self._ctx, factory, slot)
        with self._lock:
            self._all.add(worker)
        threading.Thread(target=self._read, args=(worker, factory), name=f"mailguard-pool-{slot}", daemon=True).start()
        return worker

    def _retire(self, worker: _Worker) -> None:
        """No new jobs for ``worker``; it finishes the ones it holds, then exits."""
        with self._lock:
            worker.retiring = True
        try:
            with worker.send_lock:
                worker.conn.send(None)
        except (OSError, ValueError):
            pass  # already gone

    def reload(self, factory: ScannerFactory | None = None) -> None:
        """Replace every worker by a new one built by ``factory`` (default: the same factory,
        which reads config and model again). Jobs keep going to the old workers until all
        new ones are ready; the old ones then finish what they hold. A failure to start
        raises MailguardError and leaves the running workers in place."""
        factory = factory or self._factory
        new: list[_Worker] = []
        self._start_set(factory, new)
        with self._lock:
            old, self._workers, self._factory = self._workers, new, factory
        for worker in old:
            self._retire(worker)

    def close(self, timeout: float = 30.0) -> None:
        """Drain: every worker finishes the jobs it holds and exits (killed after ``timeout``)."""
        with self._lock:
            self._closing = True
            workers = list(self._all)
        for worker in workers:
            self._retire(worker)
        deadline = time.monotonic() + timeout
        for worker in workers:
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning("scanner worker %s still busy after %.0fs: killed", worker.pid, timeout)
                with worker.reap_lock:
                    if worker.process.exitcode is None:  # not reaped meanwhile: its pid is still its own
                        worker.process.kill()
                worker.join(5)

    def __enter__(self) -> ScanPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs -----------------------------------------------------------------------------

    def submit(self, job: Job, *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``await job(scanner, *args)`` in the worker holding the fewest jobs (ready
        workers first). The future fails with WorkerDied if that worker dies first."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()  # cannot be cancelled: it is in a worker's hands
        job_id = next(self._ids)
        with self._lock:
            if self._closing or not self._workers:
                raise MailguardError("the scan pool is closed")
            worker = min(self._workers, key=lambda w: (w.dead, not w.ready.is_set(), len(w.jobs)))
            if worker.dead:  # every worker is restarting: answer now rather than wait
                future.set_exception(WorkerDied("no scanner worker is running (restarting)"))
                return future
            worker.jobs[job_id] = future
        try:
            with worker.send_lock:
                worker.conn.send((job_id, job, args))
        except (OSError, ValueError) as exc:  # it died just now: its reader fails the job
            self._fail(worker, job_id, WorkerDied(f"scanner worker {worker.pid} is gone: {exc}"))
        return future

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers taking new jobs that are up (started, scanner built)."""
        with self._lock:
            return [w.pid for w in self._workers if w.pid is not None and w.ready.is_set() and not w.dead and not w.failed]

    def holding(self) -> dict[int, int]:
        """How many jobs each worker (by pid) holds right now."""
        with self._lock:
            return {w.pid: len(w.jobs) for w in self._all if w.pid is not None}

    def wait_for_change(self, timeout: float) -> None:
        """Block until a worker starts, dies or answers (or ``timeout``): for tests and tools."""
        with self._changed:
            self._changed.wait(timeout)

    def _fail(self, worker: _Worker, job_id: int, exc: BaseException) -> None:
        with self._lock:
            future = worker.jobs.pop(job_id, None)
        if future is not None and not future.done():
            future.set_exception(exc)

    def _read(self, worker: _Worker, factory: ScannerFactory) -> None:
        """One thread per worker: hand its answers to the futures; when its pipe closes,
        fail the jobs it still held and start a replacement unless it was retiring."""
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            tag = message[0]
            if tag == "ready":
                worker.ready.set()
            elif tag == "failed":
                worker.failed = message[1]
                worker.ready.set()
            else:
                job_id, ok, value = message
                with self._lock:
                    future = worker.jobs.pop(job_id, None)
                if future is not None:
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(MailguardError(value))
            with self._changed:
                self._changed.notify_all()
        worker.join(5)
        worker.conn.close()
        code = worker.process.exitcode
        with self._lock:
            held, worker.jobs, worker.dead = list(worker.jobs.values()), {}, True
            self._all.discard(worker)
            restart = not worker.retiring and not self._closing
        if worker.failed and restart:
            log.error("scanner worker %s could not start: %s", worker.pid, worker.failed)
        elif held or restart:
            log.error("scanner worker %s exited (code %s) holding %d message(s)", worker.pid, code, len(held))
        for future in held:
            future.set_exception(WorkerDied(f"scanner worker {worker.pid} exited (code {code})"))
        if restart:
            if not worker.ready.is_set() or time.monotonic() - worker.started < _RESTART_PAUSE:
                time.sleep(_RESTART_PAUSE)  # no tight loop of crashing starts
            self._replace(worker, factory)
        with self._changed:
            self._changed.notify_all()

    def _replace(self, dead: _Worker, factory: ScannerFactory) -> None:
        with self._lock:
            if self._closing or dead not in self._workers:
                return
        fresh = self._spawn(factory, dead.slot)
        with self._lock:
            if self._closing or dead not in self._workers:
                stale = True
            else:
                self._workers[self._workers.index(dead)] = fresh
                stale = False
        if stale:
            self._retire(fresh)
        else:
            log.info("scanner worker %s started in place of %s", fresh.pid, dead.pid)
