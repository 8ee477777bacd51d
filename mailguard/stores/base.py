"""Store protocols: counters with TTL, and key-value. Kept small so Redis fits them later.

Keys are plain strings chosen by the caller (``bayes:tok:<user>:<hash>``). A TTL of None
means no expiry; counters with a TTL get it renewed on every increment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["CounterStore", "KeyValueStore", "Store"]


@runtime_checkable
class CounterStore(Protocol):
    async def incr_many(self, amounts: Mapping[str, float], ttl: float | None = None) -> None:
        """Add each amount to its counter (created at 0), all at once."""
        ...

    async def get_counters(self, keys: Sequence[str]) -> dict[str, float]:
        """Current values of the live counters among ``keys``; absent or expired ones are left out."""
        ...


@runtime_checkable
class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...


@runtime_checkable
class Store(CounterStore, KeyValueStore, Protocol):
    async def close(self) -> None: ...
