"""A private redis-server on a loopback port, for store tests: no persistence by default, or
an append-only file (``RedisServer(appendfsync="always")``) for durability tests.

Recipe verified in ../shared/integration.md (section 4). ``stop()`` (or ``kill()``, SIGKILL)
and ``start()`` again reuse the same port and directory, so a test can take Redis away under
a running store and bring it back, with whatever it persisted.

    with RedisServer() as server:
        store = RedisStore(server.url)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .system import find_binary, free_port, stop_process

__all__ = ["RedisServer", "redis_server_binary"]


def redis_server_binary() -> str | None:
    return find_binary("redis-server")


class RedisServer:
    """``with RedisServer() as server`` gives a running redis-server at ``server.url``;
    stopped and its directory removed afterwards."""

    def __init__(self, *, appendfsync: str | None = None) -> None:
        """``appendfsync``: None for no persistence, else "always", "everysec" or "no" with
        ``appendonly yes`` (see the README on what each loses when Redis or the machine dies)."""
        if appendfsync not in (None, "always", "everysec", "no"):
            raise ValueError(f"appendfsync must be None, 'always', 'everysec' or 'no', not {appendfsync!r}")
        self.appendfsync = appendfsync
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server not found (Debian: apt-get install redis-server; see scripts/system-deps)")
        self.binary = binary
        self.directory = Path(tempfile.mkdtemp(prefix="mg-redis-"))
        self.log_path = self.directory / "redis.log"
        self.port: int | None = None  # chosen at the first start, kept for restarts
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("RedisServer has not been started")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start on a free port (a new one if it was taken meanwhile), or on the old port again."""
        fixed = self.port is not None
        for _ in range(20):
            port = self.port if fixed else free_port()
            assert port is not None
            if self._launch(port, timeout):
                self.port = port
                return self
            if fixed:  # the old port may still be held for a moment by the process we stopped
                time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start: {self.log()[-2000:]}")

    def _launch(self, port: int, timeout: float) -> bool:
        """True once this process answers PING on ``port``; False if it exited (port taken)."""
        persistence = ["--appendonly", "no"] if self.appendfsync is None else ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence,
                "--daemonize", "no", "--dir", str(self.directory), "--logfile", ""]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            if _ping(port):
                return True
            time.sleep(0.01)
        self.stop()
        raise TimeoutError(f"redis-server did not answer PING within {timeout}s: {self.log()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: Redis dies as in a crash, with no chance to write anything more."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
