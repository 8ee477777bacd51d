"""The text classifier as a scorer: the shipped model, learning online, shared by every node.

Each node keeps its own copy of the model (`OnlineClassifier`) in memory. Learning a message
appends its `Update` to a log in the store, and every scan first reads the updates other
nodes appended since its last read, usually none: one store call per scan, whatever the
message, and a learn on one node is seen by the next scan on any node sharing the store.
Every ``compact_every`` updates a node writes its learned state (what it holds on top of the
shipped model) as a snapshot and trims the log behind it; a node that fell behind the trim,
or starts fresh, loads the snapshot and reads on from there.

The log is named after the model's digest, so a retrained model (whose training already
holds the reports) starts from its own state, not another model's updates.

Regimes (``train``): ``everything`` learns every message it is given; ``on-error`` learns
only a message the classifier got wrong or scored within ``margin`` of the other side (a
thick threshold: less work, and a poisoner must first fool it); ``auto`` (the default) is
``on-error`` on mail in a script the model has learned few messages of (while its online
steps are boosted, `OnlineClassifier.settled`) and ``everything`` on the rest. Measured
(benchmarks/README.md, "the order and the training regime"): a site in a language the
shipped model lacks, and a model warmed up on a few hundred messages, learned faster from
their mistakes alone; a model that has learned thousands of messages of the script learned
worse from fewer (trec06p from the shipped model: 1-AUC 0.037% against 0.025%). The margin
is only judged once the model has learned the message's scripts (`OnlineClassifier.trust`
is 1): before, its score reads only what the message shares with mail of other scripts (a
model trained before ``leave_out_untrained``: a cut say), not its own opinion, and skipping
such mail would keep it so (what is learned of a script makes it learned). Either way a user's report
changes only that user's copy of the features; the global copy learns from training,
autolearning and the reports enough users agree on (`Scanner.report`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..arrays import strongest_three
from ..classifier.features import SCRIPTS, TextFeatures, gram_bytes, named_tokens, text_features, user_salt
from ..classifier.online import OnlineClassifier, Reading, Update
from ..errors import ConfigError, StoreError
from ..message.context import MessageContext
from ..policy import canonical_user
from ..result import Hit
from ..scorer import Label, ScorerInfo, Services, Source
from ..stores.base import Store

__all__ = ["BayesScorer"]

_DAY = 86400.0
_READ_BATCH = 1000  # updates read per store call while catching up
_KEYS = {"per_user", "train", "margin", "compact_every", "token_ttl_days"}
_REGIMES = ("auto", "everything", "on-error")

log = logging.getLogger("mailguard.scorers.bayes")


class BayesScorer:
    name = "bayes"
    info = ScorerInfo(
        group="bayes",
        symbols={
            "BAYES": "text classifier log-odds (positive: spam-like)",
            "BAYES_UNTRAINED_SCRIPT": "the text is in a script the classifier learned too little ham of: the script's own features carry no weight (older models: its say is cut)",
        },
        default_weights={"BAYES": 1.0, "BAYES_UNTRAINED_SCRIPT": 0.0},
        learns=True,
        timeout=2.0,
    )

    def __init__(
        self,
        classifier: OnlineClassifier,
        store: Store,
        *,
        per_user: bool = True,
        train: str = "auto",
        margin: float = 2.0,
        compact_every: int = 1000,
        token_ttl_days: float = 365.0,
    ) -> None:
        if train not in _REGIMES:
            raise ConfigError(f"[scorers.bayes] train must be one of {', '.join(_REGIMES)}")
        self.base = classifier
        self.model = classifier  # copied on the first update (most scanners never learn)
        self.store = store
        self.per_user = per_user
        self.train = train
        self.margin = margin
        self.compact_every = compact_every
        self.snapshot_ttl = token_ttl_days * _DAY
        self.log_name = f"text:{classifier.digest()}"
        self.snapshot_key = f"{self.log_name}:snapshot"
        self.cursor = 0  # the newest update of the log this copy holds
        self._lock = asyncio.Lock()
        self._compacting = asyncio.Lock()  # snapshots are written in the order they were taken

    @classmethod
    def from_config(cls, section: Mapping[str, Any], services: Services) -> BayesScorer:
        where = "[scorers.bayes]"
        unknown = set(section) - _KEYS
        if unknown:
            raise ConfigError(f"{where} unknown key(s): {', '.join(sorted(unknown))}")
        if services.model is None:
            raise ConfigError("the bayes scorer needs a model (see [model] path)")
        ttl = section.get("token_ttl_days", 365.0)
        margin = section.get("margin", 2.0)
        compact = section.get("compact_every", 1000)
        for name, value in (("token_ttl_days", ttl), ("margin", margin)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{where} {name} must be a positive number")
        if isinstance(compact, bool) or not isinstance(compact, int) or not 10 <= compact <= 1_000_000:
            raise ConfigError(f"{where} compact_every must be a whole number from 10 to 1000000")
        per_user = section.get("per_user", True)
        if not isinstance(per_user, bool):
            raise ConfigError(f"{where} per_user must be true or false")
        train = section.get("train", "auto")
        if train not in _REGIMES:
            raise ConfigError(f"{where} train must be one of {', '.join(_REGIMES)}")
        return cls(
            services.model.bayes, services.store, per_user=per_user, train=train, margin=float(margin),
            compact_every=compact, token_ttl_days=float(ttl),
        )

    # -- keeping in step with the other nodes ---------------------------------------------

    async def sync(self) -> None:
        """Apply the updates appended since this copy's last read (StoreError if the store is down)."""
        async with self._lock:
            await self._catch_up()

    async def _catch_up(self) -> None:
        reloads = 0
        while True:
            last, entries = await self.store.read_log(self.log_name, self.cursor, _READ_BATCH)
            behind = (entries and entries[0][0] != self.cursor + 1) or (not entries and last > self.cursor)
            if behind:  # the updates we miss were folded into a snapshot and trimmed
                if reloads >= 3:
                    raise StoreError("bayes: the update log keeps moving past its snapshot")
                reloads += 1
                await self._load_snapshot(entries[0][0] - 1 if entries else last)
                continue
            for number, data in entries:
                try:
                    self._own().apply(Update.from_bytes(data, self.model.size))
                except ValueError as exc:  # one bad entry costs that update, never the scan
                    log.warning("bayes: update %d of %s skipped: %s", number, self.log_name, exc)
                self.cursor = number
            if len(entries) < _READ_BATCH:
                return

    def _own(self) -> OnlineClassifier:
        """This node's own copy of the model, to learn into (the loaded one stays as shipped)."""
        if self.model is self.base:
            self.model = self.base.copy()
        return self.model

    async def _load_snapshot(self, fallback: int) -> None:
        blob = await self.store.get(self.snapshot_key)
        model = self.base.copy()
        cursor = fallback
        if blob is not None:
            try:
                cursor = int.from_bytes(blob[:8], "little")
                model.with_delta(self.base, blob[8:])
            except (ValueError, OSError, KeyError) as exc:
                log.warning("bayes: snapshot of %s unreadable (%s); the updates it holds are lost", self.log_name, exc)
                model, cursor = self.base.copy(), fallback
        else:
            log.warning("bayes: updates of %s up to %d were trimmed with no snapshot; they are lost", self.log_name, fallback)
        self.model, self.cursor = model, cursor

    async def _compact(self) -> None:
        """Write this copy's learned state as the snapshot, then trim the log it covers. Only
        a copy of the state is taken under the lock (~25 ms); the delta and its packing took
        up to 2.5 s on the event loop once much of the table was learned, stalling every scan
        of the process, so they run in a thread while scans go on. One compaction at a time,
        in order."""
        async with self._compacting:
            async with self._lock:
                await self._catch_up()
                cursor, state = self.cursor, self.model.copy()
            blob = cursor.to_bytes(8, "little") + await asyncio.to_thread(state.delta_from, self.base)
            await self.store.set(self.snapshot_key, blob, ttl=self.snapshot_ttl)
            await self.store.trim_log(self.log_name, cursor)

    # -- scanning and learning --------------------------------------------------------------

    def _salt(self, user: str | None) -> int:
        return user_salt(canonical_user(user)) if user and self.per_user else 0

    async def score(self, ctx: MessageContext) -> list[Hit]:
        features = text_features(ctx, self.model.gram_window)
        if not len(features.tokens) and not len(features.grams):
            return []
        note = ""
        try:
            await self.sync()
        except StoreError as exc:
            # the model is in memory: a store that is down costs what others learned since
            log.warning("bayes: store unavailable, scoring with what this node holds: %s", exc)
            note = "; store unavailable: learned state as last read"
        salt = self._salt(ctx.user)
        reading = self.model.read(features, salt)
        hits = [Hit("BAYES", reading.value, self._explain(ctx, features, salt, reading) + note)]
        if reading.trust < 1.0:  # explained, worth no points of its own: BAYES already is what it is
            script, share = self.model.untrained_script(features, salt)
            if self.model.leave_out_untrained:
                reason = f"text {share:.0%} {SCRIPTS[script]}, too little learned of it: scored on what it shares with learned mail"
            else:
                reason = f"text {share:.0%} {SCRIPTS[script]}: the classifier has {reading.trust:.0%} of its say"
            hits.append(Hit("BAYES_UNTRAINED_SCRIPT", 1.0, reason))
        return hits

    def _explain(self, ctx: MessageContext, features: TextFeatures, salt: int, reading: Reading) -> str:
        """How many tokens the model knows, and the features (tokens or byte 4-grams) that
        weigh most for this user, from the scan's own `Reading`. Only the three named are
        turned back into text."""
        bits, model = self.model.bits, self.model
        names, ids = named_tokens(ctx)
        named = len(names)  # tokens first, in the names' order, then the 4-grams (worth 1 each)
        where = features.named if features.named is not None else np.searchsorted(features.tokens, ids)  # in tokens
        buckets = np.concatenate([features.buckets(bits)[0][where], features.gram_buckets(bits)])
        weight = model.weights_[buckets].astype(np.float64)
        if salt and salt in model.totals_:
            weight += model.weights_[np.concatenate([features.buckets(bits, salt)[0][where], features.gram_buckets(bits, salt)])]
        weight[:named] *= reading.values[features.slots(bits)[where]]
        weight *= reading.scale  # each feature's log-odds in this message
        top = strongest_three(np.abs(weight))
        strongest = ", ".join(
            f"{names[i][:40] if i < named else repr(gram_bytes(int(features.grams[i - named])))[1:]} {weight[i]:+.2f}"
            for i in top
            if weight[i]
        )
        return f"{reading.known} of {len(features.tokens)} tokens known" + (f"; strongest: {strongest}" if strongest else "")

    def _thick(self, features: TextFeatures, salt: int) -> bool:
        """Whether this message is learned only if the classifier gets it wrong or nearly
        (see the module's regimes); never while the model has not learned its scripts."""
        if self.train == "everything" or (self.train == "auto" and self.model.settled(features, salt)):
            return False
        return self.model.trust(features, salt) >= 1.0

    async def learn(self, ctx: MessageContext, label: Label, user: str | None = None, *, source: Source = "report") -> None:
        """Learn ``ctx`` as ``label``: globally (user None) or in ``user``'s copy of the
        features only; with ``train = "on-error"`` (``"auto"``: on a script the model has
        not settled on), only when the classifier needs it."""
        if label not in ("spam", "ham"):
            raise StoreError(f"bayes: label must be 'spam' or 'ham', not {label!r}")
        y = 1 if label == "spam" else 0
        features = text_features(ctx, self.model.gram_window)
        salt = self._salt(user)
        await self.sync()
        if self._thick(features, salt):
            value, _ = self.model.score(features, salt)
            if (value if y else -value) >= self.margin:
                return  # right, and by a margin: nothing to learn
        update = self.model.learn_step(features, y, salt)
        number = await self.store.append_log(self.log_name, update.to_bytes())
        async with self._lock:
            if number == self.cursor + 1:  # nobody appended in between: ours is the next
                self._own().apply(update)
                self.cursor = number
        if number % self.compact_every == 0:
            await self._compact()
