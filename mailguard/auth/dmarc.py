"""DMARC (RFC 7489): policy discovery, identifier alignment and the result for one message.

Kept apart from the scorer so the decision logic can be tested with plain values: policy
lookup at the From domain then at its organizational domain (public suffix list, via
`mailguard.message.urls.registered_domain`), relaxed/strict alignment of the SPF and DKIM
identities, ``p``/``sp``/``pct``. A DNS failure makes the result ``temperror``, never ``fail``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
from collections.abc import Awaitable, Callable, Sequence

from ..dns import Answer
from ..message.urls import registered_domain

__all__ = [
    "AuthIdentity",
    "Discovery",
    "DmarcError",
    "DmarcPolicy",
    "DmarcResult",
    "aligned",
    "discover_policy",
    "evaluate",
    "from_domains",
    "org_domain",
    "parse_record",
]

Lookup = Callable[[str, str], Awaitable[Answer]]
_POLICIES = ("none", "quarantine", "reject")


def org_domain(domain: str) -> str:
    """The organizational domain: ``mail.sub.example.co.uk`` -> ``example.co.uk``."""
    return registered_domain(domain.lower().rstrip("."))


def aligned(identity: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 3.1: strict needs the same FQDN, relaxed the same organizational domain."""
    a, b = identity.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return org_domain(a) == org_domain(b)


def from_domains(header_values: Sequence[str]) -> list[str]:
    """Distinct domains of the RFC5322.From addresses (DMARC's one authenticated identifier)."""
    domains = []
    for _, addr in email.utils.getaddresses(list(header_values)):
        if "@" in addr:
            domain = addr.rsplit("@", 1)[1].strip().strip(">").lower().rstrip(".")
            if domain and domain not in domains:
                domains.append(domain)
    return domains


@dataclasses.dataclass(frozen=True)
class DmarcPolicy:
    """A parsed ``v=DMARC1`` record and where it was found."""

    domain: str  # the name it was published at (From domain or organizational domain)
    p: str
    sp: str
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"


class DmarcError(ValueError):
    """The record is there but unusable (RFC 7489 6.6.3: no DMARC processing -> permerror)."""


def parse_record(text: str, domain: str) -> DmarcPolicy:
    """Parse one ``v=DMARC1`` record. Unknown tags are ignored (RFC 7489 6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if "=" in part:
            key, value = part.split("=", 1)
            tags.setdefault(key.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1":
        raise DmarcError("not a v=DMARC1 record")
    p = tags.get("p", "").lower()
    if p not in _POLICIES:
        if "rua" in tags:  # 6.6.3: a bad p with a reporting address counts as p=none
            p = "none"
        else:
            raise DmarcError(f"invalid or missing p= ({tags.get('p', '')!r})")
    sp = tags.get("sp", p).lower()
    if sp not in _POLICIES:
        sp = p
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    pct = min(max(pct, 0), 100)
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcPolicy(
        domain=domain,
        p=p,
        sp=sp,
        pct=pct,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
    )


@dataclasses.dataclass(frozen=True)
class Discovery:
    status: str  # "found" | "none" | "temperror" | "permerror"
    policy: DmarcPolicy | None = None
    detail: str = ""


def _dmarc_records(answer: Answer) -> list[str]:
    return [t for t in answer.texts() if t.strip().lower().startswith("v=dmarc1")]


async def discover_policy(from_domain: str, lookup: Lookup) -> Discovery:
    """RFC 7489 6.6.3: ``_dmarc.<From domain>``, else ``_dmarc.<organizational domain>``.
    Both names are asked at once when they differ, so discovery costs one round trip."""
    org = org_domain(from_domain)
    names = [from_domain] if org == from_domain else [from_domain, org]
    answers = await asyncio.gather(*(lookup(f"_dmarc.{name}", "TXT") for name in names))
    for name, answer in zip(names, answers):
        if answer.failed:
            return Discovery("temperror", detail=f"_dmarc.{name}: {answer.status}")
        records = _dmarc_records(answer) if answer.ok else []
        if len(records) == 1:
            try:
                return Discovery("found", parse_record(records[0], name))
            except DmarcError as exc:
                return Discovery("permerror", detail=f"_dmarc.{name}: {exc}")
        if len(records) > 1:  # 6.6.3: several records -> no DMARC processing
            return Discovery("none", detail=f"_dmarc.{name} has {len(records)} DMARC records")
    return Discovery("none", detail=f"no DMARC record for {from_domain}")


@dataclasses.dataclass(frozen=True)
class AuthIdentity:
    """One authenticated (or not) domain: an SPF check's domain or a DKIM signature's d=."""

    domain: str
    result: str  # pass | fail | temperror | ...


@dataclasses.dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    from_domain: str
    policy: str | None = None  # the policy that applies (p or sp), before pct
    disposition: str | None = None  # what the policy asks for this message, after pct: none|quarantine|reject
    spf_aligned: bool = False
    dkim_aligned: bool = False
    detail: str = ""


def _sampled(pct: int, digest: str) -> bool:
    """``pct``: apply the policy to that share of failing mail. Decided by the message's
    digest, not by chance, so scanning the same message twice gives the same verdict."""
    if pct >= 100:
        return True
    return int(hashlib.sha256(digest.encode()).hexdigest()[:8], 16) % 100 < pct


def evaluate(
    from_domain: str,
    discovery: Discovery,
    spf: AuthIdentity | None,
    dkim: Sequence[AuthIdentity],
    *,
    digest: str = "",
) -> DmarcResult:
    """The DMARC result: pass when an SPF or DKIM pass is aligned with the From domain;
    temperror (not fail) when no pass was found but a check that might have passed could not run."""
    if discovery.status != "found" or discovery.policy is None:
        return DmarcResult(discovery.status, from_domain, detail=discovery.detail)
    policy = discovery.policy
    spf_ok = spf is not None and spf.result == "pass" and aligned(spf.domain, from_domain, policy.aspf)
    dkim_ok = any(d.result == "pass" and aligned(d.domain, from_domain, policy.adkim) for d in dkim)
    applied = policy.p if policy.domain == from_domain else policy.sp
    if spf_ok or dkim_ok:
        return DmarcResult("pass", from_domain, applied, "none", spf_ok, dkim_ok, "aligned " + ("SPF" if spf_ok else "DKIM"))
    unsure = (spf is not None and spf.result == "temperror" and aligned(spf.domain, from_domain, policy.aspf)) or any(
        d.result == "temperror" and aligned(d.domain, from_domain, policy.adkim) for d in dkim
    )
    if unsure:
        return DmarcResult("temperror", from_domain, applied, detail="an aligned check could not be completed")
    disposition = applied
    if not _sampled(policy.pct, digest):  # 6.6.4: outside pct, the next milder policy
        disposition = {"reject": "quarantine", "quarantine": "none"}.get(applied, "none")
    return DmarcResult("fail", from_domain, applied, disposition, detail=f"no aligned SPF or DKIM pass (p={applied}, pct={policy.pct})")
