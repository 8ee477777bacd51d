"""In-process store for unit tests and throwaway runs (evaluation folds)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice

__all__ = ["MemoryStore"]


class MemoryStore:
    """Dict-backed `Store`; ``clock`` is injectable so TTL tests need no sleeping."""

    answers_inline = True  # each call runs to its end before it returns (see `base.together`)

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counters: dict[str, tuple[float, float | None]] = {}
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._sets: dict[str, tuple[set[str], float | None]] = {}
        self._log_heads: dict[str, int] = {}
        self._logs: dict[str, dict[int, bytes]] = {}  # entries in the order appended, i.e. by number

    def _live(self, expires: float | None) -> bool:
        return expires is None or expires > self._clock()

    def _expires(self, ttl: float | None) -> float | None:
        return self._clock() + ttl if ttl is not None else None

    async def incr_many(self, amounts: Mapping[str, float], ttl: float | None = None) -> None:
        expires = self._expires(ttl)
        for key, amount in amounts.items():
            value, old_expires = self._counters.get(key, (0.0, None))
            if not self._live(old_expires):
                value = 0.0
            self._counters[key] = (value + amount, expires)

    async def get_counters(self, keys: Sequence[str]) -> dict[str, float]:
        found = {}
        for key in keys:
            item = self._counters.get(key)
            if item is not None and self._live(item[1]):
                found[key] = item[0]
        return found

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key])).get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.set_many({key: value}, ttl)

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found = {}
        for key in keys:
            item = self._values.get(key)
            if item is not None and self._live(item[1]):
                found[key] = item[0]
        return found

    async def set_many(self, values: Mapping[str, bytes], ttl: float | None = None) -> None:
        expires = self._expires(ttl)
        for key, value in values.items():
            self._values[key] = (bytes(value), expires)

    async def add_members(self, members: Mapping[str, Iterable[str]], ttl: float | None = None) -> None:
        expires = self._expires(ttl)
        for key, new in members.items():
            current, old_expires = self._sets.get(key, (set(), None))
            if not self._live(old_expires):
                current = set()
            self._sets[key] = (current | set(new), expires)

    async def get_members(self, keys: Sequence[str]) -> dict[str, set[str]]:
        found = {}
        for key in keys:
            item = self._sets.get(key)
            if item is not None and item[0] and self._live(item[1]):
                found[key] = set(item[0])
        return found

    async def remove_members(self, members: Mapping[str, Iterable[str]]) -> None:
        for key, gone in members.items():
            item = self._sets.get(key)
            if item is not None:
                item[0].difference_update(gone)

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._counters.pop(key, None)
        self._sets.pop(key, None)

    async def append_log(self, name: str, entry: bytes) -> int:
        number = self._log_heads.get(name, 0) + 1
        self._log_heads[name] = number
        self._logs.setdefault(name, {})[number] = bytes(entry)
        return number

    async def read_log(self, name: str, after: int, limit: int = 1000) -> tuple[int, list[tuple[int, bytes]]]:
        last = self._log_heads.get(name, 0)
        if last <= after:
            return last, []
        newer = ((n, entry) for n, entry in self._logs[name].items() if n > after)
        return last, list(islice(newer, max(limit, 0)))

    async def trim_log(self, name: str, upto: int) -> None:
        entries = self._logs.get(name, {})
        for number in [n for n in entries if n <= upto]:
            del entries[number]

    async def close(self) -> None:
        pass
