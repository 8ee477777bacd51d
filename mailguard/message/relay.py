"""Which machine handed us the message: the connecting client, or the first untrusted hop.

Blocklists and SPF judge the client that connected to *our* border. A milter knows it from
the SMTP session (the envelope). For library and CLI use there is no session, so the
Received chain is read newest first, skipping hops added inside our own trusted networks;
the first hop from outside is the client. Anything older than it could be forged.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Iterable, Sequence

from ..errors import ConfigError
from .context import MessageContext

__all__ = ["DEFAULT_TRUSTED_NETWORKS", "Network", "Relay", "client_relay", "is_trusted", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Loopback, private, shared (CGNAT) and link-local space: never a sender on the internet.
DEFAULT_TRUSTED_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)


@dataclasses.dataclass(frozen=True)
class Relay:
    """The client that handed the message to our border."""

    ip: str
    helo: str | None
    rdns: str | None
    source: str  # "envelope" | "received"


def parse_networks(values: object, where: str) -> tuple[Network, ...]:
    """Validate a config list of CIDR strings (a bare address is a /32 or /128)."""
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where} must be a list of networks like \"10.0.0.0/8\"")
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{where}: {value!r} is not a network: {exc}") from exc
    return tuple(networks)


def normalize_ip(text: str | None) -> str | None:
    """A canonical address string (IPv4-mapped IPv6 becomes IPv4), or None if not an address."""
    if not text:
        return None
    return _normalize_ip(text)


@functools.lru_cache(maxsize=4096)  # the same relays appear in message after message
def _normalize_ip(text: str) -> str | None:
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]").removeprefix("IPv6:").removeprefix("ipv6:"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def is_trusted(ip: str, networks: Iterable[Network]) -> bool:
    if type(networks) is tuple:  # what the scorers pass, the same tuple on every call
        return _trusted_set(networks).trusts(ip)
    addr = ipaddress.ip_address(ip)
    return any(addr.version == net.version and addr in net for net in networks)


class _TrustedSet:
    """One tuple of trusted networks and what is asked of it again and again: its hash (part
    of the key of a per-message view) and the verdict per address. Both are kept because
    hashing the tuple (a Python-level __hash__ per network) costs more than testing an
    address, and every scorer tests the same few relays message after message."""

    __slots__ = ("key", "networks", "verdicts")
    _MAX_VERDICTS = 4096

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self.networks = networks
        self.key = hash(networks)
        self.verdicts: dict[str, bool] = {}

    def trusts(self, ip: str) -> bool:
        verdict = self.verdicts.get(ip)
        if verdict is None:
            addr = ipaddress.ip_address(ip)  # ValueError for a non-address, as ever
            verdict = any(addr.version == net.version and addr in net for net in self.networks)
            if len(self.verdicts) >= self._MAX_VERDICTS:
                self.verdicts.clear()
            self.verdicts[ip] = verdict
        return verdict


_TRUSTED_SETS: dict[int, _TrustedSet] = {}  # by id() of the tuple, which each entry keeps alive


def _trusted_set(networks: tuple[Network, ...]) -> _TrustedSet:
    found = _TRUSTED_SETS.get(id(networks))
    if found is None or found.networks is not networks:
        if len(_TRUSTED_SETS) >= 64:
            _TRUSTED_SETS.clear()
        found = _TRUSTED_SETS[id(networks)] = _TrustedSet(networks)
    return found


def client_relay(ctx: MessageContext, trusted: Sequence[Network]) -> Relay | None:
    """The envelope's client when it is outside ``trusted``; otherwise the newest Received
    hop from outside ``trusted``. None when every hop is trusted (internal mail) or unknown.
    Computed once per message and set of trusted networks (several scorers ask)."""
    networks = tuple(trusted)
    return ctx.cached(f"relay:{_trusted_set(networks).key}", lambda: _client_relay(ctx, networks))


def _client_relay(ctx: MessageContext, trusted: tuple[Network, ...]) -> Relay | None:
    env = ctx.envelope
    ip = normalize_ip(env.client_ip)
    if ip is not None and not is_trusted(ip, trusted):
        return Relay(ip, env.helo, env.client_name, "envelope")
    for hop in ctx.received:
        hop_ip = normalize_ip(hop.ip)
        if hop_ip is None:
            continue  # "by host (Postfix, from userid 1000)": local submission, no client
        if is_trusted(hop_ip, trusted):
            continue
        return Relay(hop_ip, hop.helo, hop.rdns, "received")
    return None
