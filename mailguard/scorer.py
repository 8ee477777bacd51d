"""The scorer protocol and the registry that finds scorers through entry points.

A scorer is a small object with a ``name``, an ``info`` and ``async score(ctx)``.
Built-in and third-party scorers register alike, in the ``mailguard.scorers``
entry-point group, and are imported only when enabled in the configuration.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Collection, Mapping
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, runtime_checkable

from .config import Config
from .dns import Resolver
from .errors import ConfigError
from .message.context import MessageContext
from .model import ModelBundle
from .result import Hit, ScorerInfo
from .stores.base import Store

__all__ = ["ENTRY_POINT_GROUP", "Label", "LearningScorer", "Scorer", "ScorerFactory", "ScorerInfo", "Services", "Source", "available_scorers", "load_scorer", "symbol_weights"]

ENTRY_POINT_GROUP = "mailguard.scorers"

Label = Literal["spam", "ham"]
# Where a label comes from: the labelled training corpus, the scanner's own confident
# verdict (autolearn), or a person's report. Scorers may trust them differently.
Source = Literal["train", "autolearn", "report"]


@dataclasses.dataclass(frozen=True)
class Services:
    """Shared things handed to scorers at construction: configuration, store, model, DNS resolver."""

    config: Config
    store: Store
    model: ModelBundle | None
    resolver: Resolver | None = None  # the shared DNS client for network scorers (None: no DNS)
    # "now" for every scorer that keeps time in the store (tests and offline replays inject one)
    clock: Callable[[], float] = time.time


@runtime_checkable
class Scorer(Protocol):
    name: str
    info: ScorerInfo

    async def score(self, ctx: MessageContext) -> list[Hit]:
        """Evidence about ``ctx``; an empty list means no opinion."""
        ...


class LearningScorer(Scorer, Protocol):
    async def learn(self, ctx: MessageContext, label: Label, user: str | None = None, *, source: Source = "report") -> None:
        """Update what the scorer knows with ``ctx`` labelled ``label`` (for ``user`` only, if given)."""
        ...


class ScorerFactory(Protocol):
    """What an entry point names: usually the scorer class itself."""

    def from_config(self, section: Mapping[str, Any], services: Services) -> Scorer:
        """Validate ``section`` and build the scorer; raise ConfigError here, never mid-scan."""
        ...


def symbol_weights(section: Mapping[str, Any], symbols: Collection[str], where: str) -> dict[str, float]:
    """A scorer section's ``weights`` table (SYMBOL = number), checked against the symbols
    the scorer emits; the weights a site sets by hand replace the scorer's defaults."""
    weights = section.get("weights", {})
    if not isinstance(weights, Mapping) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in weights.values()
    ):
        raise ConfigError(f"{where} weights must be a table of SYMBOL = number")
    stray = set(weights) - set(symbols)
    if stray:
        raise ConfigError(f"{where} weights names symbols this scorer never emits: {', '.join(sorted(stray))}")
    return {str(k): float(v) for k, v in weights.items()}


def available_scorers() -> dict[str, Any]:
    """Registered scorer names -> entry points (not yet imported)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_scorer(name: str, section: Mapping[str, Any], services: Services) -> Scorer:
    """Import the scorer registered as ``name`` and build it from its config section."""
    eps = available_scorers()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ConfigError(f"unknown scorer {name!r} (registered: {known}); is mailguard installed?")
    factory = eps[name].load()
    scorer = factory.from_config(section, services)
    if not isinstance(scorer, Scorer):
        raise ConfigError(f"scorer {name!r} does not implement the Scorer protocol")
    return scorer
