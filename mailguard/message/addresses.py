"""Mail addresses to the one key per-user data is stored under.

Per-user learning and thresholds must survive the many spellings of one mailbox:
``Bob Smith <Bob+lists@Example.ORG>``, ``bob@example.org`` and an alias such as
``robert@example.org`` are the same person. `canonical_address` maps them all to one
string, and raises ValueError for anything that is not one address.

What it does, in order:

1. parses the input with the stdlib header parser (display names, angle brackets,
   comments and quoted local parts are understood; more than one address is refused);
2. lower-cases the local part and the domain; an internationalised domain becomes its
   ASCII form (IDNA, ``xn--``); an IP literal is written in its canonical form;
3. drops a sub-address tag: everything from the first plus-separator (``bob+tag`` ->
   ``bob``; ``""`` turns this off);
4. follows aliases: whole addresses (``info@shop.example`` -> ``alice@shop.example``)
   and domains (``@old.example`` -> ``@new.example``), repeatedly, at most
   `MAX_ALIAS_HOPS` times (a loop is a ValueError).

Alias tables are matched in canonical form: pass them through `normalise_aliases` once
(the ``[users]`` configuration does) rather than on every call.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address, HeaderRegistry

__all__ = ["MAX_ALIAS_HOPS", "MAX_ALIASES", "canonical_address", "canonical_domain", "normalise_aliases"]

MAX_INPUT_CHARS = 1000  # an address with a display name; anything longer is not an address
MAX_LOCAL_OCTETS = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN_OCTETS = 253  # RFC 1035 (without the trailing dot)
MAX_ADDRESS_OCTETS = 254  # RFC 5321 path limit less the angle brackets
MAX_ALIAS_HOPS = 8  # alias -> alias -> ... chains longer than this are refused as loops
MAX_ALIASES = 100_000  # entries in one alias table

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SEPARATOR_OK = re.compile(r"[!#$%&'*+\-/=?^_`{|}~]")  # atext punctuation other than "."
_REGISTRY = HeaderRegistry()


def canonical_address(
    addr: str, *, aliases: Mapping[str, str] = {}, plus_separators: str = "+"  # noqa: B006 (never mutated)
) -> str:
    """The canonical form of one mail address (see the module docstring for the steps).

    Raises ValueError, naming the problem, for input that is not exactly one address.
    """
    _check_separators(plus_separators)
    local, domain = _parse(addr)
    local = _strip_tag(local, plus_separators)
    result = _join(local, domain)
    for _ in range(MAX_ALIAS_HOPS):
        target = aliases.get(result)
        if target is None:
            domain = result.rpartition("@")[2]
            domain_target = aliases.get("@" + domain)
            if domain_target is None:
                return result
            target = result[: -len(domain)] + domain_target[1:]
        if target == result:
            return result
        result = target
    raise ValueError(f"aliases for {addr!r} loop or chain more than {MAX_ALIAS_HOPS} times")


def canonical_domain(domain: str) -> str:
    """A domain in lower-case ASCII (IDNA for non-ASCII), or a bracketed IP literal; ValueError if invalid."""
    if not isinstance(domain, str):
        raise ValueError("a domain must be a string")
    text = domain.strip()
    if text.startswith("[") and text.endswith("]"):
        return _ip_literal(text[1:-1])
    text = text.rstrip(".")
    if not text:
        raise ValueError("the domain is empty")
    if len(text) > 4 * MAX_DOMAIN_OCTETS:
        raise ValueError("the domain is too long")
    if not text.isascii():
        try:  # IDNA 2003 with nameprep (stdlib): maps case and full-width dots too
            text = text.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"domain {domain!r} is not a valid internationalised name: {exc}") from None
    text = text.lower()
    if len(text) > MAX_DOMAIN_OCTETS:
        raise ValueError(f"domain {text[:40]}... is longer than {MAX_DOMAIN_OCTETS} characters")
    for label in text.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(f"domain {domain!r} has an invalid label {label!r}")
    return text


def normalise_aliases(aliases: Mapping[str, str], *, plus_separators: str = "+") -> dict[str, str]:
    """Validate an alias table and put it in the canonical form `canonical_address` matches.

    Keys are addresses or ``@domain``; an address maps to an address, a domain to a
    domain. A key with a sub-address tag is refused (tags are dropped before aliases
    apply, so it could never match), and so is a table whose aliases loop.
    """
    if not isinstance(aliases, Mapping):
        raise ValueError("aliases must be a table of address = target")
    if len(aliases) > MAX_ALIASES:
        raise ValueError(f"more than {MAX_ALIASES} aliases")
    _check_separators(plus_separators)
    table: dict[str, str] = {}
    for key, target in aliases.items():
        if not isinstance(key, str) or not isinstance(target, str):
            raise ValueError(f"alias {key!r}: keys and targets must be strings")
        key_is_domain = key.strip().startswith("@")
        if key_is_domain != target.strip().startswith("@"):
            raise ValueError(f"alias {key!r} -> {target!r}: an address maps to an address, a @domain to a @domain")
        try:
            if key_is_domain:
                table["@" + canonical_domain(key.strip()[1:])] = "@" + canonical_domain(target.strip()[1:])
                continue
            local, domain = _parse(key)
            if _strip_tag(local, plus_separators) != local:
                raise ValueError("it has a sub-address tag, which is dropped before aliases apply")
            table[_join(local, domain)] = canonical_address(target, plus_separators=plus_separators)
        except ValueError as exc:
            raise ValueError(f"alias {key!r} -> {target!r}: {exc}") from None
    for key in table:  # every chain must end within the hop limit
        probe = key if not key.startswith("@") else "postmaster" + key
        canonical_address(probe, aliases=table, plus_separators="")
    return table


def _check_separators(plus_separators: str) -> None:
    if not isinstance(plus_separators, str) or len(plus_separators) > 8:
        raise ValueError("plus_separators must be a short string of characters such as '+' or '+-'")
    for char in plus_separators:
        if not _SEPARATOR_OK.fullmatch(char):
            raise ValueError(f"plus separator {char!r} must be one of the punctuation characters allowed in a local part, not '.' or '@'")


def _parse(addr: str) -> tuple[str, str]:
    """(lower-case local part, canonical domain) of exactly one address."""
    if not isinstance(addr, str):
        raise ValueError(f"an address must be a string, not {type(addr).__name__}")
    return _parse_str(addr)


@functools.lru_cache(maxsize=4096)  # every scan asks for its recipient's key; parsing costs ~0.1 ms
def _parse_str(addr: str) -> tuple[str, str]:
    if len(addr) > MAX_INPUT_CHARS:
        raise ValueError(f"address longer than {MAX_INPUT_CHARS} characters")
    if any(c in addr for c in "\r\n\0"):
        raise ValueError("address contains a line break or NUL")
    text = addr.strip()
    if not text:
        raise ValueError("the address is empty")
    try:
        header = _REGISTRY("to", text)
        found = header.addresses
    except Exception as exc:  # the stdlib parser can fail on odd input (IndexError on "bob@")
        raise ValueError(f"{addr!r} is not a mail address ({type(exc).__name__})") from None
    problems = [d for d in header.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if len(found) != 1:
        raise ValueError(f"{addr!r} holds {len(found)} addresses, not one")
    local, domain = found[0].username, found[0].domain
    if problems or not local or not domain:
        why = "no @domain" if local and not domain else str(problems[0]) if problems else "no local part"
        raise ValueError(f"{addr!r} is not a mail address: {why}")
    if any(c.isspace() or not c.isprintable() for c in local) or "@" in local:
        raise ValueError(f"{addr!r}: spaces, control characters or @ in the local part are not supported")
    local = local.lower()
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise ValueError(f"{addr!r}: local part longer than {MAX_LOCAL_OCTETS} octets")
    return local, canonical_domain(domain)


def _strip_tag(local: str, plus_separators: str) -> str:
    if not plus_separators:
        return local
    cut = min((i for i in (local.find(s) for s in plus_separators) if i > 0), default=-1)
    return local[:cut] if cut > 0 else local  # "+bob" keeps its name: nothing precedes the tag


def _join(local: str, domain: str) -> str:
    result = Address(username=local, domain=domain).addr_spec  # quotes a local part that needs it
    if len(result.encode("utf-8")) > MAX_ADDRESS_OCTETS:
        raise ValueError(f"address longer than {MAX_ADDRESS_OCTETS} octets")
    return result


def _ip_literal(inner: str) -> str:
    try:
        if inner.lower().startswith("ipv6:"):
            return f"[ipv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise ValueError(f"[{inner}] is not an IP address literal") from None
