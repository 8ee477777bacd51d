"""Stores for counters, key-value data and sets: ``sqlite`` (embedded default), ``redis``
(shared by many nodes, needs ``mailguard[redis]``) and ``memory`` (tests, throwaway runs).

`RedisStore` is not imported here: redis-py is an optional dependency, loaded only when the
configuration asks for it (``from mailguard.stores.redis import RedisStore`` to use it directly).
"""

from __future__ import annotations

from ..config import StoreConfig
from ..errors import ConfigError
from .base import CounterStore, KeyValueStore, Store
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["CounterStore", "KeyValueStore", "MemoryStore", "SqliteStore", "Store", "open_store"]


def open_store(config: StoreConfig) -> Store:
    """The store the configuration names."""
    if config.backend == "sqlite":
        return SqliteStore(config.path)
    if config.backend == "memory":
        return MemoryStore()
    if config.backend == "redis":
        if not config.url:
            raise ConfigError('[store] backend "redis" needs a url, e.g. url = "redis://127.0.0.1:6379/0"')
        try:
            from .redis import RedisStore
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] != "redis":
                raise
            raise ConfigError("[store] backend \"redis\" needs redis-py: pip install 'mailguard[redis]'") from exc
        return RedisStore(
            config.url, prefix=config.prefix, timeout=config.timeout, cluster=config.cluster,
            wait_replicas=config.wait_replicas,
        )
    raise ConfigError(f"[store] backend must be 'sqlite', 'redis' or 'memory', not {config.backend!r}")
