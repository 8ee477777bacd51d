"""In-process store for unit tests and throwaway runs (evaluation folds)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["MemoryStore"]


class MemoryStore:
    """Dict-backed `Store`; ``clock`` is injectable so TTL tests need no sleeping."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counters: dict[str, tuple[float, float | None]] = {}
        self._values: dict[str, tuple[bytes, float | None]] = {}

    def _live(self, expires: float | None) -> bool:
        return expires is None or expires > self._clock()

    async def incr_many(self, amounts: Mapping[str, float], ttl: float | None = None) -> None:
        expires = self._clock() + ttl if ttl is not None else None
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
        item = self._values.get(key)
        return item[0] if item is not None and self._live(item[1]) else None

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._values[key] = (bytes(value), self._clock() + ttl if ttl is not None else None)

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._counters.pop(key, None)

    async def close(self) -> None:
        pass
