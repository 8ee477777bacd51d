"""Sender authentication: SPF (MAIL FROM and HELO), DKIM, ARC and DMARC, plus the
``Authentication-Results`` header (RFC 8601) saying what was found.

Every check's DNS goes through the shared `Resolver`, and all of them start at once: the
SPF checks, every DKIM and ARC key and the DMARC policy lookup overlap, so a message costs
about the longest chain of dependent lookups, not their sum. Each result is its own symbol
(``SPF_PASS``, ``DKIM_FAIL``, ``DMARC_FAIL_REJECT``...). A timeout or SERVFAIL gives a
``*_TEMPERROR`` symbol of weight 0 and never a fail: failures are evidence of nothing.

Mail forwarded through a trusted ARC sealer (``trusted_arc_sealers``) that saw DMARC pass
before it changed the message is not punished for the DMARC failure that forwarding caused.

Default weights are hand-set on the combiner's log-odds scale (junk at 3.4) after rspamd's:
the 2002 SpamAssassin corpus carries no DNS data to fit them on.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import authres
import authres.arc
import authres.dmarc

from ..auth.dkim import ArcResult, DkimResult, shared_dkim_results, verify_arc
from ..auth.dmarc import AuthIdentity, Discovery, DmarcResult, aligned, discover_policy, evaluate, from_domains
from ..dns import Resolver, offline_resolver
from ..errors import ConfigError
from ..message.context import MessageContext
from ..message.relay import DEFAULT_TRUSTED_NETWORKS, Network, client_relay, normalize_ip, parse_networks
from ..result import Hit
from ..scorer import ScorerInfo, Services, symbol_weights
from ..auth.spf import SpfResult, check_spf

__all__ = ["AuthScorer"]

_SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")

SYMBOLS: dict[str, tuple[str, float]] = {
    **{f"SPF_{r.upper()}": (f"SPF {r} for the MAIL FROM domain", w) for r, w in zip(_SPF_RESULTS, (-0.2, 1.0, 0.3, 0.0, 0.1, 0.0, 0.2))},
    **{f"SPF_HELO_{r.upper()}": (f"SPF {r} for the HELO name", w) for r, w in zip(_SPF_RESULTS, (-0.1, 0.5, 0.1, 0.0, 0.0, 0.0, 0.0))},
    "DKIM_PASS_ALIGNED": ("a valid DKIM signature by the From domain (or its organization)", -0.5),
    "DKIM_PASS": ("a valid DKIM signature by another domain", -0.1),
    "DKIM_FAIL": ("a DKIM signature that does not verify", 1.0),
    "DKIM_NONE": ("no DKIM signature", 0.0),
    "DKIM_TEMPERROR": ("a DKIM key lookup timed out or got SERVFAIL", 0.0),
    "DKIM_PERMERROR": ("a malformed DKIM signature or a missing/bad key", 0.2),
    "ARC_PASS": ("the ARC chain validates", 0.0),
    "ARC_FAIL": ("the ARC chain is broken", 0.5),
    "ARC_NONE": ("no ARC chain", 0.0),
    "ARC_TEMPERROR": ("an ARC key lookup timed out or got SERVFAIL", 0.0),
    "DMARC_PASS": ("DMARC pass: SPF or DKIM aligned with the From domain", -1.0),
    "DMARC_FAIL_REJECT": ("DMARC fail, the domain asks to reject", 2.5),
    "DMARC_FAIL_QUARANTINE": ("DMARC fail, the domain asks to quarantine", 1.5),
    "DMARC_FAIL_NONE": ("DMARC fail, the domain asks for nothing (p=none or outside pct)", 0.2),
    "DMARC_FAIL_ARC_OVERRIDE": ("DMARC fail forgiven: a trusted ARC sealer saw DMARC pass", 0.0),
    "DMARC_NONE": ("no DMARC policy for the From domain", 0.0),
    "DMARC_TEMPERROR": ("DMARC could not be decided: a lookup timed out or got SERVFAIL", 0.0),
    "DMARC_PERMERROR": ("an unusable DMARC record or From header", 0.0),
}

_KEYS = {
    "authserv_id",
    "spf",
    "spf_helo",
    "dkim",
    "arc",
    "dmarc",
    "trusted_arc_sealers",
    "trusted_networks",
    "max_signatures",
    "timeout",
    "weights",
}
_DMARC_PASS = re.compile(r"\bdmarc\s*=\s*pass\b", re.I)
_COMMENT = re.compile(r"\([^()]*\)")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62}\.)+[a-z0-9-]{1,63}$", re.I)


def _domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1].strip().lower().rstrip(".") if "@" in address else ""


class AuthScorer:
    """SPF, DKIM, ARC and DMARC for one message, and the Authentication-Results header."""

    name = "auth"

    def __init__(
        self,
        resolver: Resolver,
        *,
        authserv_id: str | None = None,
        spf: bool = True,
        spf_helo: bool = True,
        dkim: bool = True,
        arc: bool = True,
        dmarc: bool = True,
        trusted_arc_sealers: Sequence[str] = (),
        trusted: Sequence[Network] | None = None,
        max_signatures: int = 10,
        timeout: float = 3.0,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id or socket.gethostname() or "localhost"  # gethostname: no DNS
        self.enabled = {"spf": spf, "spf_helo": spf_helo, "dkim": dkim, "arc": arc, "dmarc": dmarc}
        self.trusted_arc_sealers = tuple(s.lower().rstrip(".") for s in trusted_arc_sealers)
        self.trusted = tuple(trusted) if trusted is not None else parse_networks(list(DEFAULT_TRUSTED_NETWORKS), "auth")
        self.max_signatures = max_signatures
        weights = dict(weights or {})
        self.info = ScorerInfo(
            group="auth",
            symbols={s: d for s, (d, _) in SYMBOLS.items()},
            default_weights={s: float(weights.get(s, w)) for s, (_, w) in SYMBOLS.items()},
            network=True,
            timeout=timeout,
        )
        self._budget = max(timeout - 0.1, timeout * 0.9)  # finish with temperrors before the scanner gives up

    @classmethod
    def from_config(cls, section: Mapping[str, Any], services: Services) -> AuthScorer:
        where = "[scorers.auth]"
        unknown = set(section) - _KEYS
        if unknown:
            raise ConfigError(f"{where} unknown key(s): {', '.join(sorted(unknown))}")
        flags = {}
        for key in ("spf", "spf_helo", "dkim", "arc", "dmarc"):
            value = section.get(key, True)
            if not isinstance(value, bool):
                raise ConfigError(f"{where} {key} must be true or false")
            flags[key] = value
        authserv_id = section.get("authserv_id")
        if authserv_id is not None and (not isinstance(authserv_id, str) or not re.fullmatch(r"[\w.-]{1,253}", authserv_id)):
            raise ConfigError(f"{where} authserv_id must be a host name like mx.example.org")
        sealers = section.get("trusted_arc_sealers", [])
        if not isinstance(sealers, (list, tuple)) or not all(isinstance(s, str) and _HOSTNAME.match(s) for s in sealers):
            raise ConfigError(f"{where} trusted_arc_sealers must be a list of domains")
        trusted = parse_networks(section.get("trusted_networks", list(DEFAULT_TRUSTED_NETWORKS)), f"{where} trusted_networks")
        max_signatures = section.get("max_signatures", 10)
        if isinstance(max_signatures, bool) or not isinstance(max_signatures, int) or max_signatures < 1:
            raise ConfigError(f"{where} max_signatures must be a whole number >= 1")
        timeout = section.get("timeout", 3.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"{where} timeout must be a positive number of seconds")
        weights = symbol_weights(section, SYMBOLS, where)
        resolver = services.resolver if services.resolver is not None else offline_resolver()
        return cls(
            resolver,
            authserv_id=authserv_id,
            trusted_arc_sealers=sealers,
            trusted=trusted,
            max_signatures=max_signatures,
            timeout=float(timeout),
            weights=weights,
            **flags,
        )

    # -- scanning -------------------------------------------------------------------------

    async def score(self, ctx: MessageContext) -> list[Hit]:
        deadline = time.monotonic() + self._budget

        def lookup(name: str, rdtype: str) -> Any:
            return self.resolver.lookup(name, rdtype, timeout=deadline - time.monotonic())

        relay = client_relay(ctx, self.trusted)
        ip = relay.ip if relay else None
        helo = (ctx.envelope.helo or (relay.helo if relay else None) or "").strip().strip("[]").lower()
        # MAIL FROM: "" is the null sender <>; None means unknown (no session, no Return-Path)
        mail_from = ctx.envelope.mail_from
        if mail_from is None:  # no SMTP session: the delivering MTA's Return-Path says it
            return_path = ctx.header_all("return-path")
            mail_from = return_path[0] if return_path else None
        if mail_from is not None:
            mail_from = mail_from.strip().strip("<>").strip()
        helo_is_name = bool(_HOSTNAME.match(helo)) and normalize_ip(helo) is None  # "[192.0.2.1]" is no name
        domains = from_domains(ctx.header_all("from"))

        jobs: dict[str, Any] = {}
        if self.enabled["spf"] and ip and mail_from is not None and (_domain_of(mail_from) or (not mail_from and helo_is_name)):
            jobs["spf"] = check_spf(ip, mail_from, helo or "unknown", lookup, receiver=self.authserv_id)
        if self.enabled["spf_helo"] and ip and helo_is_name and mail_from != "":  # for <> the check above is HELO's
            jobs["spf_helo"] = check_spf(ip, "", helo, lookup, receiver=self.authserv_id)
        if self.enabled["dkim"] or self.enabled["dmarc"]:
            # one verification per message, shared with the reputation scorer (shielded: our
            # timeout must not cancel it for the others)
            jobs["dkim"] = asyncio.shield(shared_dkim_results(ctx, lookup, self.max_signatures))
        if self.enabled["arc"] and (ctx.header("arc-seal") or ctx.header("arc-message-signature")):
            jobs["arc"] = verify_arc(ctx.raw, lookup)
        if self.enabled["dmarc"] and len(domains) == 1:
            jobs["dmarc"] = discover_policy(domains[0], lookup)
        done = dict(zip(jobs, await asyncio.gather(*jobs.values())))

        spf: SpfResult | None = done.get("spf")
        spf_helo: SpfResult | None = done.get("spf_helo")
        dkim_results: list[DkimResult] = done.get("dkim", [])
        arc: ArcResult | None = done.get("arc")
        dmarc = self._dmarc(domains, done.get("dmarc"), spf, dkim_results, ctx.digest)
        override = self._arc_override(arc) if dmarc is not None and dmarc.result == "fail" else None

        hits = self._hits(spf, spf_helo, dkim_results, arc, dmarc, override, domains)
        ctx.add_header("Authentication-Results", self._header(spf, spf_helo, mail_from, helo, dkim_results, arc, dmarc, override))
        return hits

    def _dmarc(
        self,
        domains: list[str],
        discovery: Discovery | None,
        spf: SpfResult | None,
        dkim_results: list[DkimResult],
        digest: str,
    ) -> DmarcResult | None:
        if not self.enabled["dmarc"]:
            return None
        if not domains:
            return DmarcResult("none", "", detail="no From address")
        if len(domains) > 1:
            return DmarcResult("permerror", ",".join(domains), detail="several From domains")
        # RFC 7489 4.1: the SPF identity is MAIL FROM's domain, or HELO's for the null sender
        # (pyspf checks postmaster@HELO then, so ``spf`` already holds it).
        identity = AuthIdentity(spf.domain, spf.result) if spf is not None else None
        signatures = [AuthIdentity(d.domain, d.result) for d in dkim_results]
        if discovery is None:
            return None
        return evaluate(domains[0], discovery, identity, signatures, digest=digest)

    def _arc_override(self, arc: ArcResult | None) -> str | None:
        """The trusted sealer that vouches for DMARC pass, if any: the chain must validate and
        every seal from the newest down to the one reporting ``dmarc=pass`` must be trusted."""
        if arc is None or arc.result != "pass" or not self.trusted_arc_sealers:
            return None
        for arc_set in arc.sets:
            if not any(arc_set.sealer == t or arc_set.sealer.endswith("." + t) for t in self.trusted_arc_sealers):
                return None
            if _DMARC_PASS.search(_COMMENT.sub("", arc_set.aar)):
                return arc_set.sealer
        return None

    def _hits(
        self,
        spf: SpfResult | None,
        spf_helo: SpfResult | None,
        dkim_results: list[DkimResult],
        arc: ArcResult | None,
        dmarc: DmarcResult | None,
        override: str | None,
        domains: list[str],
    ) -> list[Hit]:
        hits: dict[str, list[str]] = {}

        def add(symbol: str, reason: str) -> None:
            hits.setdefault(symbol, []).append(reason)

        if spf is not None:
            add(f"SPF_{spf.result.upper()}", f"{spf.domain}: {spf.explanation}".rstrip(": "))
        if spf_helo is not None:
            add(f"SPF_HELO_{spf_helo.result.upper()}", f"{spf_helo.domain}: {spf_helo.explanation}".rstrip(": "))
        if self.enabled["dkim"]:
            if not dkim_results:
                add("DKIM_NONE", "no DKIM-Signature")
            from_domain = domains[0] if len(domains) == 1 else ""
            for d in dkim_results:
                symbol = f"DKIM_{d.result.upper()}"
                if d.result == "pass" and from_domain and aligned(d.domain, from_domain, "r"):
                    symbol = "DKIM_PASS_ALIGNED"
                add(symbol, f"d={d.domain} s={d.selector}" + (f": {d.detail}" if d.detail else ""))
        if arc is not None:
            add(f"ARC_{arc.result.upper()}", arc.detail or f"{len(arc.sets)} ARC set(s)")
        elif self.enabled["arc"]:
            add("ARC_NONE", "no ARC headers")
        if dmarc is not None:
            if dmarc.result == "fail":
                symbol = "DMARC_FAIL_ARC_OVERRIDE" if override else f"DMARC_FAIL_{(dmarc.disposition or 'none').upper()}"
                reason = f"{dmarc.from_domain}: {dmarc.detail}" + (f"; sealed by trusted {override} after DMARC pass" if override else "")
            else:
                symbol = f"DMARC_{dmarc.result.upper()}"
                reason = f"{dmarc.from_domain}: {dmarc.detail}".strip(": ")
            add(symbol, reason)
        return [Hit(symbol, 1.0, "; ".join(reasons)[:500]) for symbol, reasons in hits.items() if symbol in SYMBOLS]

    def _header(
        self,
        spf: SpfResult | None,
        spf_helo: SpfResult | None,
        mail_from: str | None,
        helo: str,
        dkim_results: list[DkimResult],
        arc: ArcResult | None,
        dmarc: DmarcResult | None,
        override: str | None,
    ) -> str:
        """The Authentication-Results value (RFC 8601), formatted by the authres package."""
        results: list[Any] = []
        if spf is not None:
            results.append(authres.SPFAuthenticationResult(result=spf.result, smtp_mailfrom=mail_from or f"postmaster@{helo}"))
        if spf_helo is not None:
            results.append(authres.SPFAuthenticationResult(result=spf_helo.result, smtp_helo=helo))
        if self.enabled["dkim"]:
            if not dkim_results:
                results.append(authres.DKIMAuthenticationResult(result="none"))
            for d in dkim_results:
                results.append(
                    authres.DKIMAuthenticationResult(
                        result=d.result,
                        result_comment=_clean(d.detail) or None,
                        header_d=d.domain or None,
                        header_s=d.selector or None,
                    )
                )
        if arc is not None:
            oldest = arc.sets[-1] if arc.sets else None
            results.append(
                authres.arc.ARCAuthenticationResult(
                    result=arc.result, header_as_d=oldest.sealer if arc.result == "pass" and oldest else None
                )
            )
        if dmarc is not None and dmarc.from_domain:
            comment = None
            if dmarc.result == "fail":
                comment = f"p={dmarc.policy} dis={(dmarc.disposition or 'none').upper()}"
                if override:
                    comment += f" arc=pass override=trusted_forwarder({override})"
            results.append(
                authres.dmarc.DMARCAuthenticationResult(
                    result=dmarc.result,
                    result_comment=comment,
                    header_from=dmarc.from_domain,
                    policy=dmarc.policy if dmarc.result in ("pass", "fail") else None,
                )
            )
        return authres.AuthenticationResultsHeader(authserv_id=self.authserv_id, results=results).header_value()


def _clean(text: str) -> str:
    """A comment for the header: printable ASCII, no parentheses, short."""
    return re.sub(r"[^\x20-\x7e]|[()\\]", "", text)[:100]
