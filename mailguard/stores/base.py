"""Store protocols: counters with TTL, key-value, sets and append-only logs. Small enough for SQLite and Redis.

Keys are plain strings chosen by the caller (``bayes:tok:<user>:<hash>``). A TTL of None
means no expiry; a write with a TTL renews the expiry of every key it touches (for a set,
the whole set). Every call takes or returns many keys at once, so that a backend across
the network answers it in one round trip.

How scorers await their calls: `together` for calls meant for one round trip, `shared_once`
for the answer the per-recipient scans of one message share. Both run a store whose calls
answer inline (``answers_inline``: SQLite, memory) without a task per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["CounterStore", "KeyValueStore", "LogStore", "SetStore", "Store", "shared_once", "together"]


async def shared_once(
    store: object, shared: MutableMapping[Any, asyncio.Future[Any]], key: Any, make: Callable[[], Awaitable[Any]]
) -> asyncio.Future[Any]:
    """Start ``make()`` as ``shared[key]``, the one answer every waiter shares (the
    per-recipient scans of one message), and return its future for the waiters to await
    through ``asyncio.shield``, so that one waiter's timeout does not cancel the others'
    answer. For a store whose calls wait it runs in a task of its own; for one that answers
    inline (SQLite, memory) it is computed here, with no task and no turn of the event loop,
    and there is nothing in it to cancel."""
    loop = asyncio.get_running_loop()
    if not getattr(store, "answers_inline", False):
        task = shared[key] = loop.create_task(make())  # type: ignore[arg-type]
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "exception not retrieved"
        return task
    future: asyncio.Future[Any] = loop.create_future()
    shared[key] = future  # before the call: a waiter arriving meanwhile shares it
    try:
        future.set_result(await make())
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as exc:  # the waiters get it, as they would from a task
        future.set_exception(exc)
        future.exception()  # retrieved: the waiters raise it themselves
    return future


async def together(store: object, *calls: Awaitable[Any]) -> list[Any]:
    """The answers of store calls meant to share one round trip, in order, failing as
    ``asyncio.gather`` does (every call runs; the first error is raised). Gathered for a store
    that batches the calls of one loop tick (Redis); awaited one after another for a store
    whose calls answer without waiting (``answers_inline``: SQLite, memory), which gives the
    same answers in the same order without a task per call."""
    if not getattr(store, "answers_inline", False):
        return list(await asyncio.gather(*calls))
    answers: list[Any] = []
    error: BaseException | None = None
    for call in calls:
        try:
            answers.append(await call)
        except Exception as exc:
            error = error or exc
            answers.append(None)
    if error is not None:
        raise error
    return answers


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

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Values of the live keys among ``keys``; absent or expired ones are left out."""
        ...

    async def set_many(self, values: Mapping[str, bytes], ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` whatever it holds (value, counter or set)."""
        ...


@runtime_checkable
class SetStore(Protocol):
    async def add_members(self, members: Mapping[str, Iterable[str]], ttl: float | None = None) -> None:
        """Add members to each set (created empty); ``ttl`` renews each touched set's expiry."""
        ...

    async def get_members(self, keys: Sequence[str]) -> dict[str, set[str]]:
        """Members of the live, non-empty sets among ``keys``."""
        ...

    async def remove_members(self, members: Mapping[str, Iterable[str]]) -> None: ...


@runtime_checkable
class LogStore(Protocol):
    """Append-only logs shared by every node (online-learning updates travel through them).

    Each log numbers its entries 1, 2, 3, ... without gaps. Logs have no TTL (old entries are
    trimmed instead) and are apart from the other kinds: ``delete`` leaves them alone.
    """

    async def append_log(self, name: str, entry: bytes) -> int:
        """Append ``entry`` and return its number, assigned atomically so concurrent writers
        (other processes, other nodes) never share or skip one."""
        ...

    async def read_log(self, name: str, after: int, limit: int = 1000) -> tuple[int, list[tuple[int, bytes]]]:
        """``(last, entries)``: the newest number ever assigned (0 for an unwritten log) and the
        kept entries numbered above ``after``, oldest first, at most ``limit``. Cheap when there
        is nothing new, as every scan asks. Trimmed entries are absent: a reader fell behind when
        the first number is not ``after + 1``, or nothing came back although ``last > after``."""
        ...

    async def trim_log(self, name: str, upto: int) -> None:
        """Drop the entries numbered ``upto`` or less, to bound the log's size; numbering goes on."""
        ...


@runtime_checkable
class Store(CounterStore, KeyValueStore, SetStore, LogStore, Protocol):
    async def close(self) -> None: ...
