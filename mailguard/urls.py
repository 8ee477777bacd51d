"""URLs found in message text and links, with their hosts and registered domains."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from collections.abc import Iterable
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


def registered_domain(host: str) -> str:
    """``www.foo.example.co.uk`` -> ``example.co.uk``; IPs and bare suffixes come back as given."""
    host = host.lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    return _psl().privatesuffix(host) or host


def _parse(text: str) -> Url | None:
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


def extract_urls(sources: Iterable[str], limit: int) -> tuple[list[Url], int]:
    """Distinct http(s) URLs from ``sources`` (text or hrefs); returns (urls, how many past limit)."""
    seen: dict[str, Url] = {}
    dropped = 0
    for source in sources:
        lowered = source.lower()
        if "http" not in lowered and "www." not in lowered:
            continue
        for match in _URL_RE.finditer(source):
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
