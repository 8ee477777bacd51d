"""What test_pool.py runs inside worker processes. Workers import this module by name, so it
imports only mailguard's scanner (not the test suite, which would slow every worker start)."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from mailguard import Config, Hit, Scanner
from mailguard.config import ScannerConfig, StoreConfig
from mailguard.result import ScorerInfo


class StallScorer:
    """Holds a message whose subject says "stall" until its worker is killed; says OK otherwise."""

    name = "stall"
    info = ScorerInfo(group="stall", symbols={"OK": ""}, default_weights={"OK": 0.0}, timeout=7200.0)

    async def score(self, ctx):
        if "stall" in (ctx.subject or ""):
            await asyncio.sleep(3600)
        return [Hit("OK")]


def stalling_scanner() -> Scanner:
    """A worker's scanner: memory store, no model, one StallScorer."""
    config = Config(store=StoreConfig(backend="memory"), scanner=ScannerConfig(deadline=7200.0))
    return Scanner(config, scorers=[StallScorer()])


async def pid_after(scanner: Scanner, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()


async def explode(scanner: Scanner) -> None:
    raise ValueError("bad input")


async def linger_at_exit(scanner: Scanner, seconds: float) -> int:
    """Leave a (non-daemon) thread running, so this worker's exit comes ``seconds`` after it
    closed its pipe: the parent's reader thread and close() then wait for it together."""
    threading.Thread(target=time.sleep, args=(seconds,)).start()
    return os.getpid()
