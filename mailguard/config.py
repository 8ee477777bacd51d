"""Configuration: one TOML file loaded into frozen dataclasses.

Every field has a default, so mailguard starts with no file at all. Per-user data
(thresholds, allow/block lists, feedback) is not configuration: it lives in the store.
Unknown keys are errors, so a typo fails at start-up instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError
from .message.addresses import normalise_aliases
from .message.limits import Limits
from .result import Action
from .thresholds import LEVELS

__all__ = [
    "Config",
    "DnsConfig",
    "Limits",
    "MilterConfig",
    "ModelConfig",
    "PolicyConfig",
    "ScannerConfig",
    "StoreConfig",
    "UsersConfig",
    "default_model_dir",
    "load_config",
    "validate_policy_config",
]

PACKAGE_ROOT = Path(__file__).resolve().parent


def default_model_dir() -> Path:
    """The shipped model: ``$MAILGUARD_MODEL``, else ``models/default`` beside the package."""
    env = os.environ.get("MAILGUARD_MODEL")
    return Path(env) if env else PACKAGE_ROOT.parent / "models" / "default"


def default_store_path() -> Path:
    """The embedded SQLite store: ``$MAILGUARD_STORE``, else under the XDG state directory."""
    env = os.environ.get("MAILGUARD_STORE")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mailguard" / "store.sqlite3"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoreConfig:
    backend: str = "sqlite"  # sqlite | redis | memory
    path: Path = dataclasses.field(default_factory=default_store_path)  # sqlite: the database file
    url: str = ""  # redis (required): redis://127.0.0.1:6379/0, rediss://..., unix:///run/redis.sock
    prefix: str = "mg:"  # redis: prepended to every key, so several products can share one Redis
    timeout: float = 1.0  # redis: connect and socket timeout in seconds
    cluster: bool = False  # redis: a Redis Cluster, reached through the node in url (or url = "redis+cluster://...")
    wait_replicas: int = 0  # redis: a write is acknowledged once this many replicas have it (WAIT); 0: once the master has it


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    path: Path = dataclasses.field(default_factory=default_model_dir)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScannerConfig:
    # the local scorers the shipped model was trained with; add dnsbl, auth, virus as the site has them
    scorers: tuple[str, ...] = ("bayes", "reputation", "fingerprint", "behaviour", "feedback")
    deadline: float = 10.0  # seconds for the whole scan; scorers still running are failures
    network: bool = True  # False turns every scorer flagged ``network`` off
    # Autolearn: learn only when the score WITHOUT learning scorers is this far out.
    autolearn_spam: float = 12.0
    autolearn_ham: float = -4.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    level: str = "medium"  # default thresholds for users without their own
    # Explicit numbers override the level: {"tag": 2.0, "junk": 5.0, ...}; None disables an action.
    thresholds: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    subject_tag: str = ""  # e.g. "[SPAM] " prepended to the subject of tagged mail; empty: untouched
    # What a scorer's failure forces; scorers not named fail open. A virus scanner that
    # cannot answer tempfails by default: the MTA retries, nothing is lost or let through.
    on_failure: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({"virus": "tempfail"}))
    # Symbols that force an action whatever the score: an infected message is rejected.
    forced: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({"VIRUS_FOUND": "reject"}))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DnsConfig:
    """The one resolver every network scorer shares (see mailguard/dns.py)."""

    nameservers: tuple[str, ...] = ()  # IP addresses; empty: the system's (/etc/resolv.conf)
    port: int = 53
    timeout: float = 2.0  # seconds for one try at one server
    lifetime: float = 3.0  # seconds for a whole lookup, retries included
    cache_size: int = 10000  # answers kept (LRU, each for its TTL); 0 turns the cache off


@dataclasses.dataclass(frozen=True, kw_only=True)
class MilterConfig:
    """The Postfix milter daemon (``mailguard milter``, see mailguard/milter/daemon.py)."""

    socket: str = "inet:8895@127.0.0.1"  # libmilter form: inet:PORT@HOST or unix:/path
    socket_mode: str = "0660"  # unix socket permissions (octal): the MTA must be able to write to it
    socket_group: str = ""  # unix socket group, e.g. "postfix"; empty: the daemon's own group
    max_body_bytes: int = 8 * 1024 * 1024  # body kept for scanning; past it the rest is noted, not read
    deadline: float = 20.0  # seconds from end of message to a reply; past it: on_error
    on_error: str = "tempfail"  # tempfail | accept: the reply when a scan fails or misses the deadline
    drain_timeout: float = 30.0  # SIGTERM waits this long for connections in flight
    workers: int = 0  # scanner processes; 0: one per core (1: scans run in the daemon's own process)
    metrics_port: int = 0  # Prometheus exporter on 127.0.0.1:PORT; 0 turns it off
    log_file: str = ""  # one JSON line per message; empty: stderr


@dataclasses.dataclass(frozen=True, kw_only=True)
class UsersConfig:
    """Whose per-user data a recipient's address is (mailguard/message/addresses.py), and user reports.

    Aliases and sub-address tags are resolved before any per-user key is made, so one
    mailbox keeps one model whatever address mail reaches it by. The table is validated
    and put into canonical form when the section is built: an error names the alias.
    """

    # "info@shop.example" = "alice@shop.example"; "@old.example" = "@new.example" (a domain alias)
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    plus_separators: str = "+"  # bob+tag@ -> bob@; "+-" for both; "" keeps tags
    report_retention_days: float = 180.0  # reported messages kept for retraining (`mailguard report`)
    report_max_bytes: int = 2 * 1024 * 1024  # of one reported message kept; the rest is cut off
    report_max_messages: int = 100_000  # messages read from one report input (mbox, Maildir, folder)
    # Reports move that user's thresholds (all together; see Policy.thresholds_for): a spam
    # report on mail that got through (accept, tag) lowers them by threshold_step, a ham report
    # on mail junked or worse raises them by threshold_fp_step; the total shift stays within
    # [-threshold_max_down, +threshold_max_up], and never carries a threshold past
    # [threshold_floor, threshold_ceiling].
    threshold_moves: bool = True
    threshold_step: float = 0.25
    threshold_fp_step: float = 0.5  # false positives cost more than missed spam
    threshold_max_down: float = 1.5
    threshold_max_up: float = 1.0
    threshold_floor: float = 1.0  # log-odds 1.0: 73% spam
    threshold_ceiling: float = 10.0
    # A reported message is learned globally once this many distinct users report it the same
    # way and at most this share of its reporters say the opposite (0: never; else at least 2).
    global_after: int = 3
    global_max_dissent: float = 0.2

    def __post_init__(self) -> None:
        try:
            table = normalise_aliases(self.aliases, plus_separators=self.plus_separators)
        except ValueError as exc:
            raise ConfigError(f"[users] {exc}") from None
        object.__setattr__(self, "aliases", MappingProxyType(table))
        if self.report_retention_days <= 0 or self.report_max_bytes <= 0 or self.report_max_messages <= 0:
            raise ConfigError("[users] report_retention_days, report_max_bytes and report_max_messages must be positive")
        self._check_feedback()

    def _check_feedback(self) -> None:
        """Threshold moves and global learning from reports: refuse values that would let one
        user move the global model or push thresholds outside what the site allows."""
        import math

        if not isinstance(self.threshold_moves, bool):
            raise ConfigError("[users] threshold_moves must be true or false")
        names = (
            "threshold_step", "threshold_fp_step", "threshold_max_down", "threshold_max_up",
            "threshold_floor", "threshold_ceiling", "global_max_dissent",
        )
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"[users] {name} must be a number >= 0")
        if self.threshold_floor >= self.threshold_ceiling:
            raise ConfigError("[users] threshold_floor must be below threshold_ceiling")
        after = self.global_after
        if isinstance(after, bool) or not isinstance(after, int) or after < 0 or after == 1:
            raise ConfigError("[users] global_after must be 0 (never learn reports globally) or a whole number >= 2")
        if self.global_max_dissent >= 0.5:
            raise ConfigError("[users] global_max_dissent must be below 0.5 (the reporters must agree by a majority)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    limits: Limits = dataclasses.field(default_factory=Limits)
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    scanner: ScannerConfig = dataclasses.field(default_factory=ScannerConfig)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    dns: DnsConfig = dataclasses.field(default_factory=DnsConfig)
    milter: MilterConfig = dataclasses.field(default_factory=MilterConfig)
    users: UsersConfig = dataclasses.field(default_factory=UsersConfig)
    # Per-scorer sections, validated by each scorer's ``from_config`` at start-up.
    scorers: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _build(cls: type, section: Mapping[str, Any], where: str) -> Any:
    if not isinstance(section, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in section.items():
        default = getattr(cls(), name)
        values[name] = _coerce(value, default, f"{where}.{name}")
    return cls(**values)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number")
        if isinstance(default, int) and not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number")
        if value < 0 and not where.startswith("scanner.autolearn"):
            raise ConfigError(f"{where} must not be negative")
        return type(default)(value)
    if isinstance(default, Path):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a path string")
        return Path(value).expanduser()
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        return value
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table")
        return MappingProxyType(dict(value))
    return value


def config_from_mapping(data: Mapping[str, Any]) -> Config:
    """Build a validated `Config` from parsed TOML (or any mapping of the same shape)."""
    sections = {
        "limits": Limits,
        "store": StoreConfig,
        "model": ModelConfig,
        "scanner": ScannerConfig,
        "policy": PolicyConfig,
        "dns": DnsConfig,
        "milter": MilterConfig,
        "users": UsersConfig,
    }
    unknown = sorted(set(data) - set(sections) - {"scorers"})
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(unknown)}")
    values: dict[str, Any] = {
        name: _build(cls, data[name], name) for name, cls in sections.items() if name in data
    }
    scorers = data.get("scorers", {})
    if not isinstance(scorers, Mapping) or not all(isinstance(v, Mapping) for v in scorers.values()):
        raise ConfigError("[scorers.NAME] sections must be tables")
    values["scorers"] = MappingProxyType({k: MappingProxyType(dict(v)) for k, v in scorers.items()})
    config = Config(**values)
    validate_policy_config(config.policy)
    _validate_store(config.store)
    _validate_dns(config.dns)
    _validate_milter(config.milter)
    return config


def validate_policy_config(config: PolicyConfig) -> None:
    """[policy]: a known level, thresholds that apply to it, and actions each setting allows."""
    if config.level not in LEVELS:
        raise ConfigError(f"[policy] level must be one of {', '.join(LEVELS)}, not {config.level!r}")
    LEVELS[config.level].with_overrides(config.thresholds)
    for scorer, action in config.on_failure.items():
        if action not in (Action.TEMPFAIL, Action.ACCEPT):
            raise ConfigError(f"[policy] on_failure.{scorer} must be 'tempfail' or 'accept'")
    for symbol, action in config.forced.items():
        if action not in set(Action) - {Action.TEMPFAIL}:
            raise ConfigError(f"[policy] forced.{symbol} must be one of accept, tag, junk, quarantine, reject")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``path`` (or ``$MAILGUARD_CONFIG``); with neither, return the defaults."""
    path = path or os.environ.get("MAILGUARD_CONFIG")
    if not path:
        return Config()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
    return config_from_mapping(data)


