"""The Bayesian text classifier as a scorer: the shipped model plus learned deltas from the store.

The global model is read-only; what ``learn`` adds goes to the store, globally (user None)
or for one user, and is merged into the counts at scan time. A store with no learned
messages costs one lookup per scan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..classifier.bayes import BayesClassifier, TokenCounts
from ..errors import ConfigError, StoreError
from ..message.context import MessageContext
from ..policy import canonical_user
from ..result import Hit
from ..scorer import Label, ScorerInfo, Services, Source
from ..stores.base import Store
from ..classifier.tokens import hash_tokens, message_tokens

__all__ = ["BayesScorer", "message_ids"]

_DAY = 86400.0

log = logging.getLogger("mailguard.scorers.bayes")


def message_ids(ctx: MessageContext) -> np.ndarray:
    """The message's distinct token ids, computed once per message."""
    return ctx.cached("bayes.ids", lambda: hash_tokens(message_tokens(ctx)))


class BayesScorer:
    name = "bayes"
    info = ScorerInfo(
        group="bayes",
        symbols={"BAYES": "Bayesian classifier log-odds (positive: spam-like)"},
        default_weights={"BAYES": 1.0},
        learns=True,
        timeout=2.0,
    )

    def __init__(self, classifier: BayesClassifier, store: Store, *, token_ttl_days: float = 365.0, per_user: bool = True) -> None:
        self.classifier = classifier
        self.store = store
        self.token_ttl = token_ttl_days * _DAY
        self.per_user = per_user

    @classmethod
    def from_config(cls, section: Mapping[str, Any], services: Services) -> BayesScorer:
        unknown = set(section) - {"token_ttl_days", "per_user"}
        if unknown:
            raise ConfigError(f"[scorers.bayes] unknown key(s): {', '.join(sorted(unknown))}")
        if services.model is None:
            raise ConfigError("the bayes scorer needs a model (see [model] path)")
        ttl = section.get("token_ttl_days", 365.0)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            raise ConfigError("[scorers.bayes] token_ttl_days must be a positive number")
        return cls(services.model.bayes, services.store, token_ttl_days=float(ttl), per_user=bool(section.get("per_user", True)))

    def _scopes(self, user: str | None) -> list[str]:
        scopes = ["g"]
        if user and self.per_user:
            scopes.append("u:" + canonical_user(user))
        return scopes

    async def _deltas(self, ids: np.ndarray, user: str | None) -> tuple[TokenCounts, tuple[float, float]]:
        scopes = self._scopes(user)
        totals = await self.store.get_counters([f"bayes:{s}:n:{k}" for s in scopes for k in "sh"])
        n_spam = sum(v for k, v in totals.items() if k.endswith(":s"))
        n_ham = sum(v for k, v in totals.items() if k.endswith(":h"))
        if not totals:
            return {}, (0.0, 0.0)
        hexes = [format(i, "x") for i in ids.tolist()]
        found = await self.store.get_counters([f"bayes:{s}:t:{h}:{k}" for s in scopes for h in hexes for k in "sh"])
        counts: dict[int, list[float]] = {}
        for key, value in found.items():  # only what was learned: usually a fraction of the keys asked
            token, kind = key.rsplit(":", 2)[1:]
            counts.setdefault(int(token, 16), [0.0, 0.0])[kind == "h"] += value
        return {i: (spam, ham) for i, (spam, ham) in counts.items() if spam or ham}, (n_spam, n_ham)

    async def score(self, ctx: MessageContext) -> list[Hit]:
        ids = message_ids(ctx)
        if len(ids) == 0:
            return []
        note = ""
        try:
            delta, n_delta = await self._deltas(ids, ctx.user)
        except StoreError as exc:
            # the shipped model is in memory: a store that is down costs what was learned
            # since, not the classifier's opinion
            log.warning("bayes: store unavailable, scoring with the global model only: %s", exc)
            delta, n_delta, note = {}, (0.0, 0.0), "; store unavailable: global model only"
        looked_up = self.classifier.lookup(ids)
        value = self.classifier.score_one(ids, delta, n_delta, looked_up)
        spam, ham, _ = looked_up
        known = int(((spam + ham) > 0).sum())
        return [Hit("BAYES", value, f"{known} of {len(ids)} tokens known{note}")]

    async def learn(self, ctx: MessageContext, label: Label, user: str | None = None, *, source: Source = "report") -> None:
        """Count the message's tokens as ``label``, globally (user None) or for ``user`` only.
        Every source counts once: the classifier's counts are message counts."""
        scope = self._scopes(user)[-1]
        k = "s" if label == "spam" else "h"
        amounts = {f"bayes:{scope}:t:{int(i):x}:{k}": 1.0 for i in message_ids(ctx)}
        amounts[f"bayes:{scope}:n:{k}"] = 1.0
        await self.store.incr_many(amounts, ttl=self.token_ttl)
