"""Score thresholds: the score at or above which each action applies, and the named levels.

Below both the configuration (which checks a site's [policy] against them) and the policy
(which applies them per user), so neither has to import the other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .result import Action

__all__ = ["ACTIONS_BY_SCORE", "LEVELS", "Thresholds"]

ACTIONS_BY_SCORE = ("tag", "junk", "quarantine", "reject")  # mildest first


@dataclasses.dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Score at or above which each action applies; None turns an action off."""

    tag: float | None = None
    junk: float | None = None
    quarantine: float | None = None
    reject: float | None = None

    @property
    def required(self) -> float:
        """The score at which mail counts as spam: the first threshold past tagging."""
        for name in ("junk", "quarantine", "reject", "tag"):
            value = getattr(self, name)
            if value is not None:
                return value
        return float("inf")

    def action_for(self, score: float) -> Action:
        action = Action.ACCEPT
        for name in ACTIONS_BY_SCORE:
            value = getattr(self, name)
            if value is not None and score >= value:
                action = Action(name)
        return action

    def with_overrides(self, overrides: Mapping[str, Any]) -> Thresholds:
        unknown = set(overrides) - set(ACTIONS_BY_SCORE)
        if unknown:
            raise ConfigError(f"unknown threshold(s): {', '.join(sorted(unknown))}")
        for name, value in overrides.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"threshold {name} must be a number or null")
        return dataclasses.replace(self, **{k: (None if v is None else float(v)) for k, v in overrides.items()})

    def shifted(self, shift: float, *, floor: float = -math.inf, ceiling: float = math.inf) -> Thresholds:
        """Every threshold moved by ``shift``, but never carried past ``floor`` (moving down)
        or ``ceiling`` (moving up); one already outside them stays where it was set."""
        if not shift:
            return self

        def move(value: float | None) -> float | None:
            if value is None:
                return None
            if shift < 0:
                return max(value + shift, min(value, floor))
            return min(value + shift, max(value, ceiling))

        return Thresholds(**{name: move(getattr(self, name)) for name in ACTIONS_BY_SCORE})


# Chosen on the pooled 5-fold benchmark (benchmarks/quality.py, SpamAssassin corpus):
# medium junks at 3.4 (1 false positive in 4,150 ham, 95.4% of spam caught), high at 2.0
# (6 false positives, 97.7%), low at 5.0 (none, 87.2%). Scores are log-odds.
LEVELS: dict[str, Thresholds] = {
    "low": Thresholds(tag=3.4, junk=5.0),
    "medium": Thresholds(tag=2.0, junk=3.4),
    "high": Thresholds(tag=1.0, junk=2.0),
}
