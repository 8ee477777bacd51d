"""URLs found in message text and links, with their hosts and registered domains."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList

__all__ = ["Url", "extract_urls", "registered_domain"]

_URL_RE = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://\[[0-9A-Fa-f:.]+\][^\s<>\"'()\[\]{}]{0,2000}"  # IPv6 literal host
    r"|(?:[Hh][Tt][Tt][Pp][Ss]?://|[Ww][Ww][Ww]\.)[^\s<>\"'()\[\]{}]{2,2000}"
)


@dataclasses.dataclass(frozen=True)
class Url:
    url: str
    host: str  # lower-case, IDNA-encoded; an IP address is normalised
    domain: str  # registered domain (example.co.uk) or the IP address itself
    path: str
    query: str = ""


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


_MAX_CACHED_HOST = 253  # longer is no DNS name; looked up without filling the cache


def registered_domain(host: str) -> str:
    """``www.foo.example.co.uk`` -> ``example.co.uk``; IPs and bare suffixes come back as given."""
    if len(host) <= _MAX_CACHED_HOST:
        return _registered_domain(host)
    return _registered_domain.__wrapped__(host)


@functools.lru_cache(maxsize=4096)  # the same hosts recur message after message; a lookup costs ~10 us
def _registered_domain(host: str) -> str:
    host = host.lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    return _psl().privatesuffix(host) or host


_MAX_CACHED_URL = 512  # characters; longer URLs are parsed and not remembered


def _parse(text: str) -> Url | None:
    if len(text) <= _MAX_CACHED_URL:
        return _remembered_parse(text)
    return _remembered_parse.__wrapped__(text)


@functools.lru_cache(maxsize=2048)  # links recur message after message (list footers, newsletters)
def _remembered_parse(text: str) -> Url | None:
    text = text.rstrip(".,;:!?")
    if text.lower().startswith("www."):
        text = "http://" + text
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    host = host.rstrip(".")
    if not host:
        return None
    return Url(url=text, host=host, domain=registered_domain(host), path=parts.path, query=parts.query)


def _url_matches(source: str, lowered: str) -> Iterator[re.Match[str]]:
    """``_URL_RE.finditer(source)`` (``lowered`` is ``source.lower()``).

    The pattern opens with an alternation, so the regex engine tries it at every position of
    the text. Every match starts at an "http" or a "www." in any case, so in ASCII text
    (where ``lowered`` has the same positions) only those positions are tried, in order,
    each past the end of the match before: the same matches, in half the time."""
    if not source.isascii():
        yield from _URL_RE.finditer(source)
        return
    starts = sorted(_positions(lowered, "http") + _positions(lowered, "www."))
    end = 0
    for start in starts:
        if start < end:
            continue
        match = _URL_RE.match(source, start)
        if match is not None:
            end = match.end()
            yield match


def _positions(text: str, word: str) -> list[int]:
    found = []
    at = text.find(word)
    while at >= 0:
        found.append(at)
        at = text.find(word, at + 1)
    return found


def extract_urls(sources: Iterable[str], limit: int) -> tuple[list[Url], int]:
    """Distinct http(s) URLs from ``sources`` (text or hrefs); returns (urls, how many past limit)."""
    seen: dict[str, Url] = {}
    dropped = 0
    for source in sources:
        lowered = source.lower()
        if "http" not in lowered and "www." not in lowered:
            continue
        for match in _url_matches(source, lowered):
            raw = match.group(0)
            if raw in seen:
                continue
            if len(seen) >= limit:
                dropped += 1
                continue
            url = _parse(raw)
            if url is not None:
                seen[raw] = url
    return list(seen.values()), dropped
