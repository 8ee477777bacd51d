"""``mailguard milter``: the Postfix (and Sendmail) milter daemon, on pymilter.

Threads, and why:

- libmilter runs one thread per MTA connection; each collects its envelope, headers and
  body (`MilterConnection`). At end of message it hands the scan to...
- ...the scanner processes (`PoolService`: ``[milter] workers``, one per core by default,
  see mailguard/pool.py), each scanning the messages it holds concurrently on its own
  asyncio loop, or with ``workers = 1`` one scanner thread in this process
  (`ScanService`: no processes, no pickling). Either way every message is scanned by the
  same `Scanner.scan` the CLI and library use, and the connection's thread waits for the
  verdict up to ``[milter] deadline``. Verdicts become milter calls in exactly one place,
  `mailguard.milter.actions`. A worker process that dies is started again; the messages
  it held are answered ``on_error``.
- The main thread handles signals. libmilter's own signal thread would stop the daemon on
  SIGHUP too, so libmilter runs in a second thread (only that thread and its children
  block the signals) and the main thread, which does not block them, receives them:
  SIGTERM/SIGINT stop accepting connections and drain the ones in flight (then the
  workers finish what they hold and exit); SIGHUP loads a new config and model into every
  worker (new workers replace the old ones) without touching any connection.

Never lose mail: an exception, a missed deadline or a shutdown during a message answers
``[milter] on_error`` (451 4.7.1 by default, so the client retries), logged with the
queue id. With ``milter_default_action = tempfail`` in Postfix, a daemon that is down
gives 451 as well.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import Milter

from ..config import Config, load_config
from ..errors import MailguardError, MilterError
from ..message.context import Envelope
from .metrics import MilterMetrics
from .actions import Outcome, apply_error, apply_verdicts
from ..policy import canonical_user
from ..pool import ScanPool, WorkerDied, core_count
from ..result import ScanResult
from ..scanner import Scanner

__all__ = ["MilterConnection", "MilterDaemon", "PoolService", "ScanService", "run_milter"]

log = logging.getLogger("mailguard.milter")
message_log = logging.getLogger("mailguard.milter.messages")


class ScanService:
    """One thread with one asyncio loop where every scan runs (not one loop per message),
    so scorers' connection pools, caches and the store are shared by all connections."""

    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="mailguard-scanner", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> ScanService:
        self.thread.start()
        return self

    def scan_message(self, raw: bytes, envelope: Envelope, note: str | None) -> concurrent.futures.Future[dict[str, ScanResult]]:
        """Scan once per distinct recipient (each with their own thresholds), parsing once."""
        return asyncio.run_coroutine_threadsafe(_scan_all(self.scanner, raw, envelope, note), self.loop)

    def reload(self, config: Config, grace: float) -> str:
        """Use a new scanner on ``config`` from now on; the old one is closed once its scans
        can have ended. Returns the new model's version."""
        scanner = Scanner(config)
        old, self.scanner = self.scanner, scanner

        def close_old() -> None:
            self.loop.create_task(old.aclose())

        self.loop.call_soon_threadsafe(self.loop.call_later, grace, close_old)
        return scanner.model.version if scanner.model else "(none)"

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.scanner.aclose(), self.loop).result(timeout=5)
        except Exception as exc:  # closing the store must not keep the daemon from exiting
            log.warning("closing the scanner failed: %s", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class PoolService:
    """``[milter] workers`` scanner processes (mailguard/pool.py), each building its scanner
    from the config file, so a reload reads config and model again in every worker."""

    def __init__(self, factory: Callable[[], Scanner], workers: int) -> None:
        self.factory = factory  # called in each worker; a reload calls it again
        self.workers = workers
        self.pool: ScanPool | None = None

    def start(self) -> PoolService:
        self.pool = ScanPool(self.factory, self.workers)
        log.info("%d scanner workers started (pids %s)", self.workers, ", ".join(map(str, self.pool.pids)))
        return self

    def scan_message(self, raw: bytes, envelope: Envelope, note: str | None) -> concurrent.futures.Future[dict[str, ScanResult]]:
        assert self.pool is not None, "start() first"
        return self.pool.submit(_scan_all, raw, envelope, note)

    def reload(self, config: Config, grace: float) -> str:
        """New workers on the new config; the old ones finish the messages they hold."""
        assert self.pool is not None, "start() first"
        self.pool.reload()
        return f"in {self.workers} workers (pids {', '.join(map(str, self.pool.pids))})"

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.close(timeout=10.0)


def _scanner_from_file(config_path: str | None) -> Scanner:
    """A worker's scanner (runs in the worker process)."""
    return Scanner(load_config(config_path))


async def _scan_all(scanner: Scanner, raw: bytes, envelope: Envelope, note: str | None) -> dict[str, ScanResult]:
    """One scan per distinct mailbox (aliases and +tags folded), results keyed by recipient address."""
    ctx = scanner.context(raw, envelope)
    if note:
        ctx.problems.append(note)
    users = {rcpt: canonical_user(rcpt, scanner.config.users) for rcpt in envelope.rcpt_to}
    distinct = list(dict.fromkeys(users.values())) or [None]
    results = dict(zip(distinct, await asyncio.gather(*(scanner.scan(ctx, user=u) for u in distinct))))
    return {rcpt: results[user] for rcpt, user in users.items()} or {"": results[None]}


@dataclasses.dataclass
class _Message:
    """What one MAIL FROM .. end of message transaction has collected so far."""

    mail_from: str | None = None
    auth_user: str | None = None
    rcpts: list[str] = dataclasses.field(default_factory=list)  # as the MTA gave them (<a@b>)
    headers: list[bytes] = dataclasses.field(default_factory=list)
    has_subject: bool = False
    body: list[bytes] = dataclasses.field(default_factory=list)
    body_bytes: int = 0  # kept
    body_seen: int = 0  # received


def _addr(value: str) -> str:
    return value.strip().strip("<>").strip()


class MilterConnection(Milter.Base):
    """Per-connection state; libmilter makes one per MTA connection and calls it from
    that connection's thread only."""

    def __init__(self, daemon: MilterDaemon) -> None:
        self.daemon = daemon
        self.client_ip: str | None = None
        self.client_name: str | None = None
        self.helo: str | None = None
        self.msg = _Message()
        self.late = False  # opened after SIGTERM: not drained, answered on_error

    @Milter.noreply
    def connect(self, hostname: str, family: Any, hostaddr: Any) -> int:
        # Postfix buffers the no-reply events (connect, helo, mail, rcpt) and sends them
        # with the first one that needs a reply, so this runs at DATA time, not at SMTP connect.
        self.late = not self.daemon.opened(self)
        if isinstance(hostaddr, tuple) and hostaddr:
            self.client_ip = str(hostaddr[0])
        # Postfix says "unknown" when the client has no (verified) reverse name
        self.client_name = hostname if hostname and hostname != "unknown" and not hostname.startswith("[") else None
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, hostname: str) -> int:
        self.helo = hostname
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.msg = _Message(mail_from=_addr(mailfrom), auth_user=self.getsymval("{auth_authen}") or None)
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to: str, *params: str) -> int:
        self.msg.rcpts.append(to)
        return Milter.CONTINUE

    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, field: Any, value: Any) -> int:
        name = field if isinstance(field, str) else bytes(field).decode("ascii", "replace")
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
        # libmilter joins folded lines with a bare LF; the message as scanned uses CRLF throughout
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self.msg.headers.append(name.encode("ascii", "replace") + b": " + data + b"\r\n")
        self.msg.has_subject = self.msg.has_subject or name.lower() == "subject"
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self.msg.body_seen += len(chunk)
        room = self.daemon.config.milter.max_body_bytes - self.msg.body_bytes
        if room > 0:
            piece = chunk[:room]
            self.msg.body.append(piece)
            self.msg.body_bytes += len(piece)
        return Milter.CONTINUE

    def eom(self) -> int:
        msg, self.msg = self.msg, _Message()
        return self.daemon.end_of_message(self, msg)

    def abort(self) -> int:
        self.msg = _Message()
        return Milter.CONTINUE

    def close(self) -> int:
        self.daemon.closed(self)
        return Milter.CONTINUE


