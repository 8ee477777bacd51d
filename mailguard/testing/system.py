"""Small facts about this machine that the component fixtures need."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

__all__ = ["find_binary", "free_port", "stop_process"]


def find_binary(name: str) -> str | None:
    """A system program on PATH or in /usr/sbin (daemons live there, often off a user's PATH)."""
    found = shutil.which(name)
    if found:
        return found
    fallback = Path("/usr/sbin") / name
    return str(fallback) if fallback.exists() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; waits, so no zombie is left behind."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
