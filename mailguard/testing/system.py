"""Small facts about this machine that the component fixtures need."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

__all__ = ["find_binary", "free_port"]


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
