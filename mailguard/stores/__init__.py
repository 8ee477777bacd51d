"""Stores for counters and key-value data: ``sqlite`` (embedded default) and ``memory``."""

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
    raise ConfigError(f"[store] backend must be 'sqlite' or 'memory', not {config.backend!r}")
