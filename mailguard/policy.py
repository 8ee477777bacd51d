"""Scores to actions: per-recipient thresholds, forced actions, headers and SMTP replies.

Scores are log-odds (0 = even odds, 5 = 99.3% spam). A user's thresholds come from the
store (a named level or explicit numbers), else from the configured global default.

They then move with the user's reports (`Policy.move_thresholds`, called by
`Scanner.report`): a per-user shift kept as a store counter is added to every threshold of
that user, explicit ones included, unless the user's thresholds are marked fixed or
``[users] threshold_moves`` is off. The shift is clamped when written and when read, and a
threshold is never carried past ``[users] threshold_floor``/``threshold_ceiling``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .config import PolicyConfig, UsersConfig, validate_policy_config
from .errors import ConfigError, StoreError
from .message.addresses import MAX_INPUT_CHARS, canonical_address
from .result import Action, Contribution, ScorerFailure, Verdict
from .stores.base import CounterStore, KeyValueStore, together
from .thresholds import ACTIONS_BY_SCORE, LEVELS, Thresholds

__all__ = ["LEVELS", "Policy", "Thresholds", "canonical_user", "validate_policy_config"]

_SEVERITY = (Action.ACCEPT, Action.TAG, Action.JUNK, Action.QUARANTINE, Action.TEMPFAIL, Action.REJECT)


_NO_USERS_CONFIG = UsersConfig()


def canonical_user(address: str, users: UsersConfig | None = None) -> str:
    """The key per-user data is stored under: `canonical_address` (case, display name,
    ``+tag``; with ``users``, its separators and aliases). Never raises: a string that is
    not an address (a bare login such as ``postmaster``) keeps the old key, stripped of
    angle brackets and lower-cased, so a scan of odd mail still finds its user."""
    users = users or _NO_USERS_CONFIG
    try:
        return canonical_address(address, aliases=users.aliases, plus_separators=users.plus_separators)
    except ValueError:
        return address.strip().strip("<>").strip().lower()[:MAX_INPUT_CHARS]


def _user_key(user: str) -> str:
    return f"policy:thresholds:{canonical_user(user)}"


def _shift_key(user: str) -> str:
    return f"policy:shift:{canonical_user(user)}"


Outcome = Literal["missed_spam", "false_positive"]


class Policy:
    def __init__(self, config: PolicyConfig, store: KeyValueStore, users: UsersConfig | None = None) -> None:
        validate_policy_config(config)
        self.config = config
        self.store = store
        self.users = users or _NO_USERS_CONFIG
        # a key-value-only store keeps every user's thresholds fixed
        self._counters: CounterStore | None = store if isinstance(store, CounterStore) else None
        self.default = LEVELS[config.level].with_overrides(config.thresholds)

    async def thresholds_for(self, user: str | None) -> Thresholds:
        """The user's own thresholds from the store, else the global default, moved by the
        user's report-driven shift (module docstring). Both are read at once; a store that
        cannot be read falls back to the default unshifted (and is not fatal)."""
        if not user:
            return self.default
        try:
            raw, shift = await together(self.store, self.store.get(_user_key(user)), self.shift_for(user))
        except StoreError:
            return self.default
        base, moves = self._from_json(raw) if raw is not None else (self.default, True)
        if not moves:
            return base
        return base.shifted(shift, floor=self.users.threshold_floor, ceiling=self.users.threshold_ceiling)

    def _from_json(self, raw: bytes) -> tuple[Thresholds, bool]:
        """(thresholds, whether reports may move them) from a stored user record."""
        try:
            data = json.loads(raw)
            base = LEVELS[data.get("level", self.config.level)]
            return base.with_overrides(data.get("thresholds", {})), data.get("moves", True) is not False
        except (ValueError, KeyError, AttributeError, TypeError, ConfigError):
            return self.default, True

    async def set_user(
        self,
        user: str,
        *,
        level: str | None = None,
        thresholds: Mapping[str, float | None] | None = None,
        moves: bool | None = None,
    ) -> Thresholds:
        """Store a user's level and/or explicit thresholds (validated first); ``moves=False``
        keeps them fixed whatever the user reports (the shift is still recorded)."""
        if level is not None and level not in LEVELS:
            raise ConfigError(f"level must be one of {', '.join(LEVELS)}")
        data: dict[str, Any] = {}
        if level is not None:
            data["level"] = level
        if thresholds:
            data["thresholds"] = dict(thresholds)
        if moves is not None:
            data["moves"] = bool(moves)
        result = LEVELS[level or self.config.level].with_overrides(data.get("thresholds", {}))
        await self.store.set(_user_key(user), json.dumps(data).encode())
        return result

    async def user_record(self, user: str) -> tuple[Thresholds, bool]:
        """The user's thresholds as set (before any shift) and whether their reports move them."""
        raw = await self.store.get(_user_key(user))
        return self._from_json(raw) if raw is not None else (self.default, True)

    def _clamp(self, shift: float) -> float:
        if not math.isfinite(shift):
            return 0.0
        return min(max(shift, -self.users.threshold_max_down), self.users.threshold_max_up)

    async def shift_for(self, user: str) -> float:
        """The user's current report-driven shift (0 when moves are off or the store keeps
        no counters); StoreError if the store cannot be read."""
        if not self.users.threshold_moves or self._counters is None:
            return 0.0
        key = _shift_key(user)
        found = await self._counters.get_counters([key])
        return self._clamp(found.get(key, 0.0))

    async def move_thresholds(self, user: str, outcome: Outcome) -> float:
        """Record one report outcome for ``user``: a missed spam lowers their thresholds by
        ``threshold_step``, a false positive raises them by ``threshold_fp_step``, within the
        clamp. Returns the new shift. Read then add (the store has no compare-and-set): two
        nodes recording at the same instant can overshoot, and every read clamps again."""
        if outcome not in ("missed_spam", "false_positive"):
            raise ValueError(f"outcome must be 'missed_spam' or 'false_positive', not {outcome!r}")
        if not self.users.threshold_moves or self._counters is None:
            return 0.0
        key = _shift_key(user)
        current = (await self._counters.get_counters([key])).get(key, 0.0)
        step = -self.users.threshold_step if outcome == "missed_spam" else self.users.threshold_fp_step
        new = self._clamp(self._clamp(current) + step)
        if new != current:
            # lives as long as the reports behind it are kept
            await self._counters.incr_many({key: new - current}, ttl=self.users.report_retention_days * 86400.0)
        return new

    async def reset_shift(self, user: str) -> None:
        """Forget what the user's reports did to their thresholds."""
        await self.store.delete(_shift_key(user))

    def decide(
        self,
        *,
        score: float,
        probability: float,
        thresholds: Thresholds,
        user: str | None,
        contributions: Sequence[Contribution],
        failures: Sequence[ScorerFailure],
        subject: str,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> Verdict:
        """The action for this score and these failures, with headers and SMTP reply."""
        action = thresholds.action_for(score)
        reason = f"score {score:.2f} vs thresholds {_describe(thresholds)}"
        forcing = [c for c in contributions if c.symbol in self.config.forced]
        failed = [f for f in failures if self.config.on_failure.get(f.scorer) == Action.TEMPFAIL]
        if forcing:  # known bad (e.g. infected) outranks a failure elsewhere
            decisive = max(forcing, key=lambda c: _SEVERITY.index(Action(self.config.forced[c.symbol])))
            action = Action(self.config.forced[decisive.symbol])
            reason = f"{decisive.symbol} ({decisive.reason}) forces {action}"
        elif failed:
            action = Action.TEMPFAIL
            reason = "scorer failed and policy says tempfail: " + ", ".join(f"{f.scorer} ({f.kind})" for f in failed)
        is_spam = score >= thresholds.required
        tests = ",".join(f"{c.symbol}={c.points:+.2f}" for c in contributions if abs(c.points) >= 0.005)
        report = "; ".join(f"{c.scorer}:{c.symbol} {c.points:+.2f}" + (f" ({c.reason})" if c.reason else "") for c in contributions[:8])
        if failures:
            report += "; failed: " + ", ".join(f"{f.scorer} ({f.kind})" for f in failures)
        headers = (
            ("X-Spam-Flag", "YES" if is_spam else "NO"),
            ("X-Spam-Score", f"{score:.2f}"),
            ("X-Spam-Status", f"{'Yes' if is_spam else 'No'}, score={score:.2f} required={thresholds.required:.2f} tests={tests or 'none'}"),
            ("X-Mailguard-Report", f"action={action} p={probability:.4f}; {report or 'no evidence'}"),
            *extra_headers,
        )
        # reasons can quote message content: never let a line break start a new header
        headers = tuple((name, _NEWLINES.sub(" ", value)) for name, value in headers)
        new_subject = None
        if action in (Action.TAG, Action.JUNK, Action.QUARANTINE) and self.config.subject_tag:
            if not subject.startswith(self.config.subject_tag.strip()):
                new_subject = _NEWLINES.sub(" ", self.config.subject_tag + subject)
        smtp_reply = None
        if action is Action.REJECT and forcing:
            smtp_reply = ("550", "5.7.1", _NEWLINES.sub(" ", f"Message rejected: {reason}"))
        elif action is Action.REJECT:
            smtp_reply = ("550", "5.7.1", f"Message rejected as spam (score {score:.1f})")
        elif action is Action.TEMPFAIL:
            smtp_reply = ("451", "4.7.1", "Message could not be scanned, try again later")
        return Verdict(
            action=action,
            user=user,
            score=score,
            required=thresholds.required,
            is_spam=is_spam,
            headers=headers,
            smtp_reply=smtp_reply,
            subject=new_subject,
            reason=reason,
        )


_NEWLINES = re.compile(r"\s*[\r\n]+\s*")


def _describe(t: Thresholds) -> str:
    return " ".join(f"{name}={getattr(t, name)}" for name in ACTIONS_BY_SCORE if getattr(t, name) is not None)
