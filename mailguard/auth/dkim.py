"""DKIM (RFC 6376) and ARC (RFC 8617) verification with dkimpy, keys fetched by our `Resolver`.

dkimpy takes its DNS as a function (``dnsfunc``), which is synchronous. The key names are in
the signatures (``s=`` selector, ``d=`` domain), so every key of the message is fetched at
once beforehand; dkimpy then reads them from that dict. A name it asks for that was not
fetched (should not happen) restarts the verification after fetching it, as for SPF.
A key lookup that timed out or got SERVFAIL makes the signature ``temperror``, never ``fail``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from ..dns import Answer
from ..message.context import MessageContext

__all__ = ["ArcResult", "ArcSet", "DkimResult", "shared_dkim_results", "verify_arc", "verify_dkim"]

Lookup = Callable[[str, str], Awaitable[Answer]]

# dkimpy logs every bad signature at ERROR; that is a normal outcome for a filter, and we
# report it in the result instead. Kept quiet unless someone attaches a handler.
_QUIET = logging.getLogger("mailguard.dkimpy")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
_MAX_ROUNDS = 8


class _NeedLookup(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _TempFail(Exception):
    """A key lookup failed temporarily: the signature cannot be judged."""


@dataclasses.dataclass(frozen=True)
class DkimResult:
    result: str  # pass fail temperror permerror
    domain: str  # d=
    selector: str  # s=
    identity: str = ""  # i=
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class ArcSet:
    instance: int
    sealer: str  # ARC-Seal d=
    aar: str  # ARC-Authentication-Results value


@dataclasses.dataclass(frozen=True)
class ArcResult:
    result: str  # pass fail none temperror
    sets: tuple[ArcSet, ...] = ()  # newest first
    detail: str = ""


def _key_name(tags: dict[bytes, bytes]) -> str:
    return (tags.get(b"s", b"") + b"._domainkey." + tags.get(b"d", b"")).decode("ascii", "replace").lower().rstrip(".")


def _tags(value: bytes) -> dict[bytes, bytes] | None:
    try:
        return parse_tag_value(value)
    except (InvalidTagValueList, ValueError, IndexError):
        return None


class _Keys:
    """The prefetched key TXT answers, and what dkimpy's ``dnsfunc`` saw of them."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.answers: dict[str, Answer] = {}
        self.missing: set[str] = set()

    async def fetch(self, names: set[str]) -> None:
        names = {n for n in names if n and n not in self.answers}
        if names:
            found = await asyncio.gather(*(self.lookup(n, "TXT") for n in sorted(names)))
            self.answers.update(zip(sorted(names), found))

    def dnsfunc(self, name: bytes, timeout: float = 5) -> bytes | None:
        key = name.decode("ascii", "replace").lower().rstrip(".")
        answer = self.answers.get(key)
        if answer is None:
            raise _NeedLookup(key)
        if answer.failed:
            raise _TempFail(f"key {key}: {answer.status}")
        if not answer.ok or not answer.records:
            self.missing.add(key)
            return None
        return b"".join(r for r in answer.records if isinstance(r, bytes))

    async def run(self, verify: Callable[[], object]) -> object:
        """Call ``verify`` (which uses ``dnsfunc``), fetching any key it lacks and retrying."""
        for _ in range(_MAX_ROUNDS):
            try:
                return verify()
            except _NeedLookup as need:
                await self.fetch({need.name})
        raise _TempFail("key lookups did not settle")


