"""Bytes to text for bodies and headers, whatever charset the sender claimed (or did not)."""

from __future__ import annotations

import codecs
import email.header
import functools
import re

from charset_normalizer import from_bytes

__all__ = ["decode_bytes", "decode_header_value"]

# Labels mail really uses, mapped to the codec that decodes what senders meant:
# supersets for Chinese and Japanese, and Windows code pages for "latin-1" the way
# mail clients and browsers read them.
_ALIASES = {
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "iso-2022-jp": "iso2022_jp_2",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "windows-874": "cp874",
}

_DETECT_SAMPLE = 64 * 1024


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True):  # base64, zlib, rot13...: not charsets
        return None
    if info.name in _NOT_CHARSETS:
        return None
    return info.name


# Text codecs that are no mail charset: they decode host names or Python escapes, and some
# raise on errors="replace" (idna) or on any input (undefined).
_NOT_CHARSETS = frozenset({"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"})


def decode_bytes(data: bytes, declared: str | None) -> tuple[str, str]:
    """Decode ``data``; returns (text, codec used). Never raises.

    Order: the declared charset if it decodes cleanly, then UTF-8, then the declared
    charset with a few replacements, then detection, then Latin-1 (which always works).
    """
    codec = _codec(declared)
    if codec:
        try:
            return data.decode(codec), codec
        except UnicodeError:  # UnicodeDecodeError, or a codec's own complaint
            pass
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if codec:
        try:
            text = data.decode(codec, "replace")
        except UnicodeError:  # a codec that cannot replace: go on to detection
            text = ""
        if text and text.count("\ufffd") * 50 <= len(text):
            return text, codec
    try:
        best = from_bytes(data[:_DETECT_SAMPLE]).best()
    except Exception:  # detection is a heuristic; never let it break a scan
        best = None
    if best is not None and best.encoding:
        found = _codec(best.encoding) or "latin-1"
        return data.decode(found, "replace"), found
    return data.decode("latin-1"), "latin-1"


_FOLD = re.compile(r"\r?\n[ \t]+")
_MAX_HEADER_CHARS = 16 * 1024


def decode_header_value(value: object, limit: int = _MAX_HEADER_CHARS) -> str:
    """Unfold a header and decode RFC 2047 words and raw 8-bit bytes into text."""
    text = value if isinstance(value, str) else str(value)
    text = text[: limit * 2]
    if "\n" in text:  # (most headers are one line: skip the regex pass)
        text = _FOLD.sub(" ", text)
    if not text.isascii() or "=?" in text:
        text = _decoded(text) if len(text) <= _MAX_CACHED_CHARS else _decoded.__wrapped__(text)
    return text[:limit].strip()


_MAX_CACHED_CHARS = 1000  # longer values are decoded and not remembered


@functools.lru_cache(maxsize=512)  # encoded names and subjects recur; decoding them (detection above all) is slow
def _decoded(text: str) -> str:
    """Raw 8-bit bytes and RFC 2047 encoded words of an unfolded header, decoded."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # raw 8-bit header bytes arrive as surrogate escapes
            text = decode_bytes(text.encode("utf-8", "surrogateescape"), None)[0]
    if "=?" in text:
        try:
            text = "".join(
                # unencoded runs come back as raw-unicode-escape bytes: undo exactly that
                (chunk.decode("raw-unicode-escape") if charset is None else decode_bytes(chunk, charset)[0])
                if isinstance(chunk, bytes)
                else chunk
                for chunk, charset in email.header.decode_header(text)
            )
        except Exception:  # malformed encoded words: keep them as written
            pass
    return text
