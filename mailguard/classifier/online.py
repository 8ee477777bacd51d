"""The text classifier, learned online: one message at a time, offline and in service alike.

Two views of one hashed table of ``2 ** bits`` buckets (see `features`):

* logistic regression on binary features (token and byte 4-gram buckets), trained by one
  gradient step per learned message (Goodman and Yih 2006; Cormack's byte 4-gram filter at
  TREC 2007): discriminative, it ranks the hard cases;
* per-bucket spam and ham message counts of the token buckets, read with Robinson's f(w)
  and Fisher's chi-square combining (bogofilter's rule; its prior strength re-chosen, see
  `_fisher`): robust from the first few messages on.

The score is the log-odds of ``w * fisher + (1 - w) * sigmoid(z / T)``, the blend the
benchmark chose. ``fit`` runs the same update over a corpus (``passes`` times for the
weights, once for the counts), so ``mailguard train`` and a node learning from reports
train one model. `learn_step` returns the change a message makes as an `Update`, which a
node applies to its own copy and shares with the others (`scorers.bayes`).

A user's copies of the features (``salt``) take that user's reports: their weights and
counts add to the global ones when that user's mail is scored, and no user's report
changes the global copy, which learns only from training, autolearning and reports that
enough users agree on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.special import chdtrc, expit, logit

from .features import GRAM_BYTES, SCRIPTS, TextFeatures

__all__ = ["OnlineClassifier", "Reading", "Update", "pack_delta"]

_UPDATE = struct.Struct("<BBBfQII")  # version, label, script, step, salt, n weights, n counts
_COVERED = 0.8  # of a message's text in scripts the training ham covers, for training to learn it (`fit`)
_UPDATE_VERSION = 3  # 3: a value per weight bucket follows the buckets; 2 (read still): none, step included them


@dataclasses.dataclass(frozen=True)
class Update:
    """What learning one message changes: ``step`` times each feature's value (``values``,
    none: 1) added to the weights of ``weight_buckets``, one message of ``label`` counted in
    ``count_buckets`` and in the totals of ``salt``."""

    label: int  # 1 spam, 0 ham
    script: int  # index into SCRIPTS of the message's text (ham of each script is counted)
    step: float
    salt: int  # 0: the global copy; else the user whose copy learned it
    weight_buckets: np.ndarray
    count_buckets: np.ndarray
    values: np.ndarray | None = None  # float32, one per weight bucket

    def to_bytes(self) -> bytes:
        head = _UPDATE.pack(
            _UPDATE_VERSION, self.label, self.script, self.step, self.salt, len(self.weight_buckets), len(self.count_buckets)
        )
        values = np.ones(len(self.weight_buckets), dtype="<f4") if self.values is None else self.values.astype("<f4")
        return head + self.weight_buckets.astype("<u4").tobytes() + self.count_buckets.astype("<u4").tobytes() + values.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, size: int) -> Update:
        """Parse and bounds-check one update (it crossed the store: trust nothing)."""
        if len(data) < _UPDATE.size:
            raise ValueError("update too short")
        version, label, script, step, salt, n_weights, n_counts = _UPDATE.unpack_from(data)
        if version not in (2, _UPDATE_VERSION) or label not in (0, 1) or script >= len(SCRIPTS) or not np.isfinite(step):
            raise ValueError("not an update this version writes")
        n_values = n_weights if version == _UPDATE_VERSION else 0
        if len(data) != _UPDATE.size + 4 * (n_weights + n_counts + n_values):
            raise ValueError("update length does not match its header")
        buckets = np.frombuffer(data, dtype="<u4", offset=_UPDATE.size, count=n_weights + n_counts).astype(np.int64)
        if len(buckets) and int(buckets.max()) >= size:
            raise ValueError("update names a bucket outside the table")
        values = None
        if n_values:
            values = np.frombuffer(data, dtype="<f4", offset=_UPDATE.size + 4 * (n_weights + n_counts)).astype(np.float32)
            if not np.isfinite(values).all():
                raise ValueError("update holds a value that is not a number")
        return cls(label, script, float(step), salt, buckets[:n_weights], buckets[n_weights:], values)


@dataclasses.dataclass(frozen=True)
class Reading:
    """One message as the model read it for one user (`OnlineClassifier.read`): its score, and
    the parts of the scoring an explanation reads again, so a scan computes them once."""

    value: float  # blended log-odds (a model without ``leave_out_untrained``: times ``trust``)
    margin: float  # the regression's log-odds
    trust: float  # how much of the text is in scripts the model learned (`OnlineClassifier.trust`)
    known: int  # the message's tokens the global counts hold
    values: np.ndarray  # each of the message's global buckets' value in the regression, before ``scale`` (`feature_values`)
    scale: float


class OnlineClassifier:
    """Hashed online logistic regression blended with Fisher-combined token counts."""

    def __init__(
        self,
        *,
        bits: int = 22,
        learning_rate: float = 10.0,
        fit_learning_rate: float = 20.0,
        passes: int = 3,
        orders: int = 3,
        fisher_weight: float = 0.3,
        temperature: float = 2.0,
        robinson_s: float = 0.2,
        robinson_s_untrained: float | None = 0.0178,
        robinson_x: float = 0.52,
        min_dev: float = 0.375,
        clip: float = 35.0,
        min_script_ham: float = 20.0,
        leave_out_untrained: bool = True,
        normalise: bool = True,
        nb_values: bool = True,
        gram_window: int = GRAM_BYTES,
        settled_script: float = 4000.0,
        max_step_boost: float = 3.0,
        seed: int = 0,
    ) -> None:
        self.bits = bits
        self.learning_rate = learning_rate  # one message at a time, in service
        self.fit_learning_rate = fit_learning_rate  # the passes over a training corpus
        self.passes = passes
        self.orders = orders  # shuffled orders of the passes after the first, their weights averaged (`fit`)
        self.fisher_weight = fisher_weight
        self.temperature = temperature
        self.robinson_s = robinson_s
        # the prior on text in scripts the model has no say on (`_fisher`); None: robinson_s
        self.robinson_s_untrained = robinson_s if robinson_s_untrained is None else robinson_s_untrained
        self.robinson_x = robinson_x
        self.min_dev = min_dev
        self.clip = clip
        self.min_script_ham = min_script_ham  # ham of a script learned before the classifier has its full say
        self.leave_out_untrained = leave_out_untrained  # training skips mail its ham does not cover (`fit`); no say cut
        self.normalise = normalise  # each message's feature vector has unit length (see `feature_values`)
        self.nb_values = nb_values  # a token feature's value is its log count ratio (see `feature_values`)
        self.gram_window = gram_window  # bytes of the raw message read for 4-grams (`text_features`)
        self.settled_script = settled_script  # messages of a script learned before online steps are plain (`online_rate`)
        self.max_step_boost = max_step_boost  # the most an online step grows on a script the model barely knows
        self.seed = seed

    _PARAMS = ("bits", "learning_rate", "fit_learning_rate", "passes", "orders", "fisher_weight", "temperature", "robinson_s", "robinson_s_untrained", "robinson_x", "min_dev", "clip", "min_script_ham", "leave_out_untrained", "normalise", "nb_values", "gram_window", "settled_script", "max_step_boost", "seed")
    # What a model saved before a parameter existed was fitted with (its manifest lacks it).
    _BEFORE = {"normalise": False, "nb_values": False, "gram_window": 3000, "settled_script": 0.0, "max_step_boost": 1.0, "orders": 1, "leave_out_untrained": False, "robinson_s_untrained": None}

    def get_params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self._PARAMS}

    # -- state ----------------------------------------------------------------------------

    def _reset(self) -> None:
        self._digest: str | None = None
        size = 1 << self.bits
        self.weights_ = np.zeros(size, dtype=np.float32)
        self.spam_ = np.zeros(size, dtype=np.float32)
        self.ham_ = np.zeros(size, dtype=np.float32)
        self.totals_: dict[int, list[float]] = {0: [0.0, 0.0]}  # salt -> [spam, ham] messages
        self.ham_scripts_: dict[int, np.ndarray] = {0: np.zeros(len(SCRIPTS))}  # salt -> ham learned per script
        self.site_scripts_: dict[int, np.ndarray] = {0: np.zeros(len(SCRIPTS))}  # salt -> learned online, either label
        self.classes_ = np.array([0, 1])

    def copy(self) -> OnlineClassifier:
        """An independent copy (a node learns into its own, the loaded model stays as shipped)."""
        other = OnlineClassifier(**self.get_params())
        other.weights_, other.spam_, other.ham_ = self.weights_.copy(), self.spam_.copy(), self.ham_.copy()
        other.totals_ = {k: list(v) for k, v in self.totals_.items()}
        other.ham_scripts_ = {k: v.copy() for k, v in self.ham_scripts_.items()}
        other.site_scripts_ = {k: v.copy() for k, v in self.site_scripts_.items()}
        other.classes_ = self.classes_
        other._digest = None
        return other

    @property
    def size(self) -> int:
        return 1 << self.bits

    # -- scoring --------------------------------------------------------------------------

    def _views(self, features: TextFeatures, salt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Global (token, all) buckets, and the user's own: none for a user who never learned
        anything (their copy is empty; reading it would only pick up hash collisions)."""
        tokens, every = features.buckets(self.bits)
        if not salt or salt not in self.totals_:
            return tokens, every, tokens[:0], every[:0]
        user_tokens, user_every = features.buckets(self.bits, salt)
        return tokens, every, user_tokens, user_every

    def token_counts(self, tokens: np.ndarray, user_tokens: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Spam and ham messages counted for each token (global plus, for a user, theirs), and
        the totals they are out of."""
        spam = self.spam_[tokens].astype(np.float64)
        ham = self.ham_[tokens].astype(np.float64)
        n_spam, n_ham = self.totals_[0]
        if len(user_tokens):
            spam += self.spam_[user_tokens]
            ham += self.ham_[user_tokens]
            mine = self.totals_.get(salt, (0.0, 0.0))
            n_spam, n_ham = n_spam + mine[0], n_ham + mine[1]
        return spam, ham, n_spam, n_ham

    def feature_values(
        self,
        every: np.ndarray,
        slots: np.ndarray,
        counts: tuple[np.ndarray, np.ndarray, float, float],
        user_every: np.ndarray | None = None,
        user_slots: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """The value of each of the message's features in the regression, for the global
        buckets ``every`` and the user's ``user_every`` (``slots``, ``user_slots``: where the
        tokens stand among them, `TextFeatures.slots`), and the scale they all take:
        (values, user values, scale).

        A 4-gram is worth 1. A token is worth 1 too, or with ``nb_values`` the absolute log
        ratio of its spam and ham counts (Laplace-smoothed): the naive-Bayes feature scaling
        of Wang and Manning's NBSVM, which the frozen Bayes's regression used. A word seen in
        one class only speaks louder than one both use, and the counts follow every learned
        message. Measured, classifier alone on the SpamAssassin 5-fold: 1-AUC 0.0153% ->
        0.0100% for the regression; online, trec06p and trec06c-zh rank no worse
        (benchmarks/README.md, "Token values").

        With ``normalise`` each message's vector has unit length (Sculley and Wachman's
        relaxed online SVMs normalise so). Unnormalised, a long message moved its margin
        (and the weights, per step) in proportion to its feature count, so a longer 4-gram
        window acted as a larger learning rate; normalised, the window reads more of the
        message at the same step size: measured on the SpamAssassin 5-fold (classifier alone,
        1-AUC 0.0199% -> 0.0157%, 66% -> 88% caught at 0 FP) with the trec06p replay no worse.
        A user's copy takes the values of the global one."""
        user_every = every[:0] if user_every is None else user_every
        values, user_values = np.ones(len(every)), np.ones(len(user_every))
        if self.nb_values:
            ratio = self.token_values(counts)
            values[slots] = ratio
            if len(user_every) and user_slots is not None:
                user_values[user_slots] = ratio
        if not self.normalise:
            return values, user_values, 1.0
        return values, user_values, 1.0 / max(float(np.sqrt(values @ values)), 1e-12)

    def token_values(self, counts: tuple[np.ndarray, np.ndarray, float, float]) -> np.ndarray:
        """Each token's value before scaling (see `feature_values`), from its `token_counts`."""
        spam, ham, n_spam, n_ham = counts
        if not self.nb_values:
            return np.ones(len(spam))
        return np.abs(np.log((spam + 1.0) * ((n_ham + 2.0) / (n_spam + 2.0)) / (ham + 1.0)))

    def _margin(self, every: np.ndarray, user_every: np.ndarray, values: np.ndarray, user_values: np.ndarray, scale: float) -> float:
        """The regression's log-odds: the weights of the global and the user's buckets."""
        z = float(self.weights_[every] @ values)
        return scale * (z + float(self.weights_[user_every] @ user_values) if len(user_every) else z)

    def score(self, features: TextFeatures, salt: int = 0) -> tuple[float, float]:
        """(blended log-odds, regression margin) of one message, for the user of ``salt``."""
        reading = self.read(features, salt)
        return reading.value, reading.margin

    def read(self, features: TextFeatures, salt: int = 0) -> Reading:
        """One message scored for the user of ``salt``, with what the scoring computed on the
        way that an explanation needs too (see `Reading`)."""
        tokens, every, user_tokens, user_every = self._views(features, salt)
        counts = self.token_counts(tokens, user_tokens, salt)
        user_slots = features.slots(self.bits, salt) if len(user_every) else None
        values, user_values, scale = self.feature_values(every, features.slots(self.bits), counts, user_every, user_slots)
        z = self._margin(every, user_every, values, user_values, scale)
        spam, ham, n_spam, n_ham = counts
        seen = (spam + ham) > 0
        known = int(seen.sum()) if not len(user_tokens) else int(((self.spam_[tokens] + self.ham_[tokens]) > 0).sum())
        trust = self.trust(features, salt)
        blend = self.fisher_weight * self._fisher(spam[seen], ham[seen], max(n_spam, 1.0), max(n_ham, 1.0), trust)
        blend += (1.0 - self.fisher_weight) * float(expit(z / self.temperature))
        value = float(logit(blend))
        value = self.clip if value > self.clip else -self.clip if value < -self.clip else value  # np.clip's answer, 6 us sooner
        return Reading(value if self.leave_out_untrained else value * trust, z, trust, known, values, scale)

    def trust(self, features: TextFeatures, salt: int = 0) -> float:
        """How much of this message's text is in scripts the model has learned, from 0 to 1:
        each script's share of the text times the say the model has on that script, full once
        it learned ``min_script_ham`` ham of the script, or once the site taught it that many
        messages of it online, either label (for a user, the global counts plus theirs); less
        before. A model that saw a script only in its training spam would otherwise take the
        script itself for spam (the SpamAssassin corpus holds Chinese spam and no Chinese
        ham), and mail that mixes it with English (a Chinese job offer quoting an English one)
        as well; a site's own mail in that script is evidence it may use.

        With ``leave_out_untrained`` training never learned mail mostly outside its ham's
        scripts (`fit`), so such a script's own features (its characters, charset names,
        encoded-word grams) carry no weight, and the score stands on what the message shares
        with the mail the model did learn (relays, senders, URLs, structure): the say is cut
        to those features, not multiplied. A model trained without it multiplies its score by
        this number instead, which took the header and URL evidence of such spam away too."""
        if self.min_script_ham <= 0:
            return 1.0
        return self._coverage(features, lambda script: self._script_say(script, salt))

    def _coverage(self, features: TextFeatures, say: Callable[[int], float]) -> float:
        """Each script's share of the text times ``say`` of that script, summed (`trust`, `_covered`)."""
        return 1.0 - float(sum(share * (1.0 - say(script)) for script, share in self._shares(features)))

    def untrained_script(self, features: TextFeatures, salt: int = 0) -> tuple[int, float]:
        """The script whose missing say costs this message the most, and its share of the text."""
        script, share = max(self._shares(features), key=lambda item: item[1] * (1.0 - self._script_say(item[0], salt)))
        return script, share

    @staticmethod
    def _shares(features: TextFeatures) -> list[tuple[int, float]]:
        if features.shares:
            return [(script, share) for script, share in enumerate(features.shares) if share]
        return [(features.script, 1.0)]

    def _script_say(self, script: int, salt: int) -> float:
        if not script:
            return 1.0
        learned = max(self._learned(self.ham_scripts_, script, salt), self._learned(self.site_scripts_, script, salt))
        return min(1.0, learned / self.min_script_ham)

    @staticmethod
    def _learned(table: dict[int, np.ndarray], script: int, salt: int) -> float:
        """Messages of ``script`` counted in ``table``, globally plus, for a user, theirs."""
        return sum(float(table[s][script]) for s in ((0, salt) if salt else (0,)) if s in table)

    def _fisher(self, spam: np.ndarray, ham: np.ndarray, n_spam: float, n_ham: float, trust: float = 1.0) -> float:
        """Robinson's f(w) per token, Fisher's chi-square combining; 0.5 means no opinion.

        The prior strength ``s`` pulls a token seen in few messages toward ``x``: at 0.2 a token
        seen once, in spam only, reads 0.92 (bogofilter's 0.0178: 0.99), so the rare tokens of
        a corpus weigh less than its common ones; measured better on all three corpora and
        replays (benchmarks/README.md, "The Fisher half's prior strength"). On text in scripts
        the model has no say on (``trust`` below 1) the few tokens it knows, rare ones
        included, are all the evidence there is, so the prior moves toward
        ``robinson_s_untrained`` with the untrusted share of the text. Some of those "known"
        tokens are hash collisions with English ham, which read hammy: the Chinese first day
        this prior was chosen on leans on them (benchmarks/README.md, "The Chinese first day
        and the size of the hash table")."""
        spam_rate = spam / n_spam
        p = spam_rate / (spam_rate + ham / n_ham)
        n = spam + ham
        s, x = self.robinson_s, self.robinson_x
        if trust < 1.0:
            s = self.robinson_s_untrained + (s - self.robinson_s_untrained) * trust
        f = (s * x + n * p) / (s + n)
        f = np.clip(f[np.abs(f - 0.5) > self.min_dev], 1e-9, 1 - 1e-9)
        if len(f) == 0:
            return 0.5
        dof = 2 * len(f)
        hammy = chdtrc(dof, -2.0 * np.log(f).sum())  # near 0 when the tokens say ham
        spammy = chdtrc(dof, -2.0 * np.log1p(-f).sum())  # near 0 when they say spam
        return float((1.0 + hammy - spammy) / 2.0)

    def decision_function(self, X: Sequence[TextFeatures]) -> np.ndarray:
        return np.array([self.score(x)[0] for x in X])

    def predict_proba(self, X: Sequence[TextFeatures]) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Sequence[TextFeatures]) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(np.int64)

    # -- learning -------------------------------------------------------------------------

    def learn_step(
        self, features: TextFeatures, label: int, salt: int = 0, *, count: bool = True, rate: float | None = None
    ) -> Update:
        """The change learning one message makes: a logistic-regression step on the copy of
        ``salt`` (computed from the score that user sees) and, with ``count``, one message
        counted there."""
        tokens, every, user_tokens, user_every = self._views(features, salt)
        counts = self.token_counts(tokens, user_tokens, salt)
        if salt:  # the user's copy takes the step, whether they learned anything before or not
            own_tokens, own_every = features.buckets(self.bits, salt)
            own_slots = features.slots(self.bits, salt)
            values, own_values, scale = self.feature_values(every, features.slots(self.bits), counts, own_every, own_slots)
            z = self._margin(every, user_every, values, own_values if len(user_every) else own_values[:0], scale)
        else:
            own_tokens, own_every = tokens, every
            own_values, _, scale = self.feature_values(every, features.slots(self.bits), counts)
            z = self._margin(every, user_every, own_values, own_values[:0], scale)
        step = (self.online_rate(features, salt) if rate is None else rate) * (label - float(expit(z)))
        return Update(label, features.script, step, salt, own_every, own_tokens if count else own_tokens[:0], (own_values * scale).astype(np.float32))

    def online_rate(self, features: TextFeatures, salt: int = 0) -> float:
        """The step of one message learned in service: ``learning_rate``, larger while the
        model has learned few messages of the message's script, by sqrt(``settled_script`` /
        those messages), at most ``max_step_boost`` times (the 1/sqrt(t) decay of online
        gradient descent, counted per script). A model trained on thousands of English
        messages takes plain steps on English mail, where larger ones only add noise; a site
        whose mail is in a script the model barely knows, or a model trained on a few hundred
        messages, learns it faster. Measured: a constant step trades a new language's
        adaptation against the English replay (benchmarks/README.md, "The normalised
        classifier")."""
        if not features.script or self.settled_script <= 0:
            return self.learning_rate
        boost = min(self.max_step_boost, max(1.0, (self.settled_script / max(1.0, self._script_learned(features, salt))) ** 0.5))
        return self.learning_rate * boost

    def settled(self, features: TextFeatures, salt: int = 0) -> bool:
        """Whether the model has learned ``settled_script`` messages of the message's script
        (for a user, the global count plus theirs), so its online steps are plain; mail with
        no script, or a model without the threshold, always is."""
        if not features.script or self.settled_script <= 0:
            return True
        return self._script_learned(features, salt) >= self.settled_script

    def _script_learned(self, features: TextFeatures, salt: int) -> float:
        """Messages of the message's script the model learned: ham in training, either label online."""
        return self._learned(self.ham_scripts_, features.script, salt) + self._learned(self.site_scripts_, features.script, salt)

    def apply(self, update: Update, *, online: bool = True) -> None:
        """Apply an update (one's own or another node's); buckets of one update are distinct.
        ``online``: learned in service (not a training pass), which counts as the site's own
        experience of the message's script."""
        self._digest = None
        if update.values is None:
            self.weights_[update.weight_buckets] += np.float32(update.step)
        else:
            self.weights_[update.weight_buckets] += np.float32(update.step) * update.values
        if len(update.count_buckets):
            (self.spam_ if update.label else self.ham_)[update.count_buckets] += 1.0
            self.totals_.setdefault(update.salt, [0.0, 0.0])[0 if update.label else 1] += 1.0
            if not update.label:
                self.ham_scripts_.setdefault(update.salt, np.zeros(len(SCRIPTS)))[update.script] += 1.0
            if online:
                self.site_scripts_.setdefault(update.salt, np.zeros(len(SCRIPTS)))[update.script] += 1.0

    def fit(self, X: Sequence[TextFeatures], y: Sequence[int] | np.ndarray) -> OnlineClassifier:
        """Learn ``X`` in order, then ``passes - 1`` more times in shuffled orders (weights
        only: the counts are message counts, taken once), averaged over ``orders`` (see
        `_passes`). The passes take larger steps
        (``fit_learning_rate``) than a node learning one report at a time: measured on the
        SpamAssassin 5-fold and the trec06p replay, each rate is the better one where it is used."""
        y = np.asarray(y, dtype=np.int64)
        if len(X) != len(y):
            raise ValueError("X and y have different lengths")
        if len(y) and not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0 (ham) or 1 (spam)")
        self._reset()
        if self.leave_out_untrained:
            kept = self._covered(X, y)
            X, y = [X[i] for i in kept], y[kept]
        return self._passes(X, y)

    def _covered(self, X: Sequence[TextFeatures], y: np.ndarray) -> np.ndarray:
        """The messages training learns: those with at least ``_COVERED`` of their text in
        scripts of which the corpus holds ``min_script_ham`` ham or more (partly, with fewer),
        or in the script most of its ham is in (a corpus too small for ``min_script_ham``
        still learns its own language). The rest (the SpamAssassin corpus's Chinese, Korean
        and Japanese spam) are left out: learned, they made the script itself spam evidence.
        Measured against multiplying the score by `trust`: the SpamAssassin 5-fold 1-AUC
        0.0140% -> 0.0088%; the Chinese first day 0.31% -> 0.41% of ham flagged, 2.5% ->
        14.9% of spam caught (benchmarks/README.md, "Untrained scripts left out of training")."""
        ham = np.zeros(len(SCRIPTS))
        for x, label in zip(X, y):
            if not label:
                ham[x.script] += 1.0
        if self.min_script_ham <= 0 or not ham.any():
            return np.arange(len(y))  # no rule, or no ham to judge coverage by
        say = np.minimum(1.0, ham / self.min_script_ham)
        say[0] = say[int(np.argmax(ham))] = 1.0  # no script: nothing to cover; a corpus covers its main script
        covered = [self._coverage(x, say.__getitem__) for x in X]
        return np.flatnonzero(np.array(covered) >= _COVERED)

    def partial_fit(self, X: Sequence[TextFeatures], y: Sequence[int] | np.ndarray, classes: Sequence[int] | None = None) -> OnlineClassifier:
        """Learn ``X`` once more, on top of what is learned (scikit-learn's online interface)."""
        if not hasattr(self, "weights_"):
            self._reset()
        for x, label in zip(X, np.asarray(y, dtype=np.int64)):
            self.apply(self.learn_step(x, int(label)))
        return self

    def _passes(self, X: Sequence[TextFeatures], y: np.ndarray) -> OnlineClassifier:
        """The first pass in the corpus's order (it takes the counts), then the remaining
        passes in ``orders`` different shuffled orders, each from the first pass's weights,
        and the mean of their weights. Which shuffle a corpus gets moved the SpamAssassin
        5-fold (classifier alone) between 1-AUC 0.0124% and 0.0139%; the mean of three
        orders scored 0.0122-0.0124% in every group of seeds tried, with more caught at 0 FP
        (benchmarks/README.md, "Averaged orders"): the variance of one SGD run, averaged away
        as in Zinkevich et al. 2010, "Parallelized stochastic gradient descent"."""
        for i in range(len(y)):
            self.apply(self.learn_step(X[i], int(y[i]), rate=self.fit_learning_rate), online=False)
        if self.passes <= 1:
            return self
        start, total = self.weights_.copy(), np.zeros(self.size, dtype=np.float64)
        orders = max(1, self.orders)
        for member in range(orders):
            self.weights_ = start.copy()
            rng = np.random.default_rng(self.seed + member)
            for _ in range(self.passes - 1):
                for i in rng.permutation(len(y)):
                    self.apply(self.learn_step(X[i], int(y[i]), count=False, rate=self.fit_learning_rate), online=False)
            total += self.weights_
        self.weights_ = (total / orders).astype(np.float32)  # one order: its weights, exactly
        return self

    # -- persistence ----------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as sparse arrays (most buckets of a corpus-trained table are 0)."""
        weighted = np.flatnonzero(self.weights_).astype(np.uint32)
        counted = np.flatnonzero(self.spam_ + self.ham_).astype(np.uint32)
        salts = np.array(sorted(self.totals_), dtype=np.uint64)
        return {
            "weight_buckets": weighted,
            "weights": self.weights_[weighted],
            "count_buckets": counted,
            "spam_counts": self.spam_[counted],
            "ham_counts": self.ham_[counted],
            "total_salts": salts,
            "totals": np.array([self.totals_[int(s)] for s in salts], dtype=np.float64).reshape(-1, 2),
            "script_salts": np.array(sorted(self.ham_scripts_), dtype=np.uint64),
            "ham_scripts": np.array([self.ham_scripts_[k] for k in sorted(self.ham_scripts_)]).reshape(-1, len(SCRIPTS)),
            "site_salts": np.array(sorted(self.site_scripts_), dtype=np.uint64),
            "site_scripts": np.array([self.site_scripts_[k] for k in sorted(self.site_scripts_)]).reshape(-1, len(SCRIPTS)),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, float]) -> OnlineClassifier:
        model = cls(**{**cls._BEFORE, **params})
        if not 8 <= model.bits <= 26:
            raise ValueError("bits must be between 8 and 26")
        if not 0 <= model.gram_window <= 1 << 20:
            raise ValueError("gram_window must be between 0 and 1 MiB")
        if not (1 <= model.passes <= 20 and 1 <= model.orders <= 16):
            raise ValueError("passes must be between 1 and 20, orders between 1 and 16")
        model._reset()
        weighted = np.asarray(arrays["weight_buckets"], dtype=np.int64)
        counted = np.asarray(arrays["count_buckets"], dtype=np.int64)
        for buckets in (weighted, counted):
            if len(buckets) and (buckets.min() < 0 or buckets.max() >= model.size):
                raise ValueError("a bucket lies outside the table")
        model.weights_[weighted] = np.asarray(arrays["weights"], dtype=np.float32)
        model.spam_[counted] = np.asarray(arrays["spam_counts"], dtype=np.float32)
        model.ham_[counted] = np.asarray(arrays["ham_counts"], dtype=np.float32)
        salts = np.asarray(arrays["total_salts"], dtype=np.uint64)
        totals = np.asarray(arrays["totals"], dtype=np.float64).reshape(-1, 2)
        if len(salts) != len(totals):
            raise ValueError("totals do not match their salts")
        model.totals_ = {int(s): [float(a), float(b)] for s, (a, b) in zip(salts, totals)}
        model.totals_.setdefault(0, [0.0, 0.0])
        script_salts = np.asarray(arrays["script_salts"], dtype=np.uint64)
        ham_scripts = np.asarray(arrays["ham_scripts"], dtype=np.float64).reshape(-1, len(SCRIPTS))
        if len(script_salts) != len(ham_scripts):
            raise ValueError("ham per script does not match its salts")
        model.ham_scripts_ = {int(k): row.copy() for k, row in zip(script_salts, ham_scripts)}
        model.ham_scripts_.setdefault(0, np.zeros(len(SCRIPTS)))
        site_salts = np.asarray(arrays["site_salts"], dtype=np.uint64)
        site_scripts = np.asarray(arrays["site_scripts"], dtype=np.float64).reshape(-1, len(SCRIPTS))
        if len(site_salts) != len(site_scripts):
            raise ValueError("site messages per script do not match their salts")
        model.site_scripts_ = {int(k): row.copy() for k, row in zip(site_salts, site_scripts)}
        model.site_scripts_.setdefault(0, np.zeros(len(SCRIPTS)))
        return model

    def digest(self) -> str:
        """A short digest of the fitted state: names the store's log of learned updates, so
        that a retrained model starts from its own training, not another model's deltas."""
        if getattr(self, "_digest", None) is None:  # computed once: a model's state is fixed once fitted
            h = hashlib.blake2b(digest_size=8)
            h.update(repr(sorted(self.get_params().items())).encode())
            for name, array in sorted(self.to_arrays().items()):
                h.update(name.encode())
                h.update(np.ascontiguousarray(array).tobytes())
            self._digest = h.hexdigest()
        return self._digest

    # -- sharing a node's learning ----------------------------------------------------------

    def delta_from(self, base: OnlineClassifier) -> bytes:
        """What this copy learned on top of ``base``, as an npz blob (no pickles). Up to seconds
        once much of the table was learned: a node makes it in a thread (see `BayesScorer`)."""
        arrays = {}
        for name in ("weights_", "spam_", "ham_"):
            diff = getattr(self, name) - getattr(base, name)
            where = np.flatnonzero(diff).astype(np.uint32)
            arrays[name + "buckets"], arrays[name + "values"] = where, diff[where]
        salts = sorted(self.totals_)
        arrays["salts"] = np.array(salts, dtype=np.uint64)
        arrays["totals"] = np.array(
            [np.subtract(self.totals_[s], base.totals_.get(s, (0.0, 0.0))) for s in salts], dtype=np.float64
        ).reshape(-1, 2)
        nothing = np.zeros(len(SCRIPTS))
        for prefix, mine, theirs in (("script", self.ham_scripts_, base.ham_scripts_), ("site", self.site_scripts_, base.site_scripts_)):
            keys = sorted(mine)
            arrays[prefix + "_salts"] = np.array(keys, dtype=np.uint64)
            arrays[prefix + "_rows"] = np.array([mine[k] - theirs.get(k, nothing) for k in keys]).reshape(-1, len(SCRIPTS))
        return pack_delta(arrays)

    def with_delta(self, base: OnlineClassifier, blob: bytes) -> None:
        """Become ``base`` plus a `delta_from` blob."""
        self._digest = None
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            for name in ("weights_", "spam_", "ham_"):
                values = base.__dict__[name].copy()
                where = np.asarray(arrays[name + "buckets"], dtype=np.int64)
                if len(where) and where.max() >= self.size:
                    raise ValueError("a snapshot names a bucket outside the table")
                values[where] += np.asarray(arrays[name + "values"], dtype=np.float32)
                setattr(self, name, values)
            totals = {k: list(v) for k, v in base.totals_.items()}
            for salt, (spam, ham) in zip(np.asarray(arrays["salts"], dtype=np.uint64), np.asarray(arrays["totals"]).reshape(-1, 2)):
                mine = totals.setdefault(int(salt), [0.0, 0.0])
                mine[0] += float(spam)
                mine[1] += float(ham)
            self.totals_ = totals
            for prefix, name in (("script", "ham_scripts_"), ("site", "site_scripts_")):
                scripts = {k: v.copy() for k, v in getattr(base, name).items()}
                rows = np.asarray(arrays[prefix + "_rows"], dtype=np.float64).reshape(-1, len(SCRIPTS))
                for salt, row in zip(np.asarray(arrays[prefix + "_salts"], dtype=np.uint64), rows):
                    scripts.setdefault(int(salt), np.zeros(len(SCRIPTS)))[:] += row
                setattr(self, name, scripts)


def pack_delta(arrays: dict[str, np.ndarray]) -> bytes:
    """`OnlineClassifier.delta_from`'s arrays as the npz blob `with_delta` reads: what
    ``np.savez_compressed`` writes, at deflate level 1 instead of 6, which packed a 2M-bucket
    delta in 0.56 s instead of 2.3 s, to the same 13 MB."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, values in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(values), allow_pickle=False)
    return out.getvalue()