async def verify_dkim(raw: bytes, lookup: Lookup, *, max_signatures: int = 10, minkey: int = 1024) -> list[DkimResult]:
    """One result per DKIM-Signature (the first ``max_signatures``), keys fetched concurrently."""
    try:
        verifier = dkim.DKIM(raw, logger=_QUIET, minkey=minkey)
    except dkim.DKIMException as exc:
        return [DkimResult("permerror", "", "", detail=f"message unreadable for DKIM: {exc}")]
    values = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"][:max_signatures]
    tags = [_tags(v) for v in values]
    keys = _Keys(lookup)
    await keys.fetch({_key_name(t) for t in tags if t and b"s" in t and b"d" in t})
    results = []
    for idx, tag in enumerate(tags):
        domain = (tag or {}).get(b"d", b"").decode("ascii", "replace").lower()
        selector = (tag or {}).get(b"s", b"").decode("ascii", "replace")
        identity = (tag or {}).get(b"i", b"").decode("ascii", "replace")
        if tag is None or not domain or not selector:
            results.append(DkimResult("permerror", domain, selector, identity, "malformed signature"))
            continue
        try:
            ok = await keys.run(lambda i=idx: verifier.verify(idx=i, dnsfunc=keys.dnsfunc))
        except _TempFail as exc:
            results.append(DkimResult("temperror", domain, selector, identity, str(exc)))
            continue
        except dkim.DKIMException as exc:
            text = str(exc)
            # the body changed since signing: the signature does not verify. Anything else
            # (missing tags, expired, unusable key) is a malformed signature: permerror
            result = "fail" if "body hash mismatch" in text else "permerror"
            results.append(DkimResult(result, domain, selector, identity, text.split(" (")[0][:100]))
            continue
        if ok:
            results.append(DkimResult("pass", domain, selector, identity))
        elif _key_name(tag) in keys.missing:
            results.append(DkimResult("permerror", domain, selector, identity, f"no key at {_key_name(tag)}"))
        else:
            results.append(DkimResult("fail", domain, selector, identity, "signature did not verify"))
    return results


def shared_dkim_results(ctx: MessageContext, lookup: Lookup, max_signatures: int = 10) -> asyncio.Future[list[DkimResult]]:
    """The message's DKIM results as one task per message, shared by every scorer that needs
    them (auth, reputation) and by per-recipient copies, so the signatures are verified and
    their keys fetched once. The first caller's ``lookup`` (and so its time budget) is used.

    Await it through ``asyncio.shield``: a consumer that times out must not cancel the
    verification the other consumers are waiting for. The future returned always belongs to
    the running event loop: a finished verification from another loop is copied into one; one
    cancelled (its loop closed mid-verification) or still running elsewhere is redone here.
    """

    def start() -> asyncio.Future[list[DkimResult]]:
        return asyncio.ensure_future(verify_dkim(ctx.raw, lookup, max_signatures=max_signatures))

    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[DkimResult]] = ctx.cached("dkim.results", start)
    if future.cancelled() or (future.get_loop() is not loop and not future.done()):
        return start()
    if future.get_loop() is not loop:
        copy: asyncio.Future[list[DkimResult]] = loop.create_future()
        error = future.exception()
        if error is not None:
            copy.set_exception(error)
        else:
            copy.set_result(future.result())
        return copy
    return future


_INSTANCE = re.compile(rb"\bi\s*=\s*(\d+)")


def _arc_sets(headers: list[tuple[bytes, bytes]]) -> tuple[list[ArcSet], set[str]]:
    """The ARC sets (newest first) and every key name their seals and signatures use."""
    sealers: dict[int, str] = {}
    aars: dict[int, str] = {}
    names: set[str] = set()
    for name, value in headers:
        lower = name.lower()
        if lower in (b"arc-seal", b"arc-message-signature"):
            tag = _tags(value)
            if tag and b"s" in tag and b"d" in tag:
                names.add(_key_name(tag))
                if lower == b"arc-seal" and tag.get(b"i", b"").strip().isdigit():
                    sealers[int(tag[b"i"])] = tag[b"d"].decode("ascii", "replace").lower()
        elif lower == b"arc-authentication-results":
            match = _INSTANCE.search(value)
            if match:
                aars[int(match.group(1))] = value.decode("utf-8", "replace")
    sets = [ArcSet(i, sealers[i], aars.get(i, "")) for i in sorted(sealers, reverse=True)]
    return sets, names


async def verify_arc(raw: bytes, lookup: Lookup, *, minkey: int = 1024) -> ArcResult:
    """Validate the ARC chain (RFC 8617 5.2): pass, fail, or none when there is no ARC set."""
    try:
        arc = dkim.ARC(raw, logger=_QUIET, minkey=minkey)
    except dkim.DKIMException as exc:
        return ArcResult("fail", detail=f"message unreadable for ARC: {exc}")
    sets, names = _arc_sets(arc.headers)
    if not sets and not names:
        return ArcResult("none")
    keys = _Keys(lookup)
    await keys.fetch(names)
    try:
        cv, _, reason = await keys.run(lambda: arc.verify(dnsfunc=keys.dnsfunc))  # type: ignore[misc]
    except _TempFail as exc:
        return ArcResult("temperror", tuple(sets), str(exc))
    except dkim.DKIMException as exc:
        return ArcResult("fail", tuple(sets), str(exc)[:200])
    result = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
    return ArcResult(result, tuple(sets), str(reason))
