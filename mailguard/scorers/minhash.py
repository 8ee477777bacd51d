"""Fuzzy fingerprints of message text: normalised words -> 3-word shingles -> a 32-value
min-hash signature -> LSH band keys, the way rspamd's fuzzy_check finds near-duplicates.

Why each step:

* Normalisation removes what bulk senders vary per copy: case, punctuation, spacing,
  numbers (prices, order ids, dates), URLs (tracking paths; the registered domain is kept)
  and e-mail addresses (personalised greetings). CJK runs become one "word" per
  character, so 3-shingles are 3-character windows instead of one giant token.
* Shingles of 3 consecutive words keep word order; two texts' Jaccard similarity over
  their shingle sets is what "near-duplicate" means here.
* Min-hash: for each of 32 hash functions the smallest hash over the shingles; the share
  of equal positions between two signatures estimates their Jaccard similarity
  (standard error sqrt(J(1-J)/32), about 0.09 at J=0.5).
* LSH banding: the 32 values cut into ``BANDS`` bands of ``ROWS``; two texts become
  lookup candidates when any band is identical, with probability 1-(1-J^ROWS)^BANDS.

Hashes are xxh3-64 on the words (stable across processes, machines and library versions,
which matters because signatures live in a shared store for weeks) and a splitmix64
finaliser per position on top, vectorised with numpy. datasketch's MinHash (2.0) was
measured and not used: 0.74 ms for 300 words with its default SHA-1 hashing, 0.29 ms with
xxh32, against 0.19 ms here (3,000 words: 4.0 / 1.4 / 2.2 ms), and its 2.0 release changed
the hashing scheme, which would silently orphan every stored signature on an upgrade. Since
then the words are hashed in one pass and the min-hash runs in cache-sized chunks: 0.30 ->
0.13 ms for 300 words, 2.4 -> 0.8 ms for 3,000, measured side by side (same values).

Bands x rows, measured on synthetic pairs by benchmarks/fingerprint.py: 8 x 4 finds 48% of
pairs at Jaccard 0.5, 91% at 0.7 and 100% at 0.9, with 8 keys per stored fingerprint;
10 x 3 finds 81% / 99% / 100% but costs 10 keys (+19% Redis memory) and makes 28% of
J=0.3 pairs candidates; 16 x 2 doubles the memory; 4 x 8 and 6 x 5 miss too much at 0.7.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from xxhash import xxh3_64_intdigest

from ..arrays import sorted_distinct
from ..message.urls import registered_domain
from ..message.words import WordPattern

__all__ = [
    "BANDS",
    "DEFAULT_MAX_WORDS",
    "EMAIL",
    "NUMBER",
    "NUM_PERM",
    "ROWS",
    "SHINGLE",
    "SIGNATURE_BYTES",
    "band_hashes",
    "candidate_probability",
    "fingerprint_id",
    "normalise",
    "shingle_hashes",
    "signature",
    "signature_from_bytes",
    "signature_of_text",
    "signature_to_bytes",
    "similarity",
]

NUM_PERM = 32  # min-hash values per signature (rspamd uses 32 shingles as well)
BANDS = 8  # LSH bands ...
ROWS = 4  # ... of this many values each (BANDS * ROWS <= NUM_PERM); see the module docstring
SIGNATURE_BYTES = NUM_PERM * 4  # stored as little-endian uint32
SHINGLE = 3  # words per shingle

NUMBER = "_n_"  # placeholder for any token holding a digit (runs of them collapse into one)
EMAIL = "_at_"  # placeholder for an e-mail address

DEFAULT_MAX_WORDS = 5000  # near-duplicates are judged on the first this many words
_CHARS_PER_WORD = 12  # only the first max_words * this many characters are read
_SLICE = 8192  # characters normalised at a time
_MAX_HOSTS = 64  # distinct URL hosts resolved to their registered domain per text

# Each pattern starts with a literal, so the regex engine skips ahead to candidates instead
# of trying every position (5x faster on plain text); all are bounded (no quadratic backtracking).
_HTTP = re.compile(
    r"https?://(?:[^\s/@<>\"'()\[\]{}]{0,256}@)?(?P<host>[^\s/:?#@<>\"'()\[\]{}]{1,256})[^\s<>\"'()\[\]{}]*"
)
_WWW = re.compile(r"www\.(?P<host>[^\s/:?#@<>\"'()\[\]{}]{1,252})[^\s<>\"'()\[\]{}]*")
# An address starts only where a run of address characters starts (the lookbehind).
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_CJK_RUN = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]+")
_DIGIT = re.compile(r"\d")
_WORD = WordPattern(r"\w+")  # a ``[...]+`` pattern: see mailguard.message.words
_NOT_WORD = re.compile(r"\W+")

_U64 = np.uint64
_MASK63 = (1 << 63) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a cheap bijection on uint64 with full avalanche (wraps on purpose)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


# One seed per min-hash position; fixed forever (changing them orphans stored signatures).
_SEEDS = _mix(np.arange(1, NUM_PERM + 1, dtype=np.uint64) * _U64(0x9E3779B97F4A7C15)).reshape(NUM_PERM, 1)
# Shingles hashed per numpy pass, so a long text never allocates 32 x n at once. 1024 keeps
# each temporary at 256 KiB, in cache: 2.5x faster than 4096 on 1,500+ shingles, the same below.
_CHUNK = 1024


class _Links:
    """Replaces a URL by its registered domain, as one word. Domains are looked up once per
    host and for at most ``_MAX_HOSTS`` hosts per text (a public-suffix lookup costs ~10 us;
    input must not multiply it)."""

    def __init__(self) -> None:
        self.domains: dict[str, str] = {}

    def __call__(self, match: re.Match[str]) -> str:
        host = match.group("host").rstrip(".,;:!?")
        word = self.domains.get(host)
        if word is None:
            if len(self.domains) >= _MAX_HOSTS:
                return " url "
            domain = registered_domain(host) if host else ""
            word = self.domains[host] = f" {_NOT_WORD.sub('_', domain).strip('_') or 'url'} "
        return word


# How far from its "@" an `_EMAIL` match can reach: 64 characters before it, and after it
# 63 + 8 * 64 = 575 (rounded up). Text farther than that from every "@" holds no address.
_ADDRESS_BEFORE_AT = 65
_ADDRESS_AFTER_AT = 600


def _replace_addresses(piece: str) -> str:
    """``_EMAIL.sub(" _at_ ", piece)``, with the regex run only near the "@" signs.

    The pattern cannot begin with a literal, so a plain sub tries it at every position (half
    of `normalise`'s time on ordinary mail). Windows around the "@" signs are cut so that no
    match can begin at a window's first character (its 65 characters precede the first "@")
    or reach past its end, and windows that would overlap are merged: the same matches, the
    same replacements."""
    out = []
    done = 0
    at = piece.find("@")
    while at >= 0:
        start = max(0, at - _ADDRESS_BEFORE_AT)
        end = at + _ADDRESS_AFTER_AT
        following = piece.find("@", at + 1)
        while 0 <= following <= end + _ADDRESS_BEFORE_AT:
            end = following + _ADDRESS_AFTER_AT
            following = piece.find("@", following + 1)
        out += (piece[done:start], _EMAIL.sub(f" {EMAIL} ", piece[start:end]))
        done = end
        at = following
    out.append(piece[done:])
    return "".join(out)


def _normalise_piece(piece: str, links: _Links, out: list[str]) -> None:
    """Append the words of one slice of text to ``out`` (see `normalise`)."""
    piece = piece.lower()
    if "http" in piece:
        piece = _HTTP.sub(links, piece)
    if "www." in piece:
        piece = _WWW.sub(links, piece)
    if "@" in piece:  # after the URLs, whose user@ part is gone with them
        piece = _replace_addresses(piece)
    if not piece.isascii() and _CJK_RUN.search(piece):
        piece = _CJK_RUN.sub(lambda run: f" {' '.join(run.group())} ", piece)
    for word in _WORD.findall(piece):
        if not word.isalpha() and _DIGIT.search(word):
            if out and out[-1] == NUMBER:
                continue
            word = NUMBER
        out.append(word)


def normalise(text: str, *, max_words: int = DEFAULT_MAX_WORDS) -> list[str]:
    """The words fingerprints are built from: lower case, no punctuation, a URL as its
    registered domain, an address as ``_at_``, any token with a digit as ``_n_`` (a run of
    them as one, so "1,000.00" and "5" read alike), CJK one character per word.

    At most ``max_words`` words from at most ``max_words * 12`` characters. The text is
    read in slices cut at whitespace until enough words are in, so work stays proportional
    to what is used however long the text; URLs, addresses and CJK are handled by regex
    substitutions over the slice, only where its characters show they may occur."""
    text = text[: max_words * _CHARS_PER_WORD]
    out: list[str] = []
    links = _Links()
    pos = 0
    while pos < len(text) and len(out) < max_words:
        end = pos + _SLICE
        if end < len(text):
            cut = max(text.rfind(" ", pos, end), text.rfind("\n", pos, end))
            end = cut + 1 if cut > pos else end
        _normalise_piece(text[pos:end], links, out)
        pos = end
    return out[:max_words]


def shingle_hashes(words: Sequence[str]) -> np.ndarray:
    """One uint64 per window of ``SHINGLE`` consecutive words (order-sensitive), distinct."""
    if len(words) < SHINGLE:
        return np.zeros(0, dtype=np.uint64)
    per_word = _word_hashes(words)
    combined = _mix(per_word[2:] + _U64(0x632BE59BD9B4E019))
    combined = _mix(per_word[1:-1] ^ combined)
    combined = _mix(per_word[:-2] ^ combined)
    return sorted_distinct(combined)


def _word_hashes(words: Sequence[str]) -> np.ndarray:
    """xxh3-64 of each word's UTF-8 bytes. The words are encoded as one NUL-joined string and
    split as bytes, so the per-word work is one C call (30% faster than encoding word by word);
    a word holding a NUL itself (never one from `normalise`) falls back to word by word."""
    pieces = "\0".join(words).encode("utf-8", "surrogatepass").split(b"\0")
    if len(pieces) != len(words):
        pieces = [w.encode("utf-8", "surrogatepass") for w in words]
    return np.fromiter(map(xxh3_64_intdigest, pieces), dtype=np.uint64, count=len(words))


def signature(shingles: np.ndarray) -> np.ndarray | None:
    """The 32-value min-hash signature (uint32) of a shingle set; None for an empty set."""
    if len(shingles) == 0:
        return None
    best = np.full(NUM_PERM, np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(shingles), _CHUNK):
        chunk = shingles[start : start + _CHUNK].reshape(1, -1)
        np.minimum(best, _mix(chunk ^ _SEEDS).min(axis=1), out=best)
    # The top 32 bits of the minimum: two different shingles agree there with odds 2^-32.
    return (best >> _U64(32)).astype(np.uint32)


def signature_of_text(text: str, *, min_words: int = 10, max_words: int = DEFAULT_MAX_WORDS) -> np.ndarray | None:
    """Normalise, shingle and sign ``text``; None when it has fewer than ``min_words`` words."""
    words = normalise(text, max_words=max_words)
    if len(words) < max(min_words, SHINGLE):
        return None
    return signature(shingle_hashes(words))


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of the shingle sets behind two signatures."""
    if a.shape != b.shape or len(a) == 0:
        return 0.0
    return float(np.count_nonzero(a == b)) / len(a)


def band_hashes(sig: np.ndarray, *, bands: int = BANDS, rows: int = ROWS) -> list[int]:
    """One 63-bit key per LSH band (the band's index is hashed in, so bands never collide
    with one another); near-duplicates share at least one with high probability."""
    if bands * rows > len(sig):
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} values; the signature has {len(sig)}")
    raw = np.ascontiguousarray(sig, dtype="<u4").tobytes()
    width = rows * 4
    return [xxh3_64_intdigest(raw[i * width : (i + 1) * width], seed=i + 1) & _MASK63 for i in range(bands)]


def fingerprint_id(sig: np.ndarray) -> int:
    """A 63-bit id for a signature: equal signatures (same normalised text) share one record.
    An integer, so that Redis keeps sets of ids compact (intset encoding)."""
    return xxh3_64_intdigest(signature_to_bytes(sig)) & _MASK63


def signature_to_bytes(sig: np.ndarray) -> bytes:
    """The compact stored form: 32 little-endian uint32 (128 bytes), the same on every machine."""
    return np.ascontiguousarray(sig, dtype="<u4").tobytes()


def signature_from_bytes(data: bytes) -> np.ndarray | None:
    """The signature stored by `signature_to_bytes`; None when ``data`` is not one."""
    if len(data) != SIGNATURE_BYTES:
        return None
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)


def candidate_probability(jaccard: float, *, bands: int = BANDS, rows: int = ROWS) -> float:
    """Chance that two texts of this Jaccard similarity share at least one band."""
    return 1.0 - (1.0 - jaccard**rows) ** bands
