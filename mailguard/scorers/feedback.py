"""Per-user allow and block lists of senders: a user's own word about who writes to them.

Store layout (``<user>`` is the canonical recipient, the braces a Redis Cluster hash tag)::

    fb:{<user>}:allow            set      "addr:<address>" and "dom:<domain>" entries
    fb:{<user>}:block            set      the same
    fb:{<user>}:n:<s|h>:<hash>   counter  the user's spam (s) / ham (h) reports of one sender

The lists are the user's data, like their thresholds: no expiry, but at most
``max_entries`` per list. A full list refuses new entries (the CLI says so; a report
that would add one is logged and skipped): entries carry no age, so there is no "oldest"
to evict, and a user's explicit entries must not silently disappear. With several nodes
writing at the same instant the bound can be passed by one entry per writer.

Senders: the From address (when the header holds exactly one) and the envelope sender
(MAIL FROM, else the Return-Path header; a BATV bounce tag and a ``+tag`` are dropped, so a
list's VERP bounce addresses are one sender). Both are compared in canonical form
(`mailguard.message.addresses.canonical_address`: lower case, IDNA domain, ``+tag`` dropped).

Matching: an address entry matches that address; a domain entry ``@example.com`` matches
the domain and its subdomains (``mail.example.com``), but never across a registered-domain
boundary: the candidates of ``a.b.example.co.uk`` stop at ``example.co.uk``, so an entry
for a public suffix (``@co.uk``) matches no one else's mail. The most specific matching
entry wins (an address beats any domain, a longer domain a shorter one); on a tie, block.
``score`` makes one store read (both sets at once); no user, no hits.

Forgery: anyone can write a From or MAIL FROM, so a block entry is always honoured (forging
a blocked sender only hurts the forger) but an allow entry only when the message does not
refute it. With a DNS resolver (and only when an allow entry matched, so it costs nothing
otherwise) the matched sender's domain is checked: a passing DKIM signature of its
organizational domain (the verification shared with the auth and reputation scorers)
honours it; a failing one refutes it; unsigned mail from a domain whose DMARC policy is
quarantine or reject refutes it too (SPF alignment is not considered, so such a domain's
mail that passes DMARC by SPF alone loses its allow entry: it is then scored normally).
Unsigned mail from a domain without such a policy is honoured, unless ``strict_allow`` asks
for a passing DKIM signature. Without a resolver (``--no-network``) nothing can be checked:
allow entries are honoured as they stand (``strict_allow`` then honours none), which a
forger who knows the user's list can exploit; that is the limitation of running offline.

Growth from reports: ``learn(ctx, label, user, source="report")`` counts the report against
the message's sender (From, else the envelope sender) for that user. After ``block_after``
spam reports (default 2) the address goes on the block list, after ``allow_after`` ham
reports (default 1) on the allow list. A report also takes the sender's address off the
opposite list at once and resets the opposite count: the user's latest word wins. Domain
entries are only made by hand (``mailguard user allow ADDR @domain``). Other sources
(training, autolearn) and global learning (no user) teach this scorer nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from ..message.addresses import canonical_address, canonical_domain
from ..auth.dkim import DkimResult, shared_dkim_results
from ..auth.dmarc import Discovery, discover_policy, org_domain
from ..dns import Answer, Resolver
from ..errors import ConfigError
from ..message.context import MessageContext
from ..policy import canonical_user
from ..result import Hit
from ..scorer import Label, ScorerInfo, Services, Source, symbol_weights
from ..stores.base import Store
from ..message.urls import registered_domain

__all__ = [
    "KINDS",
    "FeedbackLists",
    "FeedbackScorer",
    "ListFull",
    "Sender",
    "dkim_verdict",
    "dmarc_verdict",
    "format_entry",
    "message_senders",
    "parse_entry",
]

log = logging.getLogger(__name__)

KINDS = ("allow", "block")
SYMBOLS: dict[str, tuple[str, float]] = {
    "USER_ALLOW": ("the sender is on the recipient's allow list", -8.0),
    "USER_BLOCK": ("the sender is on the recipient's block list", 8.0),
}
_KEYS = {"block_after", "allow_after", "max_entries", "count_ttl_days", "strict_allow", "timeout", "weights"}
_WHERE = "[scorers.feedback]"
_DAY = 86400.0
_MAX_HEADER_CHARS = 2000  # of a From or Return-Path value; longer is no sender we can list
_BATV = re.compile(r"^(?:prvs|msprvs1|btv1)=[^=@]{1,64}=", re.I)  # per-message bounce tag
_ADDRESS_RANK = 1000  # an address entry beats any domain entry (a domain has at most 127 labels)

AuthVerdict = Literal["pass", "fail", "none"]
AuthCheck = Callable[[MessageContext, str], Awaitable[AuthVerdict]]


class ListFull(ValueError):
    """A list already holds ``max_entries`` entries; remove some first."""


# -- entries ------------------------------------------------------------------------------


def parse_entry(text: str) -> str:
    """An address (``alice@example.com``) or a domain (``@example.com``) as a list member
    (``addr:...``, ``dom:...``), canonical; ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError("an entry must be an address or @domain")
    text = text.strip()
    if text.startswith("@"):
        return "dom:" + canonical_domain(text[1:])
    if "@" not in text:
        raise ValueError(f"{text[:100]!r} is neither an address nor @domain")
    return "addr:" + canonical_address(text)


