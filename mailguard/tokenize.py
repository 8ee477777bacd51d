"""Message -> tokens for the Bayesian classifier.

Tokens carry where they came from (``subj:``, ``h:from:``, ``url:``), body text also gives
sparse bigrams (OSB: word pairs up to four apart, the gap encoded), and CJK runs become
character bigrams, so Chinese or Japanese mail is neither dropped nor split into single
characters. Token strings are hashed to 64-bit ids; the model stores only ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
from xxhash import xxh3_64_intdigest

from .message import MessageContext

__all__ = ["hash_tokens", "message_tokens", "text_tokens"]

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|[$€£]?[^\W_{_CJK}](?:[\w$'.@%-]*[^\W_{_CJK}])?")
_DIGITS = re.compile(r"\d")
_MAX_WORD = 40
_OSB_WINDOW = 4  # pairs (w_i, w_{i+d}) for d = 1..4

# Headers whose words are evidence, with the prefix their tokens get.
_HEADERS = {
    "from": "from",
    "reply-to": "reply-to",
    "return-path": "return-path",
    "to": "to",
    "cc": "cc",
    "message-id": "mid",
    "x-mailer": "mailer",
    "user-agent": "mailer",
    "content-type": "ctype",
    "list-id": "list",
    "list-unsubscribe": "list-unsub",
    "precedence": "precedence",
    "x-priority": "priority",
    "mime-version": "mime",
    "content-transfer-encoding": "cte",
    "organization": "org",
}
_HEADER_WORD = re.compile(r"[\w.@$%-]+")


def _words(text: str) -> list[str]:
    """Lower-case words, CJK runs as character bigrams, numbers reduced to their shape."""
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        first = token[0]
        if "\u3040" <= first and _is_cjk(first):
            if len(token) == 1:
                out.append(token)
            else:
                out.extend(token[i : i + 2] for i in range(len(token) - 1))
            continue
        if len(token) > _MAX_WORD:
            out.append(f"long:{len(token) // 10}")
            continue
        token = token.lower().rstrip(".'-")
        if _DIGITS.search(token) and len(token) > 4:
            token = _DIGITS.sub("9", token)
        if token:
            out.append(token)
    return out


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF


def text_tokens(text: str, prefix: str = "", bigrams: bool = True, limit: int = 20000) -> list[str]:
    """Words of ``text`` plus OSB pairs; every token gets ``prefix``."""
    words = _words(text)[:limit]
    tokens = [prefix + w for w in words]
    if bigrams:
        for d in range(1, _OSB_WINDOW + 1):
            tag = f"{prefix}{d}|"
            tokens.extend(f"{tag}{a} {b}" for a, b in zip(words, words[d:]))
    return tokens


def message_tokens(ctx: MessageContext) -> list[str]:
    """All tokens of a message (with repeats; the classifier uses the distinct ones)."""
    limit = ctx.limits.max_tokens
    tokens = text_tokens(ctx.subject, "subj:")
    tokens += text_tokens(ctx.text, "", limit=limit)
    for name, value in ctx.headers:
        prefix = _HEADERS.get(name)
        if prefix is not None:
            tokens.extend(f"h:{prefix}:{w.lower()}" for w in _HEADER_WORD.findall(value[:2000]))
        elif name.startswith("x-"):
            tokens.append(f"hname:{name}")
    for hop in ctx.received[:6]:
        for value, kind in ((hop.helo, "helo"), (hop.rdns, "rdns"), (hop.by, "by")):
            if value:
                tokens.append(f"rcvd:{kind}:{value.lower()}")
        if hop.ip:
            tokens.append(f"rcvd:ip:{hop.ip}")
            tokens.append(f"rcvd:net:{hop.ip.rsplit('.', 1)[0]}")
    for url in ctx.urls:
        tokens.append(f"url:host:{url.host}")
        tokens.append(f"url:dom:{url.domain}")
        tokens.extend(f"url:path:{seg.lower()}" for seg in url.path.split("/") if 0 < len(seg) <= _MAX_WORD)
    for att in ctx.attachments:
        tokens.append(f"att:type:{att.declared_type}")
        if att.sniffed_type:
            tokens.append(f"att:sniff:{att.sniffed_type}")
        if "." in att.filename:
            tokens.append(f"att:ext:{att.filename.rsplit('.', 1)[1].lower()[:10]}")
    tokens.append(f"parts:{min(ctx.part_count, 10)}")
    if ctx.image_count:
        tokens.append(f"images:{min(ctx.image_count, 5)}")
    return tokens


def hash_tokens(tokens: Iterable[str]) -> np.ndarray:
    """Distinct tokens -> sorted unique uint64 ids (xxh3: stable across processes and machines)."""
    distinct = set(tokens)
    if not distinct:
        return np.zeros(0, dtype=np.uint64)
    blob = "\0".join(distinct).encode("utf-8", "surrogatepass")
    ids = np.fromiter(map(xxh3_64_intdigest, blob.split(b"\0")), dtype=np.uint64, count=len(distinct))
    return np.unique(ids)