_REPLY_CODES = {"accept": Milter.ACCEPT, "reject": Milter.REJECT, "tempfail": Milter.TEMPFAIL}


class MilterDaemon:
    """Owns the scanner thread, the libmilter thread, metrics and the signal handling."""

    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        *,
        scanner: Scanner | None = None,
        scanner_factory: Callable[[], Scanner] | None = None,
    ) -> None:
        """``scanner``: scan in this process with it (``workers`` is ignored). ``scanner_factory``:
        a picklable, importable callable that builds each worker's scanner (default: from the
        config file, read again on every reload)."""
        self.config = config
        self.config_path = config_path
        self.metrics = MilterMetrics()
        workers = config.milter.workers or core_count()
        self.service: ScanService | PoolService
        if scanner is not None or workers == 1:
            self.service = ScanService(scanner if scanner is not None else Scanner(config))
        else:
            self.service = PoolService(scanner_factory or functools.partial(_scanner_from_file, config_path), workers)
        self._active: set[int] = set()
        self._active_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self._draining = False
        # set when waiting for a verdict must end now (drain timed out): eom answers on_error
        self.abandon: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._milter_thread: threading.Thread | None = None
        self._milter_error: BaseException | None = None

    # -- connection bookkeeping ---------------------------------------------------------

    def opened(self, conn: MilterConnection) -> bool:
        """Count a new connection; False once draining (its message will get on_error)."""
        with self._active_lock:
            if self._draining:
                return False
            self._active.add(id(conn))
            return True

    def closed(self, conn: MilterConnection) -> None:
        with self._active_lock:
            self._active.discard(id(conn))
        self._wake.set()

    @property
    def active(self) -> int:
        with self._active_lock:
            return len(self._active)

    # -- end of message -----------------------------------------------------------------

    def end_of_message(self, conn: MilterConnection, msg: _Message) -> int:
        """Scan and answer; whatever goes wrong answers on_error, never an exception."""
        started = time.perf_counter()
        queue_id = conn.getsymval("i") or None
        results: dict[str, ScanResult] = {}
        scan_seconds = 0.0
        error: str | None = None
        try:
            raw = b"".join(msg.headers) + b"\r\n" + b"".join(msg.body)
            note = None
            if msg.body_seen > msg.body_bytes:
                note = f"body is {msg.body_seen} bytes; only the first {msg.body_bytes} (milter.max_body_bytes) were scanned"
            envelope = Envelope(
                client_ip=conn.client_ip,
                client_name=conn.client_name,
                helo=conn.helo,
                mail_from=msg.mail_from,
                rcpt_to=tuple(_addr(r) for r in msg.rcpts),
                auth_user=msg.auth_user,
                queue_id=queue_id,
            )
            if self.abandon.done() or conn.late:
                raise MilterError("shutting down")
            self.metrics.in_flight.inc()
            try:
                future = self.service.scan_message(raw, envelope, note)
                done, _ = concurrent.futures.wait(
                    [future, self.abandon], timeout=self.config.milter.deadline, return_when=concurrent.futures.FIRST_COMPLETED
                )
            finally:
                self.metrics.in_flight.dec()
            scan_seconds = time.perf_counter() - started
            if future not in done:
                future.cancel()
                raise TimeoutError("shutdown during the scan" if self.abandon.done() else f"no verdict within {self.config.milter.deadline}s")
            results = future.result()
            verdicts = {rcpt: results[_addr(rcpt)].verdict for rcpt in msg.rcpts}
            outcome = apply_verdicts(conn, verdicts, has_subject=msg.has_subject)
        except Exception as exc:  # a bad message or a broken scorer must never take the daemon down
            error = f"{type(exc).__name__}: {exc}"
            log.error("queue id %s: answering %s after %s", queue_id, self.config.milter.on_error, error)
            kind = "timeout" if isinstance(exc, TimeoutError) else "worker" if isinstance(exc, WorkerDied) else "error"
            self.metrics.errors.labels(kind=kind).inc()
            try:
                outcome = apply_error(conn, self.config.milter.on_error, error)
            except Exception as exc2:  # even the error reply failed: libmilter's default 451
                log.error("queue id %s: error reply failed: %s", queue_id, exc2)
                outcome = Outcome("tempfail", "tempfail", (), (), error)
        self._log(queue_id, msg, outcome, results, scan_seconds, time.perf_counter() - started, error)
        return _REPLY_CODES[outcome.reply]

    def _log(
        self,
        queue_id: str | None,
        msg: _Message,
        outcome: Outcome,
        results: dict[str, ScanResult],
        scan_seconds: float,
        total: float,
        error: str | None,
    ) -> None:
        try:
            self.metrics.observe(outcome.action, scan_seconds, list(results.values()))
            first = next(iter(results.values()), None)
            line: dict[str, Any] = {
                "ts": round(time.time(), 3),
                "queue_id": queue_id,
                "action": outcome.action,
                "reply": outcome.reply,
                "score": round(first.score, 3) if first else None,
                "rcpt": {u: str(r.verdict.action) for u, r in results.items()},
                "removed": list(outcome.removed),
                "top": [f"{c.scorer}:{c.symbol} {c.points:+.2f}" for c in first.top(3)] if first else [],
                "failures": sorted({f"{f.scorer}:{f.kind}" for r in results.values() for f in r.failures}),
                "scan_ms": round(scan_seconds * 1000, 2),
                "ms": round(total * 1000, 2),
                "bytes": sum(len(h) for h in msg.headers) + msg.body_seen,
                "truncated": msg.body_seen > msg.body_bytes,
            }
            if error:
                line["error"] = error
            message_log.info(json.dumps(line, ensure_ascii=False))
        except Exception as exc:  # logging must not change the reply
            log.error("queue id %s: log line failed: %s", queue_id, exc)

    # -- lifecycle ----------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True
        self._wake.set()

    def _run_libmilter(self) -> None:
        try:
            Milter.runmilter("mailguard", self.config.milter.socket, timeout=120)
        except BaseException as exc:  # reported by the main thread
            self._milter_error = exc
        finally:
            self._wake.set()

    def _start_libmilter(self) -> None:
        """Start libmilter's thread. A unix socket is created by libmilter itself, so the umask
        decides its permissions: set it from ``socket_mode`` until the socket exists, then give
        the socket its group (Postfix connects as user postfix and needs write access)."""
        conf = self.config.milter
        kind, _, path = conf.socket.partition(":")
        unix_path = Path(path) if kind in ("unix", "local") else None
        old_umask = os.umask(0o777 & ~int(conf.socket_mode, 8)) if unix_path else None
        try:
            self._milter_thread = threading.Thread(target=self._run_libmilter, name="libmilter", daemon=True)
            self._milter_thread.start()
            deadline = time.monotonic() + 10
            if unix_path is None:
                _set_nodelay_on_listener(int(path.partition("@")[0]), self._milter_thread, deadline)
                return
            while not unix_path.is_socket() and self._milter_thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if unix_path.is_socket() and conf.socket_group:
            try:
                shutil.chown(unix_path, group=conf.socket_group)
            except (OSError, LookupError) as exc:
                raise MilterError(f"cannot give {unix_path} to group {conf.socket_group!r}: {exc}") from exc

    def reload(self) -> None:
        """SIGHUP: a new config and model; connections in flight keep the old scanner."""
        try:
            config = load_config(self.config_path)
            model = self.service.reload(config, grace=max(config.milter.deadline, 1.0) + 1.0)
        except (MailguardError, OSError) as exc:
            log.error("reload failed, keeping the running config and model: %s", exc)
            return
        if config.milter != self.config.milter:
            log.warning("[milter] changes other than deadline/on_error/max_body_bytes take effect on restart")
        self.config = config
        log.info("reloaded config and model %s", model)

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until libmilter fails (exit 2)."""
        if threading.current_thread() is not threading.main_thread():
            raise MilterError("the milter daemon must run in the main thread (it handles the signals)")
        milter_conf = self.config.milter
        Milter.factory = functools.partial(MilterConnection, self)
        Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.DELRCPT | Milter.QUARANTINE)
        Milter.set_exception_policy(Milter.TEMPFAIL)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.service.start()
        if milter_conf.metrics_port:
            self.metrics.serve(milter_conf.metrics_port)
        status = 0
        try:
            self._start_libmilter()
            log.info("listening on %s (pid %d)", milter_conf.socket, os.getpid())
            while True:
                self._wake.wait(1.0)
                self._wake.clear()
                if self._reload:
                    self._reload = False
                    self.reload()
                if self._stop:
                    break
                if not self._milter_thread.is_alive():
                    log.error("libmilter stopped: %s", self._milter_error or "no error given (is the socket in use?)")
                    status = 2
                    break
        finally:
            self._shutdown()
        return status

    def _shutdown(self) -> None:
        import milter as _libmilter

        drain = self.config.milter.drain_timeout
        with self._active_lock:
            self._draining = True
        log.info("stopping: draining %d connection(s) in flight (up to %.0fs); newer ones get %s", self.active, drain, self.config.milter.on_error)
        deadline = time.monotonic() + drain
        while self.active and time.monotonic() < deadline:
            self._wake.wait(0.1)
            self._wake.clear()
        if self.active:
            log.warning("%d connection(s) still open after %.0fs: their messages get %s", self.active, drain, self.config.milter.on_error)
        self.abandon.set_result(None)
        _libmilter.stop()  # libmilter ends its remaining connections; Postfix then applies milter_default_action
        if self._milter_thread is not None:
            self._milter_thread.join(timeout=10)
        self.service.stop()
        self.metrics.close()
        log.info("stopped")


def _set_nodelay_on_listener(port: int, thread: threading.Thread, deadline: float) -> None:
    """Turn off Nagle's algorithm on libmilter's listening TCP socket (accepted sockets inherit it).

    libmilter answers end-of-message with one small write per header change and then the
    verdict; the MTA reads them all before it answers, so with Nagle each message waits for a
    delayed ACK (about 40 ms on Linux). libmilter offers no hook, so the socket is found
    among the process's open descriptors once libmilter has opened it."""
    fd_dir = Path("/proc/self/fd")
    while thread.is_alive() and time.monotonic() < deadline:
        for name in os.listdir(fd_dir) if fd_dir.is_dir() else ():
            try:
                sock = socket.socket(fileno=int(name))
            except (OSError, ValueError):
                continue
            try:
                if (
                    sock.family in (socket.AF_INET, socket.AF_INET6)
                    and sock.type == socket.SOCK_STREAM
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and sock.getsockname()[1] == port
                ):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return
            except OSError:
                pass
            finally:
                sock.detach()  # the descriptor stays libmilter's
        time.sleep(0.01)
    log.warning("could not set TCP_NODELAY on the milter socket: each message may wait ~40 ms for delayed ACKs")


def _setup_logging(config: Config) -> None:
    handler: logging.Handler
    if config.milter.log_file:
        Path(config.milter.log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(config.milter.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    message_log.addHandler(handler)
    message_log.setLevel(logging.INFO)
    message_log.propagate = False
    status = logging.StreamHandler(sys.stderr)
    status.setFormatter(logging.Formatter("%(asctime)s mailguard-milter %(levelname)s %(message)s"))
    for status_log in (log, logging.getLogger("mailguard.pool")):  # the daemon's and its workers' status
        if not status_log.handlers:
            status_log.addHandler(status)
            status_log.setLevel(logging.INFO)
            status_log.propagate = False


def run_milter(config_path: str | None = None) -> int:
    """Run the daemon in the foreground (what ``mailguard milter`` does)."""
    # SIGHUP's default action ends the process, and `serve` installs the reload handler only
    # after the model has loaded (seconds): a reload sent meanwhile (systemd's ExecReload, a
    # deploy script) would kill a starting daemon. Ignored until then; the start-up reads the
    # newest config and model anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = load_config(config_path)
    _setup_logging(config)
    daemon = MilterDaemon(config, config_path)
    return daemon.serve()
