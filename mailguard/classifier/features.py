"""What the text classifier sees of a message: its tokens and the byte 4-grams of its head.

Tokens (`tokens.message_tokens`, hashed to 64-bit ids) carry the words and where they stood
(subject, sender, relays, URLs, MIME structure). Overlapping byte 4-grams over the first
``gram_window`` bytes of the raw message (headers and the start of the body) need no word
segmentation, so Chinese or Japanese mail is read as well as English, and they survive the
obfuscations that break words (``v1agra``, ``V.I.A.G.R.A``, HTML comments inside words);
the best online filters of the TREC 2006-2007 spam tracks used exactly these (Cormack's
byte 4-gram logistic regression, Sculley and Wachman's relaxed online SVMs).

Every feature is hashed into one fixed-size table of ``2 ** bits`` buckets (the hashing
trick). A user's copy of a feature is the same id mixed with the user's own salt (Weinberger
et al. 2009, "Feature hashing for large scale multitask learning"), so personal weights live
in the same table as the global ones, and a user's reports move that user's mail first; the
users' copies keep to their own half of the table, out of reach of the global weights.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from xxhash import xxh3_64_intdigest

from ..arrays import distinct_with_index, sorted_distinct
from ..message.context import MessageContext
from ..message.local_headers import delivered_return_path, is_local_header, without_local_headers
from .tokens import hash_tokens, message_tokens

__all__ = ["GRAM_BYTES", "SCRIPTS", "TextFeatures", "bucket_of", "byte_grams", "gram_bytes", "named_tokens", "script_mix", "text_features", "user_salt"]

# Writing systems a message's text is mostly in: the model counts the ham it learned of each,
# so a script it never saw ham of is not taken for spam on its own (see online.py).
SCRIPTS = ("none", "latin", "han", "kana", "hangul", "cyrillic", "greek", "arabic", "hebrew", "thai", "devanagari")
_SCRIPT_LETTERS = [
    ("latin", re.compile(r"[A-Za-z\u00c0-\u024f]")),
    ("han", re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")),
    ("kana", re.compile(r"[\u3040-\u30ff]")),
    ("hangul", re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")),
    ("cyrillic", re.compile(r"[\u0400-\u04ff]")),
    ("greek", re.compile(r"[\u0370-\u03ff]")),
    ("arabic", re.compile(r"[\u0600-\u06ff]")),
    ("hebrew", re.compile(r"[\u0590-\u05ff]")),
    ("thai", re.compile(r"[\u0e00-\u0e7f]")),
    ("devanagari", re.compile(r"[\u0900-\u097f]")),
]
# A letter weighs what it takes in UTF-8 (Latin beyond ASCII, Cyrillic, Greek, Arabic, Hebrew:
# 2 bytes; the rest: 3): the classifier reads byte 4-grams, so this is each script's share of
# what it reads, and a Chinese character (a word, or half of one) is not outweighed by a letter.
_LETTER_BYTES = {"latin": 2, "cyrillic": 2, "greek": 2, "arabic": 2, "hebrew": 2}
_SCRIPT_CHARS = 4000  # of subject and body text looked at
_ASCII_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")

GRAM_BYTES = 12000  # the head of the raw message read for 4-grams by default (models before normalised features read 3,000)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads ids before the top bits are taken
_GRAM_SEED = np.uint64(0x2545F4914F6CDD1D)  # keeps 4-gram ids apart from token ids


@dataclasses.dataclass(frozen=True)
class TextFeatures:
    """One message's distinct token ids and 4-gram ids (uint64 each)."""

    tokens: np.ndarray
    grams: np.ndarray
    script: int = 0  # index into SCRIPTS: what the text is mostly written in
    shares: tuple[float, ...] = ()  # each script's share of the text (`script_mix`); () is all `script`
    # each of `named_tokens`' tokens (in the names' order) as an index into ``tokens``; None: not kept
    named: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    _buckets: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    _slots: dict[tuple[int, int], np.ndarray] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def buckets(self, bits: int, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(token buckets, all buckets) in a table of ``2 ** bits``: the global copy with
        ``salt`` 0, a user's copy with that user's `user_salt`. Token buckets are in token
        order (so a user's copy lines up with the global one, token by token); all buckets
        are distinct (the regression's binary features). Remembered: a scan and the learn
        after it hash once."""
        return self._hashed(bits, salt)[:2]

    def gram_buckets(self, bits: int, salt: int = 0) -> np.ndarray:
        """The bucket of each 4-gram, in ``grams`` order (remembered with `buckets`)."""
        return self._hashed(bits, salt)[2]

    def _hashed(self, bits: int, salt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found = self._buckets.get((bits, salt))
        if found is None:
            tokens, grams = bucket_of(self.tokens, bits, salt), bucket_of(self.grams, bits, salt)
            both = np.concatenate((tokens, grams))
            # sorted as 32-bit numbers when they fit: half the time of a 64-bit sort here
            every = sorted_distinct(both.astype(np.uint32)).astype(np.int64) if bits <= 32 else sorted_distinct(both)
            found = self._buckets[(bits, salt)] = (tokens, every, grams)
        return found

    def slots(self, bits: int, salt: int = 0) -> np.ndarray:
        """Where each token bucket of `buckets` stands among all its buckets (token order).
        Remembered too: a scan reads it twice (score, explanation) and a learn once more."""
        found = self._slots.get((bits, salt))
        if found is None:
            tokens, every = self.buckets(bits, salt)
            found = self._slots[(bits, salt)] = np.searchsorted(every, tokens)
        return found


def bucket_of(ids: np.ndarray, bits: int, salt: int = 0) -> np.ndarray:
    """The bucket of each id, in order. The global copy (``salt`` 0) fills the lower half of
    the table and users' copies the upper half, so no user's learning can move a global
    weight or count, even through a hash collision (users may collide with each other)."""
    if salt:
        mixed = (ids ^ np.uint64(salt)) * _MIX
        return ((mixed >> np.uint64(65 - bits)) | np.uint64(1 << (bits - 1))).astype(np.int64)
    return ((ids * _MIX) >> np.uint64(65 - bits)).astype(np.int64)


def user_salt(user: str) -> int:
    """The salt of a user's copies of the features (never 0: 0 is the global copy)."""
    return xxh3_64_intdigest(b"user:" + user.encode("utf-8", "surrogatepass")) | 1


def byte_grams(raw: bytes, limit: int = GRAM_BYTES) -> np.ndarray:
    """Distinct overlapping byte 4-grams of ``raw[:limit]`` as uint64 ids."""
    head = bytes(raw[:limit])
    if len(head) < 4:
        return np.zeros(0, dtype=np.uint64)
    # each 4-gram is the big-endian number its bytes spell, read in place by a view whose items
    # overlap (a stride of one byte) and copied once as 32-bit numbers (half the work of 64);
    # shifting and or-ing four byte arrays took five times as long
    grams = np.ndarray(shape=(len(head) - 3,), dtype=">u4", buffer=head, strides=(1,)).astype(np.uint32)
    return sorted_distinct(grams).astype(np.uint64) ^ _GRAM_SEED


def gram_bytes(gram: int) -> bytes:
    """The four bytes a 4-gram id stands for (for explanations)."""
    return (gram ^ int(_GRAM_SEED)).to_bytes(8, "big")[4:]


def text_features(ctx: MessageContext, gram_window: int = GRAM_BYTES) -> TextFeatures:
    """The message's features, 4-grams over its first ``gram_window`` bytes (the model's
    own window: `OnlineClassifier.gram_window`), computed once per message (scan and learn
    share them)."""

    def build() -> TextFeatures:
        script, shares = script_mix((ctx.subject + " " + ctx.text)[:_SCRIPT_CHARS])
        tokens, named = distinct_with_index(named_tokens(ctx)[1])
        raw = ctx.raw
        if any(is_local_header(name) for name, _ in ctx.headers):
            raw = without_local_headers(raw, gram_window)
        return_path = delivered_return_path(ctx)
        if return_path is not None:  # where the delivery agent will put it: first, ending as the lines do
            first = raw.find(b"\n", 0, gram_window)
            newline = b"\r\n" if first > 0 and raw[first - 1] == 13 else b"\n"
            raw = b"Return-Path: " + return_path.encode("utf-8", "surrogatepass") + newline + raw[:gram_window]
        return TextFeatures(tokens, byte_grams(raw, gram_window), script, shares, named)

    return ctx.cached(f"text.features:{gram_window}", build)


def script_mix(text: str) -> tuple[int, tuple[float, ...]]:
    """The script most of a text is in, and each script's share of its letters, a letter
    weighed by its UTF-8 length (so, by the bytes of 4-grams it makes). Hangul, kana and Han
    are told apart; a Japanese text mixes kana and Han, and counts as kana when kana is a
    fifth of its letters or more. ASCII letters can only be Latin: they are counted in one C
    pass, and the script patterns run over the other characters alone (ten regex scans of
    the whole text cost 5% of a scan; most mail has few non-ASCII characters or none)."""
    ascii_part = text.encode("ascii", "ignore")
    rest = "".join(_NON_ASCII.findall(text)) if len(ascii_part) < len(text) else ""
    counts = {name: len(pattern.findall(rest)) if rest else 0 for name, pattern in _SCRIPT_LETTERS}
    if counts["kana"] and counts["kana"] * 5 >= counts["kana"] + counts["han"]:
        counts["kana"] += counts.pop("han")
    weights = {name: count * _LETTER_BYTES.get(name, 3) for name, count in counts.items()}
    weights["latin"] += len(ascii_part) - len(ascii_part.translate(None, _ASCII_LETTERS))
    total = sum(weights.values())
    if not total:
        return 0, ()
    name = max(weights, key=weights.__getitem__)
    return SCRIPTS.index(name), tuple(weights.get(script, 0) / total for script in SCRIPTS)


def named_tokens(ctx: MessageContext) -> tuple[list[str], np.ndarray]:
    """The message's distinct tokens, sorted, and their ids in the same order (computed once
    per message: the features use the ids, an explanation the names)."""

    def build() -> tuple[list[str], np.ndarray]:
        names = sorted(message_tokens(ctx))
        ids = hash_tokens(names, keep_order=True)
        return names, ids

    return ctx.cached("text.tokens", build)
