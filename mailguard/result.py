"""What scorers and scans produce: a scorer's description and its hits, the combined result,
and the verdict."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

__all__ = ["Action", "Contribution", "Hit", "ScanResult", "ScorerFailure", "ScorerInfo", "Verdict"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScorerInfo:
    """What the scanner and combiner need to know about a scorer, before any scan."""

    group: str  # contributions are capped per group
    symbols: Mapping[str, str]  # every symbol it can emit -> one-line description
    default_weights: Mapping[str, float]  # used until the combiner has learned a weight
    network: bool = False  # needs the network: off with --no-network
    learns: bool = False  # has ``learn``; its points are left out when deciding autolearn
    # learns from the labelled corpus through ``learn(source="train")`` when a model is trained
    # (False for a learner whose training lives in the model artifact, like bayes)
    seeded: bool = False
    timeout: float = 2.0  # seconds


@dataclasses.dataclass(frozen=True)
class Hit:
    """One piece of evidence a scorer found. ``value`` is its strength (1.0 for a plain rule hit,
    log-odds for a classifier); the combiner's weight turns it into points. No policy here."""

    symbol: str
    value: float = 1.0
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Contribution:
    """How far one hit moved the score, for explanations: ``points = weight * value`` (after caps)."""

    scorer: str
    symbol: str
    value: float
    weight: float
    points: float
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class ScorerFailure:
    scorer: str
    kind: str  # "error" | "timeout"
    message: str


class Action(enum.StrEnum):
    """What to do with the message, mildest first."""

    ACCEPT = "accept"
    TAG = "tag"
    JUNK = "junk"
    QUARANTINE = "quarantine"
    TEMPFAIL = "tempfail"
    REJECT = "reject"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The decision for one recipient: the action, the headers to add and the SMTP reply."""

    action: Action
    user: str | None
    score: float
    required: float  # the score at which this user's mail counts as spam
    is_spam: bool
    headers: tuple[tuple[str, str], ...]
    smtp_reply: tuple[str, str, str] | None  # (code, enhanced code, text) for tempfail/reject
    subject: str | None  # rewritten subject, when the policy tags subjects
    reason: str  # one line: which thresholds or forced actions decided


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """Everything one scan found, for one recipient (``verdict.user``)."""

    score: float  # combined log-odds; 0 means even odds
    probability: float  # calibrated spam probability
    contributions: tuple[Contribution, ...]  # biggest effect first
    failures: tuple[ScorerFailure, ...]
    problems: tuple[str, ...]  # parts of the message that were skipped, and why
    elapsed: float  # seconds
    verdict: Verdict
    learned: str | None = None  # "spam" | "ham" when the learn phase trained on this message

    def top(self, n: int = 5) -> tuple[Contribution, ...]:
        return self.contributions[:n]

    def to_dict(self) -> dict[str, object]:
        return {
            "score": round(self.score, 3),
            "probability": self.probability,
            "action": str(self.verdict.action),
            "user": self.verdict.user,
            "required": self.verdict.required,
            "contributions": [
                {
                    "scorer": c.scorer,
                    "symbol": c.symbol,
                    "value": round(c.value, 4),
                    "weight": round(c.weight, 4),
                    "points": round(c.points, 3),
                    "reason": c.reason,
                }
                for c in self.contributions
            ],
            "failures": [dataclasses.asdict(f) for f in self.failures],
            "problems": list(self.problems),
            "elapsed_ms": round(self.elapsed * 1000, 2),
            "learned": self.learned,
        }
