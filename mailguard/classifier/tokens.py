"""Message -> tokens for the Bayesian classifier.

A message is the set of its distinct tokens. Header evidence matters as much as the words
(the benchmark showed it: who sent the mail, through which hosts, with which software and
MIME structure separates newsletters from spam that reads alike), so tokens carry where
they came from: ``subj:``, ``from:dom:``, ``rcvd:host:``, ``url:dom:``, ``part:``... Body
words are unprefixed. CJK runs become overlapping character bigrams, so Chinese and
Japanese mail is neither dropped nor split into single characters. Word bigrams (OSB)
were measured and left out: no better, three to fifteen times the model size.

Token strings are hashed to 64-bit ids with xxh3; the model stores only ids.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import numpy as np
from xxhash import xxh3_64_intdigest

from ..arrays import sorted_distinct
from ..message.context import MessageContext
from ..message.local_headers import delivered_return_path, is_local_header
from ..message.words import WordPattern

__all__ = ["hash_tokens", "message_tokens", "words"]

_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]+")
_WORD = WordPattern(r"[\w$'!\-.@]+")  # a ``[...]+`` pattern: see mailguard.message.words
_STRIP = "'-.!_@"
_MAX_WORD = 40
_HOST = re.compile(r"\b((?:[a-z0-9-]+\.)+[a-z]{2,})\b")
_IPV4 = re.compile(r"\b(\d{1,3}\.\d{1,3}\.\d{1,3})\.(\d{1,3})\b")
_ADDRESS = re.compile(r"([\w.+=-]+)@([\w.-]+\.[a-z]{2,})")
_PATH_SPLIT = re.compile(r"[/?&=#.;,_+%-]+")
_CHARSET = re.compile(r'charset="?([\w-]+)')
_BOUNDARY = re.compile(r'boundary="?([^";]+)')
_TIMEZONE = re.compile(r"([+-]\d{4}|\b[A-Z]{2,4}\b)\s*(\(.*\))?\s*$")
_DIGITS, _LOWER, _UPPER = re.compile(r"[0-9]+"), re.compile(r"[a-z]+"), re.compile(r"[A-Z]+")

_ADDRESS_HEADERS = frozenset({"from", "reply-to", "return-path", "sender", "errors-to", "to", "cc"})
# Headers whose whole value (first 60 characters) and words become tokens.
_VALUE_HEADERS = frozenset(
    {
        "x-mailer",
        "user-agent",
        "x-mimeole",
        "x-msmail-priority",
        "x-priority",
        "precedence",
        "content-transfer-encoding",
        "mime-version",
        "organization",
        "x-mailing-list",
        "x-beenthere",
        "mailing-list",
        "x-originating-ip",
    }
)


def _shape(text: str) -> str:
    """Character-class shape: digit runs -> 9, lower-case runs -> a, upper-case runs -> A."""
    return _UPPER.sub("A", _LOWER.sub("a", _DIGITS.sub("9", text)))[:40]


def _last_two(host: str) -> str:
    return ".".join(host.split(".")[-2:])


def words(text: str, out: set[str], prefix: str = "") -> None:
    """Add the words of ``text`` to ``out``: lower case, 2 to 40 characters (longer ones
    become ``skip:<first>:<length/10>``), CJK runs as overlapping character bigrams."""
    text = text.lower()
    if not text.isascii() and _CJK.search(text):  # (every CJK range is outside ASCII)
        for run in _CJK.findall(text):
            if len(run) == 1:
                out.add(prefix + run)
            else:
                out.update(prefix + run[i : i + 2] for i in range(len(run) - 1))
        text = _CJK.sub(" ", text)
    for word in set(_WORD.findall(text)):
        word = word.strip(_STRIP)
        if len(word) < 2:
            continue
        out.add(prefix + (word if len(word) <= _MAX_WORD else f"skip:{word[0]}:{len(word) // 10 * 10}"))


def _address_tokens(name: str, value: str, out: set[str]) -> None:
    value = value.lower()
    found = False
    for local, domain in _ADDRESS.findall(value):
        found = True
        out.add(f"{name}:addr:{local}@{domain}")
        out.add(f"{name}:dom:{domain}")
        out.add(f"{name}:dom2:{_last_two(domain)}")
    if "<" in value:
        for word in _WORD.findall(value.split("<")[0]):
            word = word.strip(_STRIP)
            if 1 < len(word) <= _MAX_WORD:
                out.add(f"{name}:name:{word}")
    if not found:
        out.add(f"{name}:noaddr")


# Headers whose values are new in (nearly) every message: not worth remembering.
_UNIQUE_HEADERS = frozenset({"received", "message-id", "date", "in-reply-to", "references"})
_MAX_CACHED_VALUE = 256  # characters; longer values are tokenized and not remembered


def _header_tokens(name: str, value: str, out: set[str]) -> None:
    """Add one header's tokens to ``out``. Most header lines recur message after message
    (mailing lists, newsletters, the same senders: 88% of the corpus's other headers), so
    their tokens are remembered for recent (name, value) pairs."""
    if name in _UNIQUE_HEADERS or len(value) > _MAX_CACHED_VALUE:
        _add_header_tokens(name, value, out)
    else:
        out.update(_remembered_header_tokens(name, value))


@functools.lru_cache(maxsize=1024)  # 88% of the corpus's other headers hit; at most ~10 MB
def _remembered_header_tokens(name: str, value: str) -> frozenset[str]:
    found: set[str] = set()
    _add_header_tokens(name, value, found)
    return frozenset(found)


def _add_header_tokens(name: str, value: str, out: set[str]) -> None:
    out.add("hdr:" + name)
    if name in _ADDRESS_HEADERS:
        _address_tokens(name, value, out)
    elif name == "received":
        hosts, addresses = _names_in(value.lower())
        for host in hosts:
            out.add("rcvd:host:" + host)
            out.add("rcvd:dom:" + _last_two(host))
        for net, last in addresses:
            out.add(f"rcvd:ip:{net}.{last}")
            out.add(f"rcvd:ip24:{net}")
    elif name == "message-id":
        value = value.strip()
        _, at, domain = value.partition("@")
        out.add("mid:dom:" + (domain.strip(" >").lower() if at else "none"))
        out.add("mid:shape:" + _shape(value.split("@")[0]))
    elif name in _VALUE_HEADERS:
        lowered = value.lower().strip()
        out.add(f"{name}:{lowered[:60]}")
        out.update(f"{name}:w:{w}" for w in _WORD.findall(lowered) if len(w) < _MAX_WORD)
    elif name == "content-type":
        lowered = value.lower()
        out.add("ct:" + lowered.split(";")[0].strip())
        charset = _CHARSET.search(lowered)
        if charset:
            out.add("ct:charset:" + charset.group(1))
        boundary = _BOUNDARY.search(value)
        if boundary:
            out.add("ct:bshape:" + _shape(boundary.group(1)))
    elif name.startswith("list-"):
        lowered = value.lower()
        out.update(f"{name}:host:{h}" for h in _names_in(lowered)[0])
        out.add(f"{name}:{lowered.strip()[:60]}")
    elif name == "date":
        zone = _TIMEZONE.search(value.strip())
        out.add("date:tz:" + (zone.group(1) if zone else "none"))
    elif name != "subject":
        words(value[:1000], out, name + ":w:")


def _names_in(lowered: str) -> tuple[set[str], set[tuple[str, str]]]:
    """What `_HOST` and `_IPV4` find in a lower-case header value, as sets.

    Both regexes are slow (they are tried at every word), but what they match holds a dot and
    no space, and a match found in the whole value is one found in its word alone. So only
    the dotted words are read, each once: relay names and addresses recur message after
    message."""
    hosts: set[str] = set()
    addresses: set[tuple[str, str]] = set()
    for word in lowered.split():
        if "." in word:
            found = _dotted_word(word) if len(word) <= _MAX_CACHED_WORD else _dotted_word.__wrapped__(word)
            hosts.update(found[0])
            addresses.update(found[1])
    return hosts, addresses


_MAX_CACHED_WORD = 255  # longer words are read but not remembered


@functools.lru_cache(maxsize=4096)
def _dotted_word(word: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    return tuple(_HOST.findall(word)), tuple(_IPV4.findall(word))


def message_tokens(ctx: MessageContext) -> set[str]:
    """The distinct tokens of a message (bounded by ``limits.max_tokens``)."""
    out: set[str] = set()
    words(ctx.subject, out, "subj:")
    for name, value in ctx.headers:
        if not is_local_header(name):  # a mail store's or a filter's, not the sender's
            _header_tokens(name, value, out)
    return_path = delivered_return_path(ctx)
    if return_path is not None:  # scanned before delivery: read the envelope sender as stored mail has it
        _header_tokens("return-path", return_path, out)
    for part in ctx.parts:
        out.add("part:" + part.content_type)
        if "." in part.filename:
            out.add("part:ext:" + part.filename.rsplit(".", 1)[1].lower()[:10])
        if part.transfer_encoding:
            out.add("part:cte:" + part.transfer_encoding)
    for url in ctx.urls:
        out.add("url:host:" + url.host)
        out.add("url:ip" if url.domain == url.host and url.host[-1:].isdigit() else "url:dom:" + url.domain)
        for piece in _PATH_SPLIT.split(f"{url.path}?{url.query}".lower()):
            if 1 < len(piece) <= _MAX_WORD:
                out.add("url:p:" + piece)
    for part in ctx.text_parts:
        words(part.text, out)
    if len(out) > ctx.limits.max_tokens:
        ctx.problems.append(f"{len(out)} distinct tokens; {ctx.limits.max_tokens} used")
        out = set(sorted(out)[: ctx.limits.max_tokens])
    return out


def hash_tokens(tokens: Iterable[str], *, keep_order: bool = False) -> np.ndarray:
    """Distinct tokens -> sorted unique uint64 ids (xxh3: stable across processes and machines);
    with ``keep_order``, the id of each token of a list in its order (for naming them back)."""
    distinct = tokens if keep_order or isinstance(tokens, (set, frozenset)) else set(tokens)
    if not distinct:
        return np.zeros(0, dtype=np.uint64)
    blob = "\0".join(distinct).encode("utf-8", "surrogatepass")
    ids = np.fromiter(map(xxh3_64_intdigest, blob.split(b"\0")), dtype=np.uint64, count=len(distinct))
    if keep_order:
        return ids
    return sorted_distinct(ids)  # two tokens with one 64-bit id: practically never
