"""The shared store (``mailguard[redis]``): one Redis, or one Redis Cluster, that every filter node reads and writes.

Why coalescing: the scanner runs its scorers concurrently and each asks the store for
something. Calls are queued, and a callback scheduled with ``loop.call_soon`` sends the whole
queue as ONE pipeline (transaction=False) as soon as a loop iteration passes without new
calls joining (a few iterations at most),
so a scan costs a few round trips however many scorers ask. ``round_trips`` counts the
pipelines sent, for tests and benchmarks.

Key layout (``prefix`` defaults to ``mg:`` so several products can share one Redis)::

    counters    <prefix>c:<key>             string   INCRBYFLOAT, GET
    key-value   <prefix>v:<key>             string   SET [PX], GET
    sets        <prefix>s:<key>             set      SADD, SREM, SMEMBERS
    logs        <prefix>l:{<name>}:head     string   last number given        } Lua scripts
                <prefix>l:{<name>}:entries  hash     number -> entry          } (EVAL), one
                <prefix>l:{<name>}:trimmed  string   numbers up to it trimmed } per call

The kinds get separate sub-prefixes because the protocol keeps them apart (a counter and a
value may share a name). A write with a TTL gives each key it touches a new expiry (SET PX,
or PEXPIRE after INCRBYFLOAT and SADD); one without leaves the key with none (SET, PERSIST),
as SqliteStore does. Redis deletes expired and emptied keys, so an expired counter or set
restarts from empty. Logs never expire: they are trimmed.

Reads of many keys are MGETs of up to 512 keys: a scan asks for a few hundred token counts
once the store has learned, and one GET per key cost 10 ms per scan in redis-py (measured).
Redis Cluster (``cluster=True``, or a ``redis+cluster://`` / ``rediss+cluster://`` URL naming
one node to discover the rest from): a write to a counter, value or set touches one key; MGETs
and the log scripts are the only multi-key commands. Each MGET is split by slot here (no
caller depends on keys sharing a slot), and each command goes to the master of its slot,
named as its target so redis-py need not parse keys again. A batch is still one pipeline:
redis-py sends each node its share at once, so a scan costs the same round trips as on one
server, each fanned out to at most every master. ``node_round_trips`` and
``slot_round_trips`` count, per node and per slot, the pipelines that carried commands for it
(as routed at send time; a MOVED redirect while slots migrate costs a hidden round trip more).
Callers that want related keys on one slot put a hash tag in their names
(``bayes:{alice}:tok``); the prefix may not hold braces, so the caller's first ``{...}`` is
the one Redis hashes. A log's scripts touch its three keys at once, so they share one slot:
a log name with a tag of its own is used as it is (``<prefix>l:bayes:{alice}:updates:head``),
any other is wrapped in braces as above (which makes ``x`` and ``{x}`` one log).

Durability: Redis acknowledges a write once the master has it, and replicates afterwards; a
master that dies in between takes the write with it, and its replica takes over without it.
With ``wait_replicas=N`` every pipeline that writes ends, per master it wrote to, with
``WAIT N`` on the same connection, and a write is acknowledged to its caller only once N
replicas have it (otherwise the caller gets a `StoreError`: the write may or may not
survive a failover). The cluster client never retries a pipeline by itself (a retried WAIT
could go to another node than the writes it vouches for, and the counters would miss the
attempt): a node that failed has redis-py refresh the slot map (at most once a second) before
a later pipeline, so after a failover each client's pipelines fail until its map is new.

A pool's sockets belong to the event loop that opened them, so a store serves one loop
(the scanner's runner, the milter's loop); a call from another loop is a `StoreError`.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..errors import ConfigError, StoreError

__all__ = ["RedisStore"]

_MAX_PIPELINE = 10_000  # commands per pipeline: bounds the buffers of one huge call
_MGET_KEYS = 512  # keys per MGET
_SETTLE_ITERATIONS = 10  # loop iterations a queued call may wait for others to join its pipeline
_QUIET_ITERATIONS = 2  # ... and how many of them must pass with no new call before it is sent

Command = tuple[Any, ...]

# Logs. KEYS: head, entries, trimmed. Each script is atomic, so numbers are given once, in order.
_LOG_APPEND = """
local n = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], n, ARGV[1])
return n
"""
# ARGV: after, limit. Returns {last, n1, entry1, n2, entry2, ...}; starts past the trimmed mark,
# so a reader that fell behind still gets the oldest kept entries.
_LOG_READ = """
local last = tonumber(redis.call('GET', KEYS[1]) or 0)
local from = math.max(0, tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[3]) or 0)) + 1
local out = {last}
for n = from, math.min(last, from + tonumber(ARGV[2]) - 1) do
  local entry = redis.call('HGET', KEYS[2], n)
  if entry then
    out[#out + 1] = n
    out[#out + 1] = entry
  end
end
return out
"""
# ARGV: upto. Deletes from the trimmed mark on (not from 1), 1000 numbers per HDEL, and never
# past the head (numbers not yet given are not trimmed in advance).
_LOG_TRIM = """
local upto = math.min(tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[1]) or 0))
local done = tonumber(redis.call('GET', KEYS[3]) or 0)
for start = done + 1, upto, 1000 do
  local numbers = {}
  for n = start, math.min(start + 999, upto) do
    numbers[#numbers + 1] = n
  end
  redis.call('HDEL', KEYS[2], unpack(numbers))
end
if upto > done then
  redis.call('SET', KEYS[3], upto)
end
return 0
"""


class RedisStore:
    """`Store` on a Redis server or cluster; see the module docstring for the layout and batching."""

    def __init__(
        self, url: str, *, prefix: str = "mg:", timeout: float = 1.0, cluster: bool = False, wait_replicas: int = 0
    ) -> None:
        self.where = _redact(url)
        if not url:
            raise ConfigError("the redis store needs a url, e.g. redis://127.0.0.1:6379/0")
        if "{" in prefix or "}" in prefix:
            raise ConfigError(f"store.prefix {prefix!r} must not hold braces: they would override callers' hash tags")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError("store.timeout must be a positive number of seconds")
        if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int) or wait_replicas < 0:
            raise ConfigError("store.wait_replicas must be a whole number >= 0")
        scheme, plus, rest = url.partition("+cluster://")
        if plus and scheme in ("redis", "rediss"):
            url, cluster = f"{scheme}://{rest}", True
        self.url, self.prefix, self.timeout = url, prefix, timeout
        self.cluster, self.wait_replicas = cluster, wait_replicas
        self.round_trips = 0  # pipelines sent (a cluster's reaches its nodes at once)
        self.node_round_trips: Counter[str] = Counter()  # "host:port" -> pipelines that reached it
        self.slot_round_trips: Counter[int] = Counter()  # cluster slot -> pipelines that carried commands for it
        self._client: Any = self._make_cluster_client() if cluster else self._make_client()  # connects on first use
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[list[Command], asyncio.Future[list[Any]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def _make_client(self) -> aioredis.Redis:
        # One immediate retry on a fresh connection covers a socket that went stale when
        # Redis restarted; timeouts are not retried (the pipeline may have run, and the
        # wait would double). A Redis that is down fails at once instead of backing off.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        try:
            return aioredis.from_url(
                # no timeout per reply (a timeout context per reply cost more than parsing it):
                # each pipeline has one deadline instead, see _execute
                self.url, socket_timeout=None, socket_connect_timeout=self.timeout, retry=retry,
                encoding_errors="surrogatepass",  # keys and members decoded with surrogateescape still round-trip
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"store.url {self.where!r} is not a Redis URL: {exc}") from exc

    def _make_cluster_client(self) -> RedisCluster:
        """The cluster client; redis-py >= 6 takes its pipeline retries from ``retry`` (none here)."""
        if urlsplit(self.url).scheme not in ("redis", "rediss"):
            raise ConfigError(f"store.url {self.where!r}: a Redis Cluster is reached over TCP (redis:// or rediss://)")
        try:
            return RedisCluster.from_url(
                # no retries inside redis-py (module docstring); a failed node asks for a slot map refresh
                self.url, socket_timeout=None, socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 0),
                encoding_errors="surrogatepass",
            )
        except (ValueError, TypeError, RedisError) as exc:
            raise ConfigError(f"store.url {self.where!r} is not a Redis Cluster URL: {exc}") from exc

    # -- batching -----------------------------------------------------------------------

    async def _run(self, commands: list[Command]) -> list[Any]:
        """Queue ``commands`` for the next pipeline and return their replies."""
        if self._closed:
            raise StoreError(f"Redis store {self.where} is closed")
        if not commands:
            return []
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:  # a pool's sockets belong to the loop that opened them
            raise StoreError(
                f"Redis store {self.where} is bound to the event loop it first ran in; make every call "
                "from that one loop (as Scanner.scan_sync and the milter do), not one asyncio.run per call"
            )
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush, 0, 0, 0)
        self._queue.append((commands, future))
        return await future

    def _flush(self, seen: int = 0, quiet: int = _QUIET_ITERATIONS, waited: int = _SETTLE_ITERATIONS) -> None:
        """Send the queue once it stopped growing for ``_QUIET_ITERATIONS`` loop iterations.
        Scorers reach the store through tasks and gathers of their own, a few iterations
        after the scan starts; waiting for the queue to settle (never more than
        ``_SETTLE_ITERATIONS``) lets them share one round trip. Called bare, it sends now."""
        grew = len(self._queue) != seen
        quiet = 0 if grew else quiet + 1
        if quiet < _QUIET_ITERATIONS and waited < _SETTLE_ITERATIONS and self._loop is not None:
            self._loop.call_soon(self._flush, len(self._queue), quiet, waited + 1)
            return
        batch, self._queue = self._queue, []
        if batch and self._loop is not None:
            task = self._loop.create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[tuple[list[Command], asyncio.Future[list[Any]]]]) -> None:
        commands = [command for call, _ in batch for command in call]
        replies: list[Any] = []
        try:
            for start in range(0, len(commands), _MAX_PIPELINE):
                chunk = commands[start : start + _MAX_PIPELINE]
                replies += await (self._send_to_cluster(chunk) if self.cluster else self._send_to_server(chunk))
        except Exception as exc:  # redis errors, and anything odd: every caller must get an answer
            for _, future in batch:
                if not future.done():
                    future.set_exception(self._error(exc))
            return
        except BaseException:  # cancelled while talking to Redis (the loop is shutting down)
            for _, future in batch:
                future.cancel()
            raise
        start = 0
        for call, future in batch:
            mine, start = replies[start : start + len(call)], start + len(call)
            failed = next((r for r in mine if isinstance(r, Exception)), None)
            if future.done():  # its caller was cancelled (a scorer past its timeout)
                continue
            if failed is not None:  # e.g. WRONGTYPE: only this caller fails
                future.set_exception(self._error(failed))
            else:
                future.set_result(mine)

    async def _send_to_server(self, commands: list[Command]) -> list[Any]:
        """One pipeline to the one server, ending with WAIT when it writes and durability is asked for."""
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        waits = self.wait_replicas > 0 and any(_writes(command) for command in commands)
        if waits:
            pipe.execute_command("WAIT", self.wait_replicas, self._wait_ms())
        self.round_trips += 1
        self.node_round_trips[self.where] += 1
        replies = await self._send(pipe)
        if waits:
            self._unless_replicated(commands, range(len(commands)), replies, replies.pop(), self.where)
        return replies

    async def _send_to_cluster(self, commands: list[Command]) -> list[Any]:
        """One pipeline: each command to the master of its key's slot, which redis-py sends as
        one request per master, all at once; per master that got writes, WAIT after them."""
        client: RedisCluster = self._client
        await client.initialize()  # the slot map: at first use, or refreshed after a node failed
        pipe = client.pipeline(transaction=False)
        routed: dict[str, tuple[Any, list[int]]] = {}  # node name -> (node, indexes of its commands)
        slots: set[int] = set()
        for i, command in enumerate(commands):
            slot = key_slot(_key_of(command).encode("utf-8", "surrogatepass"))
            node = client.nodes_manager.get_node_from_slot(slot)
            pipe.execute_command(*command, target_nodes=node)
            routed.setdefault(node.name, (node, []))[1].append(i)
            slots.add(slot)
        waiting = []
        if self.wait_replicas > 0:
            for name, (node, mine) in routed.items():
                if any(_writes(commands[i]) for i in mine):
                    pipe.execute_command("WAIT", self.wait_replicas, self._wait_ms(), target_nodes=node)
                    waiting.append(name)
        self.round_trips += 1
        self.node_round_trips.update(routed.keys())
        self.slot_round_trips.update(slots)
        replies = await self._send(pipe)
        for name, acked in zip(waiting, replies[len(commands) :]):
            self._unless_replicated(commands, routed[name][1], replies, acked, name)
        return replies[: len(commands)]

    def _wait_ms(self) -> int:
        """WAIT's own timeout: half the pipeline's deadline, so a missing replica is reported as
        such and not as a store that stopped answering."""
        return max(1, int(self.timeout * 500))

    def _unless_replicated(self, commands: list[Command], indexes: Iterable[int], replies: list[Any], acked: Any, where: str) -> None:
        """Turn the replies of the writes among ``indexes`` into errors when WAIT answered that
        fewer than ``wait_replicas`` replicas have them: their callers must not count on them."""
        if isinstance(acked, int) and acked >= self.wait_replicas:
            return
        seen = acked if isinstance(acked, Exception) else f"{acked} of {self.wait_replicas} replica(s)"
        error = StoreError(
            f"{where}: write not acknowledged by {self.wait_replicas} replica(s) within {self._wait_ms()} ms "
            f"(WAIT: {seen}); it may be lost if the master fails"
        )
        for i in indexes:
            if _writes(commands[i]) and not isinstance(replies[i], Exception):
                replies[i] = error

    async def _send(self, pipe: Any) -> list[Any]:
        """One pipeline's replies within its deadline: ``timeout`` for each started 1,000
        commands, so a scan's few dozen get ``timeout`` and a bulk load is not cut short.
        (redis-py drops a connection interrupted mid-reply, so the next call starts clean.)"""
        deadline = self.timeout * (1 + len(pipe) // 1000)
        try:
            async with asyncio.timeout(deadline):
                return list(await pipe.execute(raise_on_error=False))
        except TimeoutError as exc:
            raise TimeoutError(f"no answer within {deadline:g} s") from exc

    def _error(self, exc: BaseException) -> StoreError:
        error = StoreError(f"Redis store {self.where}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    # -- the Store protocol -------------------------------------------------------------

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    async def _mget(self, names: Sequence[str]) -> list[Any]:
        """The values of ``names`` in order (None where missing), in as few MGETs as the limit
        allows; on a cluster, one or more per slot (an MGET may not cross slots)."""
        groups: list[list[int]] = [list(range(len(names)))]
        if self.cluster:
            by_slot: dict[int, list[int]] = {}
            for i, name in enumerate(names):
                by_slot.setdefault(key_slot(name.encode("utf-8", "surrogatepass")), []).append(i)
            groups = list(by_slot.values())
        chunks = [group[i : i + _MGET_KEYS] for group in groups for i in range(0, len(group), _MGET_KEYS)]
        replies = await self._run([("MGET", *(names[i] for i in chunk)) for chunk in chunks])
        values: list[Any] = [None] * len(names)
        for chunk, reply in zip(chunks, replies):
            for i, value in zip(chunk, reply):
                values[i] = value
        return values

    async def incr_many(self, amounts: Mapping[str, float], ttl: float | None = None) -> None:
        commands: list[Command] = []
        for key, amount in amounts.items():
            name = self._key("c", key)
            commands += [("INCRBYFLOAT", name, float(amount)), _expiry(name, ttl)]
        await self._run(commands)

    async def get_counters(self, keys: Sequence[str]) -> dict[str, float]:
        replies = await self._mget([self._key("c", key) for key in keys])
        try:
            return {key: float(value) for key, value in zip(keys, replies) if value is not None}
        except ValueError as exc:
            raise StoreError(f"Redis store {self.where}: a counter under {self.prefix}c: is not a number") from exc

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key])).get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.set_many({key: value}, ttl)

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        replies = await self._mget([self._key("v", key) for key in keys])
        return {key: bytes(value) for key, value in zip(keys, replies) if value is not None}

    async def set_many(self, values: Mapping[str, bytes], ttl: float | None = None) -> None:
        ms = None if ttl is None else _millis(ttl)
        commands: list[Command] = []
        for key, value in values.items():
            name = self._key("v", key)
            if ms is None:
                commands.append(("SET", name, bytes(value)))
            else:  # SET PX refuses 0: an already expired value is simply gone
                commands.append(("SET", name, bytes(value), "PX", ms) if ms > 0 else ("DEL", name))
        await self._run(commands)

    async def add_members(self, members: Mapping[str, Iterable[str]], ttl: float | None = None) -> None:
        commands: list[Command] = []
        for key, new in members.items():
            name, added = self._key("s", key), [str(m) for m in new]
            if added:
                commands += [("SADD", name, *added), _expiry(name, ttl)]
        await self._run(commands)

    async def get_members(self, keys: Sequence[str]) -> dict[str, set[str]]:
        replies = await self._run([("SMEMBERS", self._key("s", key)) for key in keys])
        return {
            key: {m.decode("utf-8", "surrogatepass") for m in found} for key, found in zip(keys, replies) if found
        }

    async def remove_members(self, members: Mapping[str, Iterable[str]]) -> None:
        commands: list[Command] = []
        for key, gone in members.items():
            removed = [str(m) for m in gone]
            if removed:
                commands.append(("SREM", self._key("s", key), *removed))
        await self._run(commands)

    async def delete(self, key: str) -> None:
        await self._run([("DEL", self._key(kind, key)) for kind in "cvs"])

    def _log_keys(self, name: str) -> tuple[str, str, str]:
        """The head, entries and trimmed keys of log ``name``, on one hash slot (module docstring)."""
        base = self._key("l", name if _has_hash_tag(name) else f"{{{name}}}")
        return f"{base}:head", f"{base}:entries", f"{base}:trimmed"

    async def append_log(self, name: str, entry: bytes) -> int:
        (number,) = await self._run([("EVAL", _LOG_APPEND, 3, *self._log_keys(name), bytes(entry))])
        return int(number)

    async def read_log(self, name: str, after: int, limit: int = 1000) -> tuple[int, list[tuple[int, bytes]]]:
        ((last, *flat),) = await self._run([("EVAL", _LOG_READ, 3, *self._log_keys(name), int(after), int(limit))])
        return int(last), [(int(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def trim_log(self, name: str, upto: int) -> None:
        await self._run([("EVAL", _LOG_TRIM, 3, *self._log_keys(name), int(upto))])

    async def close(self) -> None:
        """Let the batches in flight answer, then close the connection pool."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            return  # its sockets and batches belong to the other loop, which alone can close them
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._client.aclose()
        except Exception:  # nothing is lost by a close that fails (Redis already gone)
            pass


def _millis(ttl: float) -> int:
    """Redis expiries are whole milliseconds; round up so a short TTL never means 'now'."""
    if not math.isfinite(ttl):
        raise StoreError(f"TTL must be a finite number of seconds, not {ttl!r}")
    return math.ceil(ttl * 1000)


def _expiry(name: str, ttl: float | None) -> Command:
    """A write with a TTL renews the key's expiry (PEXPIRE <= 0 deletes it); without one it never expires."""
    return ("PERSIST", name) if ttl is None else ("PEXPIRE", name, _millis(ttl))


_READS = frozenset({"GET", "MGET", "SMEMBERS"})


def _writes(command: Command) -> bool:
    """Whether ``command`` changes data (every command here but the reads and the log read script)."""
    return command[0] not in _READS and not (command[0] == "EVAL" and command[1] is _LOG_READ)


def _key_of(command: Command) -> str:
    """The key a command is routed by: the first (EVAL: the first of KEYS; all share a slot)."""
    return str(command[3] if command[0] == "EVAL" else command[1])


def _has_hash_tag(name: str) -> bool:
    """Whether Redis Cluster would hash ``name`` by a tag: a ``{`` with a later ``}`` and something between."""
    start = name.find("{")
    return start >= 0 and name.find("}", start + 1) > start + 1


def _redact(url: str) -> str:
    """``url`` without password or query (which may carry one), for error messages."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{parts.username or ''}:***@{host}" if parts.password is not None else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparsable url>"
