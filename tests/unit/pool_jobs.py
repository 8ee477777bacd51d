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


class DieScorer:
    """Ends its worker process at once on a message whose subject says "die" (as a crash in a
    C library would); says OK otherwise."""

    name = "die"
    info = ScorerInfo(group="die", symbols={"OK": ""}, default_weights={"OK": 0.0})

    async def score(self, ctx):
        if "die" in (ctx.subject or ""):
            os._exit(70)
        return [Hit("OK")]


def stalling_scanner() -> Scanner:
    """A worker's scanner: memory store, no model, one StallScorer."""
    config = Config(store=StoreConfig(backend="memory"), scanner=ScannerConfig(deadline=7200.0))
    return Scanner(config, scorers=[StallScorer()])


def dying_scanner() -> Scanner:
    """A worker's scanner: memory store, no model, one DieScorer."""
    return Scanner(Config(store=StoreConfig(backend="memory")), scorers=[DieScorer()])


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
