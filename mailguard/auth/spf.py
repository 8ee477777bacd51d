"""SPF (RFC 7208) with pyspf's evaluator and our own async `Resolver` for every DNS answer.

pyspf resolves names itself, synchronously, through the module-level dnspython resolver,
and has no resolver parameter. Rather than patch that global or block a thread per check,
the check is *restartable*: a `spf.query` subclass answers only from the answers gathered
so far and, for a name it has not seen, raises `_NeedLookup`. We await that lookup through
the shared resolver (cache, counters, the configured server) and run the check again; it
is pure computation over the answers, and an SPF check needs at most a few dozen lookups.
So SPF never blocks the event loop, is cancelled cleanly by the scan deadline, and never
reaches the system resolver.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from ..dns import Answer

with warnings.catch_warnings():  # pyspf's source has invalid escapes; compiling it warns
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", SyntaxWarning)
    import spf

__all__ = ["SpfResult", "check_spf"]

Lookup = Callable[[str, str], Awaitable[Answer]]
_MAX_ROUNDS = 60  # RFC 7208 4.6.4 caps DNS work at 10 mechanisms (+MX/PTR fan-out, voids)


class _NeedLookup(Exception):
    def __init__(self, name: str, qtype: str) -> None:
        super().__init__(name, qtype)
        self.key = (name, qtype)


@dataclasses.dataclass(frozen=True)
class SpfResult:
    result: str  # pass fail softfail neutral none temperror permerror
    domain: str  # the domain checked (MAIL FROM's, or HELO's)
    explanation: str = ""
    lookups: int = 0


def _records(answer: Answer) -> list[Any]:
    """Answer values in the shapes pyspf's own dnspython lookup returns."""
    if answer.rdtype in ("TXT", "SPF"):
        return [[r] for r in answer.records]  # a TXT value is a list of byte strings
    return list(answer.records)  # A/AAAA str, MX (pref, host), PTR host


class _Query(spf.query):  # type: ignore[misc]
    """pyspf's query, with DNS answered from ``answers`` (filled in between runs)."""

    def __init__(self, answers: dict[tuple[str, str], Answer], **kw: Any) -> None:
        super().__init__(**kw)
        self._answers = answers

    def dns(self, name: str, qtype: str, cnames: Any = None, ignore_void: bool = False) -> list[Any]:
        name = str(name).rstrip(".").lower()
        if not name or any(not 0 < len(label) < 64 for label in name.split(".")):
            return []  # as pyspf: an invalid name has no records
        answer = self._answers.get((name, qtype))
        if answer is None:
            raise _NeedLookup(name, qtype)
        if answer.failed:
            raise spf.TempError(f"DNS {answer.status} for {name} {qtype}")
        records = _records(answer) if answer.ok else []
        if not records and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return records


async def check_spf(ip: str, sender: str, helo: str, lookup: Lookup, *, receiver: str = "unknown") -> SpfResult:
    """SPF for ``sender`` (MAIL FROM; empty -> postmaster@``helo``, the HELO identity)."""
    answers: dict[tuple[str, str], Answer] = {}
    query = _Query(answers, i=ip, s=sender, h=helo, receiver=receiver, querytime=0)
    domain = query.d or ""
    for _ in range(_MAX_ROUNDS):
        try:
            result, _code, explanation = query.check()
        except _NeedLookup as need:
            answers[need.key] = await lookup(*need.key)
            continue
        except Exception as exc:  # pyspf choking on odd input proves nothing about the sender
            return SpfResult("temperror", domain, f"SPF evaluation failed: {type(exc).__name__}: {exc}", len(answers))
        return SpfResult(str(result), domain, str(explanation or ""), len(answers))
    return SpfResult("permerror", domain, "too many DNS lookups", len(answers))