def _validate_store(store: StoreConfig) -> None:
    """[store]: the cluster keys only where they mean something (a Redis Cluster speaks TCP)."""
    if store.backend != "redis" and (store.cluster or store.wait_replicas):
        raise ConfigError(f"[store] cluster and wait_replicas apply to backend = \"redis\", not {store.backend!r}")
    if (store.cluster or "+cluster://" in store.url) and not store.url.startswith(
        ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
    ):
        raise ConfigError("[store] a Redis Cluster is reached over TCP: url = \"redis://HOST:PORT\" or \"redis+cluster://HOST:PORT\"")


def _validate_dns(dns: DnsConfig) -> None:
    import ipaddress

    for server in dns.nameservers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise ConfigError(f"dns.nameservers: {server!r} is not an IP address") from None
    if not 0 < dns.port < 65536:
        raise ConfigError("dns.port must be 1..65535")
    if dns.timeout <= 0 or dns.lifetime <= 0:
        raise ConfigError("dns.timeout and dns.lifetime must be positive")
    if dns.lifetime < dns.timeout:
        raise ConfigError("dns.lifetime (whole lookup) must not be shorter than dns.timeout (one try)")


def _validate_milter(milter: MilterConfig) -> None:
    kind, _, rest = milter.socket.partition(":")
    if kind in ("unix", "local"):
        if not rest.startswith("/"):
            raise ConfigError("milter.socket: unix:/absolute/path expected")
    elif kind in ("inet", "inet6"):
        port, _, host = rest.partition("@")
        if not port.isdigit() or not 0 < int(port) < 65536 or not host:
            raise ConfigError("milter.socket: inet:PORT@HOST expected, e.g. inet:8895@127.0.0.1")
    else:
        raise ConfigError(f"milter.socket must start with unix:, local:, inet: or inet6:, not {milter.socket!r}")
    if milter.on_error not in ("tempfail", "accept"):
        raise ConfigError("milter.on_error must be 'tempfail' or 'accept'")
    try:
        mode = int(milter.socket_mode, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"milter.socket_mode must be octal permissions like '0660', not {milter.socket_mode!r}")
    if milter.deadline <= 0 or milter.max_body_bytes <= 0:
        raise ConfigError("milter.deadline and milter.max_body_bytes must be positive")
    if milter.workers > 1024:
        raise ConfigError("milter.workers must be 0 (one per core) or 1..1024")
    if not 0 <= milter.metrics_port < 65536:
        raise ConfigError("milter.metrics_port must be 0 (off) or 1..65535")