def format_entry(member: str) -> str:
    """A list member as people write it: ``alice@example.com`` or ``@example.com``."""
    kind, _, value = member.partition(":")
    return "@" + value if kind == "dom" else value


def _list_key(user: str, kind: str) -> str:
    return f"fb:{{{user}}}:{kind}"


def _count_key(user: str, label: Label, address: str) -> str:
    digest = hashlib.blake2b(address.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
    return f"fb:{{{user}}}:n:{label[0]}:{digest}"


class FeedbackLists:
    """The allow and block lists kept in one store, for the scorer and for ``mailguard user``.
    ``user`` is expected canonical (`mailguard.policy.canonical_user`)."""

    def __init__(self, store: Store, *, max_entries: int = 1000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.store = store
        self.max_entries = max_entries

    async def get(self, user: str) -> dict[str, set[str]]:
        """Both lists of ``user`` in one read: {"allow": members, "block": members}."""
        keys = {kind: _list_key(user, kind) for kind in KINDS}
        found = await self.store.get_members(list(keys.values()))
        return {kind: found.get(key, set()) for kind, key in keys.items()}

    async def add(self, user: str, kind: str, member: str) -> bool:
        """Put ``member`` (from `parse_entry`) on ``kind`` and take it off the other list.
        False if it was there already; ListFull if the list is full."""
        other = _other(kind)
        lists = await self.get(user)
        if member in lists[other]:
            await self.store.remove_members({_list_key(user, other): [member]})
        if member in lists[kind]:
            return False
        if len(lists[kind]) >= self.max_entries:
            raise ListFull(f"the {kind} list of {user} is full ({self.max_entries} entries): remove some first")
        await self.store.add_members({_list_key(user, kind): [member]})
        return True

    async def remove(self, user: str, kind: str, member: str) -> bool:
        """Take ``member`` off ``kind``; False if it was not on it."""
        _other(kind)
        key = _list_key(user, kind)
        present = member in (await self.store.get_members([key])).get(key, set())
        if present:
            await self.store.remove_members({key: [member]})
        return present


def _other(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"list must be one of {', '.join(KINDS)}, not {kind!r}")
    return "block" if kind == "allow" else "allow"


# -- senders ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sender:
    """One sender identity of a message, canonical."""

    address: str
    where: str  # "From" or "envelope sender"

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    def members(self) -> list[tuple[str, int]]:
        """The list members that would match this sender, with their specificity: the address,
        then the domain and its parents down to the registered domain (module docstring)."""
        found = [("addr:" + self.address, _ADDRESS_RANK)]
        domain = self.domain
        if domain.startswith("["):  # an address literal: only itself
            return found + [("dom:" + domain, 1)]
        stop = registered_domain(domain)
        labels = domain.split(".")
        for start in range(len(labels)):
            candidate = ".".join(labels[start:])
            found.append(("dom:" + candidate, len(labels) - start))
            if candidate == stop or not candidate.endswith("." + stop):
                break
        return found


def _canonical(text: str) -> str | None:
    try:
        return canonical_address(text)
    except ValueError:
        return None


def _from_sender(ctx: MessageContext) -> Sender | None:
    values = [v for v in ctx.header_all("from") if len(v) <= _MAX_HEADER_CHARS]
    try:
        addresses = [a for _, a in email.utils.getaddresses(values) if a]
    except (TypeError, ValueError, IndexError):
        return None
    if len(addresses) != 1:
        return None  # no From, or several: no one sender to look up
    address = _canonical(addresses[0])
    return Sender(address, "From") if address else None


def _envelope_sender(ctx: MessageContext) -> Sender | None:
    mail_from = ctx.envelope.mail_from
    if mail_from is None:
        paths = ctx.header_all("return-path")
        mail_from = paths[0] if paths else None
    if not mail_from or len(mail_from) > _MAX_HEADER_CHARS:
        return None  # unknown, or the null sender <>
    try:
        text = email.utils.parseaddr(mail_from)[1]
    except (TypeError, ValueError, IndexError):
        return None
    address = _canonical(_BATV.sub("", text.strip())) if "@" in text else None
    return Sender(address, "envelope sender") if address else None


def message_senders(ctx: MessageContext) -> list[Sender]:
    """The From and the envelope sender (in that order, once each); computed once per message."""

    def build() -> list[Sender]:
        found: list[Sender] = []
        for sender in (_from_sender(ctx), _envelope_sender(ctx)):
            if sender is not None and all(s.address != sender.address for s in found):
                found.append(sender)
        return found

    return ctx.cached("feedback.senders", build)


@dataclasses.dataclass(frozen=True)
class _Match:
    sender: Sender
    member: str
    rank: int


def _best(members: set[str], senders: Sequence[Sender]) -> _Match | None:
    best: _Match | None = None
    if not members:
        return None
    for sender in senders:
        for member, rank in sender.members():
            if member in members and (best is None or rank > best.rank):
                best = _Match(sender, member, rank)
    return best


# -- authentication of an allowed sender -----------------------------------------------------


def dkim_verdict(results: Sequence[DkimResult], domain: str) -> AuthVerdict:
    """"pass" if a signature of ``domain``'s organizational domain verifies, "fail" if one
    is there but none verifies, else "none"."""
    org = org_domain(domain)
    mine = [r for r in results if r.domain and org_domain(r.domain) == org]
    if any(r.result == "pass" for r in mine):
        return "pass"
    if any(r.result in ("fail", "permerror") for r in mine):
        return "fail"
    return "none"


def dmarc_verdict(discovery: Discovery, domain: str) -> AuthVerdict:
    """"fail" when ``domain`` asks receivers to quarantine or reject mail it did not
    authenticate (here: mail without its DKIM signature), else "none"."""
    policy = discovery.policy
    if discovery.status != "found" or policy is None:
        return "none"
    applies = policy.p if policy.domain == domain.lower().rstrip(".") else policy.sp
    return "fail" if applies in ("quarantine", "reject") else "none"


def _resolver_check(resolver: Resolver, budget: float) -> AuthCheck:
    """DKIM through the per-message verification shared with the other scorers, then, for an
    unsigned sender, the DMARC policy (one TXT round trip, cached by the resolver)."""

    async def check(ctx: MessageContext, domain: str) -> AuthVerdict:
        deadline = time.monotonic() + budget

        def left() -> float:
            return max(0.05, deadline - time.monotonic())

        def lookup(name: str, rdtype: str) -> Awaitable[Answer]:
            return resolver.lookup(name, rdtype, timeout=left())

        try:
            results = await asyncio.wait_for(asyncio.shield(shared_dkim_results(ctx, lookup)), left())
        except asyncio.CancelledError:
            raise
        except Exception:  # a DKIM failure or timeout proves nothing either way
            results = []
        verdict = dkim_verdict(results, domain)
        if verdict != "none":
            return verdict
        try:
            return dmarc_verdict(await asyncio.wait_for(discover_policy(domain, lookup), left()), domain)
        except asyncio.CancelledError:
            raise
        except Exception:
            return "none"

    return check


# -- the scorer ---------------------------------------------------------------------------


class FeedbackScorer:
    """Allow and block lists per user; one store read per scan."""

    name = "feedback"

    def __init__(
        self,
        store: Store,
        *,
        block_after: int = 2,
        allow_after: int = 1,
        max_entries: int = 1000,
        count_ttl_days: float = 180.0,
        strict_allow: bool = False,
        auth_check: AuthCheck | None = None,
        timeout: float = 3.0,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.store = store
        self.lists = FeedbackLists(store, max_entries=max_entries)
        self.block_after = block_after
        self.allow_after = allow_after
        self.count_ttl = count_ttl_days * _DAY
        self.strict_allow = strict_allow
        self.auth_check = auth_check
        weights = dict(weights or {})
        self.info = ScorerInfo(
            group="feedback",
            symbols={s: d for s, (d, _) in SYMBOLS.items()},
            default_weights={s: float(weights.get(s, w)) for s, (_, w) in SYMBOLS.items()},
            learns=True,
            seeded=False,
            timeout=timeout,
        )

    @classmethod
    def from_config(cls, section: Mapping[str, Any], services: Services) -> FeedbackScorer:
        unknown = set(section) - _KEYS
        if unknown:
            raise ConfigError(f"{_WHERE} unknown key(s): {', '.join(sorted(unknown))}")

        def whole(key: str, default: int, low: int, high: int) -> int:
            value = section.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{_WHERE} {key} must be a whole number from {low} to {high}")
            return value

        def positive(key: str, default: float) -> float:
            value = section.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{_WHERE} {key} must be a positive number")
            return float(value)

        strict = section.get("strict_allow", False)
        if not isinstance(strict, bool):
            raise ConfigError(f"{_WHERE} strict_allow must be true or false")
        weights = symbol_weights(section, SYMBOLS, _WHERE)
        timeout = positive("timeout", 3.0)
        check = _resolver_check(services.resolver, max(timeout - 0.5, timeout * 0.6)) if services.resolver is not None else None
        return cls(
            services.store,
            block_after=whole("block_after", 2, 1, 1000),
            allow_after=whole("allow_after", 1, 1, 1000),
            max_entries=whole("max_entries", 1000, 1, 100_000),
            count_ttl_days=positive("count_ttl_days", 180.0),
            strict_allow=strict,
            auth_check=check,
            timeout=timeout,
            weights=weights,
        )

    async def score(self, ctx: MessageContext) -> list[Hit]:
        if not ctx.user:
            return []
        senders = message_senders(ctx)
        if not senders:
            return []
        user = canonical_user(ctx.user)
        lists = await self.lists.get(user)
        allowed, blocked = _best(lists["allow"], senders), _best(lists["block"], senders)
        if blocked is not None and (allowed is None or blocked.rank >= allowed.rank):
            return [_hit("USER_BLOCK", blocked, "block")]
        if allowed is None:
            return []
        verdict = await self._check(ctx, allowed.sender.domain)
        if verdict == "pass" or (verdict == "none" and not self.strict_allow):
            return [_hit("USER_ALLOW", allowed, "allow", verdict)]
        # refuted (or unproven under strict_allow): the allow entry does not count
        return [_hit("USER_BLOCK", blocked, "block")] if blocked is not None else []

    async def _check(self, ctx: MessageContext, domain: str) -> AuthVerdict:
        if self.auth_check is None:
            return "none"
        return await self.auth_check(ctx, domain)

    async def learn(self, ctx: MessageContext, label: Label, user: str | None = None, *, source: Source = "report") -> None:
        """Count a user's report against the message's sender; list it once the count is
        reached (module docstring). Everything else is ignored."""
        if user is None or source != "report" or label not in ("spam", "ham"):
            return
        senders = message_senders(ctx)
        if not senders:
            return
        address = senders[0].address  # the From the user saw, else the envelope sender
        user = canonical_user(user)
        member = "addr:" + address
        kind, needed = ("block", self.block_after) if label == "spam" else ("allow", self.allow_after)
        key = _count_key(user, label, address)
        await self.store.incr_many({key: 1.0}, ttl=self.count_ttl)
        count = (await self.store.get_counters([key])).get(key, 0.0)
        await self.store.delete(_count_key(user, "ham" if label == "spam" else "spam", address))
        if count < needed:
            await self.store.remove_members({_list_key(user, _other(kind)): [member]})
            return
        try:
            await self.lists.add(user, kind, member)
        except ListFull as exc:
            log.warning("not listing %s: %s", address, exc)


def _hit(symbol: str, match: _Match, kind: str, verdict: AuthVerdict | None = None) -> Hit:
    entry = format_entry(match.member)
    how = {"pass": "; DKIM-authenticated", "none": "; not authenticated"}.get(verdict or "", "")
    return Hit(symbol, 1.0, f"{match.sender.where} {match.sender.address[:200]} matches {kind} entry {entry[:200]}{how}")
