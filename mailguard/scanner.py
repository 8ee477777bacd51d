"""`Scanner.scan`: the one place a message becomes a verdict, for every entry point.

pre (parse lazily) -> scorers concurrently, each under its timeout, all under the scan
deadline -> combiner -> policy -> learn phase (optional; it cannot change the verdict).
A scorer that raises or times out is recorded as a failure and the scan goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from .message.addresses import canonical_address
from .combine import Combiner, ScorerHits, sigmoid
from .config import Config, load_config
from .dns import Resolver
from .errors import MailguardError, ModelError
from .message.context import Envelope, MessageContext
from .model import ModelBundle, load_model
from .policy import Policy, canonical_user
from .reports.queue import ReportOutcome, ReportQueue
from .result import Action, Hit, ScanResult, ScorerFailure
from .scorer import Label, Scorer, Services, Source, load_scorer
from .stores import Store, open_store

__all__ = ["Scanner"]

log = logging.getLogger("mailguard.scanner")

_LEARNED_TTL = 90 * 86400.0  # how long a learned message's digest is remembered


class Scanner:
    """Holds the configured scorers, combiner, policy and store; scans messages.

    Use ``await scanner.scan(raw)`` from asyncio code, or ``scanner.scan_sync(raw)``.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        store: Store | None = None,
        model: ModelBundle | None = None,
        scorers: Sequence[Scorer] | None = None,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or load_config()
        self.store = store if store is not None else open_store(self.config.store)
        needs_model = scorers is None and "bayes" in self.config.scanner.scorers
        if model is None and (needs_model or scorers is None):
            try:
                model = load_model(self.config.model.path)
            except ModelError:
                if needs_model:
                    raise
        self.model = model
        self.combiner = model.combiner if model is not None else Combiner()
        # One DNS client (cache, counters) shared by every network scorer; none without network.
        if resolver is None and self.config.scanner.network:
            resolver = Resolver.from_config(self.config.dns)
        self.resolver = resolver
        self.clock = clock
        services = Services(self.config, self.store, model, resolver, clock)
        if scorers is None:
            scorers = [
                load_scorer(name, self.config.scorers.get(name, {}), services) for name in self.config.scanner.scorers
            ]
        if not self.config.scanner.network:
            scorers = [s for s in scorers if not s.info.network]
        self.scorers: list[Scorer] = list(scorers)
        self.policy = Policy(self.config.policy, self.store, self.config.users)
        self._loop: asyncio.AbstractEventLoop | None = None  # the sync facade's own (`_run`)

    # -- scanning -------------------------------------------------------------------------

    def context(self, raw: bytes, envelope: Envelope | None = None, user: str | None = None) -> MessageContext:
        return MessageContext(raw, envelope, limits=self.config.limits, user=user)

    async def scan(
        self,
        message: bytes | MessageContext,
        envelope: Envelope | None = None,
        *,
        user: str | None = None,
        learn: bool = False,
    ) -> ScanResult:
        """Score ``message`` for ``user`` (default: the only envelope recipient, if one)."""
        started = time.perf_counter()
        ctx = message if isinstance(message, MessageContext) else self.context(message, envelope)
        if user is None:
            user = ctx.user or (ctx.envelope.rcpt_to[0] if len(ctx.envelope.rcpt_to) == 1 else None)
        if user is not None:  # one key per mailbox, whatever alias or +tag the mail came by
            user = canonical_user(user, self.config.users)
        if user != ctx.user:
            ctx = ctx.for_user(user)
        # the user's thresholds are read while the scorers run (one store round trip fewer);
        # mail for no one in particular takes the default, with no task to read it
        thresholds_read = asyncio.ensure_future(self.policy.thresholds_for(user)) if user else None
        try:
            scorer_hits, failures = await self._run_scorers(ctx)
        finally:
            thresholds = await thresholds_read if thresholds_read is not None else self.policy.default
        score, contributions = self.combiner.combine(scorer_hits)
        probability = sigmoid(score)
        verdict = self.policy.decide(
            score=score,
            probability=probability,
            thresholds=thresholds,
            user=user,
            contributions=contributions,
            failures=failures,
            subject=ctx.subject,
            extra_headers=ctx.added_headers,
        )
        learned = await self._learn_phase(ctx, scorer_hits, failures) if learn else None
        return ScanResult(
            score=score,
            probability=probability,
            contributions=tuple(contributions),
            failures=tuple(failures),
            problems=tuple(ctx.problems),
            elapsed=time.perf_counter() - started,
            verdict=verdict,
            learned=learned,
        )

    async def _run_one(self, scorer: Scorer, ctx: MessageContext) -> list[Hit]:
        hits = await scorer.score(ctx)
        if not isinstance(hits, list) or not all(isinstance(h, Hit) for h in hits):
            raise TypeError(f"{scorer.name}.score() must return a list of Hit")
        return hits

    async def _run_scorers(self, ctx: MessageContext) -> tuple[list[ScorerHits], list[ScorerFailure]]:
        """Every scorer at once, each cancelled at its own timeout, all at the scan deadline.
        One timer at a time, not one per scorer: a wait lasts until the nearest timeout of a
        scorer still running, so a scan whose scorers all answer at once (the local ones) arms
        one timer instead of one per scorer plus the deadline's (1.8% of a scan's CPU)."""
        tasks = {asyncio.ensure_future(self._run_one(s, ctx)): s for s in self.scorers}
        if not tasks:
            return [], []
        loop = asyncio.get_running_loop()
        started, deadline = loop.time(), self.config.scanner.deadline
        pending: set[asyncio.Future[list[Hit]]] = set(tasks)
        timed_out: set[asyncio.Future[list[Hit]]] = set()
        while pending:
            elapsed = loop.time() - started
            if elapsed >= deadline:
                break
            due = min(deadline, *(tasks[task].info.timeout for task in pending))
            _, pending = await asyncio.wait(pending, timeout=max(0.0, due - elapsed))
            elapsed = loop.time() - started
            for task in [task for task in pending if tasks[task].info.timeout <= elapsed]:
                task.cancel()
                timed_out.add(task)
                pending.discard(task)
        for task in pending:
            task.cancel()
        scorer_hits: list[ScorerHits] = []
        failures: list[ScorerFailure] = []
        for task, scorer in tasks.items():
            if task in pending:
                failures.append(ScorerFailure(scorer.name, "timeout", f"still running at the {deadline}s scan deadline"))
                continue
            exc = TimeoutError() if task in timed_out else task.exception()
            if exc is None:
                scorer_hits.append((scorer.name, scorer.info, task.result()))
            elif isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                failures.append(ScorerFailure(scorer.name, "timeout", f"no answer within {scorer.info.timeout}s"))
            else:
                log.warning("scorer %s failed: %s: %s", scorer.name, type(exc).__name__, exc)
                failures.append(ScorerFailure(scorer.name, "error", f"{type(exc).__name__}: {exc}"))
        if pending or timed_out:
            await asyncio.gather(*pending, *timed_out, return_exceptions=True)
        return scorer_hits, failures

    async def _learn_phase(self, ctx: MessageContext, scorer_hits: list[ScorerHits], failures: list[ScorerFailure]) -> str | None:
        """Autolearn from the score WITHOUT the learning scorers, so a classifier never trains
        on its own opinion; each message is learned once (by digest), and never on failures."""
        if failures:
            return None
        independent, _ = self.combiner.combine(scorer_hits, skip_learning=True)
        label: Label
        if independent >= self.config.scanner.autolearn_spam:
            label = "spam"
        elif independent <= self.config.scanner.autolearn_ham:
            label = "ham"
        else:
            return None
        return label if await self.learn(ctx, label, source="autolearn") else None

    async def learn(
        self, message: bytes | MessageContext, label: Label, *, user: str | None = None, source: Source = "report"
    ) -> bool:
        """Teach every learning scorer that ``message`` is ``label`` (globally, or for ``user``),
        saying where the label comes from. Returns False when this message was already learned
        the same way."""
        ctx = message if isinstance(message, MessageContext) else self.context(message)
        key = f"learned:{user or '*'}:{ctx.digest}"
        try:
            if await self.store.get(key) == label.encode():
                return False
            for scorer in self.scorers:
                if scorer.info.learns and hasattr(scorer, "learn"):
                    await scorer.learn(ctx, label, user, source=source)  # type: ignore[attr-defined]
            await self.store.set(key, label.encode(), ttl=_LEARNED_TTL)
        except MailguardError as exc:
            log.warning("learning %s as %s failed: %s", ctx.digest[:12], label, exc)
            return False
        return True

    async def report(self, message: bytes, label: Label, *, user: str, source: str = "api") -> ReportOutcome:
        """A person says ``message`` is ``label``: queue the report (deduplicated per message
        and user, see mailguard/reports/queue.py) and, when it is new or reverses that user's
        earlier report:

        1. re-scan it for that user to see the verdict they got, and move their thresholds
           (`Policy.move_thresholds`): spam that was accepted or only tagged is a missed spam,
           ham that was junked, quarantined or rejected a false positive;
        2. learn it for that user at once, so the next scan on any node sharing the store
           sees it;
        3. learn it globally, once, when at least ``[users] global_after`` distinct users
           report it the same way and at most ``global_max_dissent`` of its reporters say the
           opposite: one user alone never moves the global model.

        ``user`` is canonicalised ([users] aliases, +tags); ValueError if it is not an address.
        A reversed report cannot take back what the first label taught the scorers (they do
        not un-learn)."""
        users = self.config.users
        canonical = canonical_address(user, aliases=users.aliases, plus_separators=users.plus_separators)
        queue = ReportQueue.from_config(self.store, users, clock=self.clock)
        outcome = await queue.add(message, canonical, label, source)
        if not outcome.changed:
            return outcome
        ctx = self.context(message)  # parsed once for the re-scan and both learns
        ctx.arriving = False  # it was counted (rates, bulk recipients) when it arrived
        await self._move_thresholds(ctx, label, canonical)
        learned = await self.learn(ctx, label, user=canonical, source="report")
        learned_globally = await self._learn_agreed(queue, ctx, outcome)
        return dataclasses.replace(outcome, learned=learned, learned_globally=learned_globally)

    async def _move_thresholds(self, ctx: MessageContext, label: Label, user: str) -> None:
        """Move ``user``'s thresholds by what the report says about the verdict they got
        (the message re-scanned now, before its report is learned)."""
        try:
            action = (await self.scan(ctx, user=user)).verdict.action
            if label == "spam" and action in (Action.ACCEPT, Action.TAG):
                await self.policy.move_thresholds(user, "missed_spam")
            elif label == "ham" and action in (Action.JUNK, Action.QUARANTINE, Action.REJECT):
                await self.policy.move_thresholds(user, "false_positive")
        except MailguardError as exc:
            log.warning("moving the thresholds of %s failed: %s", user, exc)

    async def _learn_agreed(self, queue: ReportQueue, ctx: MessageContext, outcome: ReportOutcome) -> bool:
        """Learn the report globally once enough distinct users agree (see `report`). Once per
        report digest and label, whichever copy of the message each user reported."""
        users = self.config.users
        if users.global_after <= 0:
            return False
        label = outcome.report.label
        try:
            tally = await queue.tally(outcome.digest)
            agree, dissent = tally[label], tally["ham" if label == "spam" else "spam"]
            if agree < users.global_after or dissent > users.global_max_dissent * (agree + dissent):
                return False
            marker = f"learned:*:report:{outcome.digest}"
            if await self.store.get(marker) == label.encode():
                return False
            learned = await self.learn(ctx, label, user=None, source="report")
            if learned:  # else already learned this way (as this very copy), or it failed: ask again next time
                await self.store.set(marker, label.encode(), ttl=_LEARNED_TTL)
        except MailguardError as exc:
            log.warning("learning report %s globally failed: %s", outcome.digest[:12], exc)
            return False
        return learned

    def report_sync(self, message: bytes, label: Label, **kw: Any) -> ReportOutcome:
        return self._run(self.report(message, label, **kw))

    # -- health ---------------------------------------------------------------------------

    async def health(self) -> dict[str, tuple[bool, str]]:
        """Cheap checks of every dependency: the store (write and read back), the model,
        and each scorer that has ``async health() -> str`` (clamd's PING/VERSION, DNS...)."""
        report: dict[str, tuple[bool, str]] = {}
        try:
            await self.store.set("health:probe", b"ok", ttl=60)
            ok = await self.store.get("health:probe") == b"ok"
            report["store"] = (ok, type(self.store).__name__ + ("" if ok else ": wrote a value and read back another"))
        except MailguardError as exc:
            report["store"] = (False, str(exc))
        report["model"] = (self.model is not None, f"version {self.model.version}" if self.model else "no model loaded")
        if self.resolver is not None and any(s.info.network for s in self.scorers):
            # Any real answer (NXDOMAIN included) proves the resolver works; .invalid never exists.
            answer = await self.resolver.lookup("mailguard-health-check.invalid", "A")
            servers = ", ".join(self.resolver.nameservers or ("system resolver",))
            report["dns"] = (not answer.failed, f"{answer.status} from {servers} ({answer.detail or 'answered'})")
        for scorer in self.scorers:
            check = getattr(scorer, "health", None)
            if check is None:
                report[f"scorer {scorer.name}"] = (True, "loaded (no health check)")
                continue
            try:
                report[f"scorer {scorer.name}"] = (True, str(await asyncio.wait_for(check(), timeout=scorer.info.timeout)))
            except Exception as exc:  # a health check reports, it never raises
                report[f"scorer {scorer.name}"] = (False, f"{type(exc).__name__}: {exc}")
        return report

    def health_sync(self) -> dict[str, tuple[bool, str]]:
        return self._run(self.health())

    # -- sync facade ----------------------------------------------------------------------

    def _run(self, coro: Any) -> Any:
        """Run ``coro`` on this scanner's private event loop. Not `asyncio.Runner`: its SIGINT
        handling (signal handlers swapped and a task described on every call) cost 28 us a
        call, about 1% of a scan; Ctrl-C in a sync caller raises KeyboardInterrupt as it
        does in any other sync code."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def scan_sync(self, message: bytes | MessageContext, envelope: Envelope | None = None, **kw: Any) -> ScanResult:
        """`scan` for code without an event loop (uses one private loop for all calls)."""
        return self._run(self.scan(message, envelope, **kw))

    def learn_sync(self, message: bytes | MessageContext, label: Label, **kw: Any) -> bool:
        return self._run(self.learn(message, label, **kw))

    async def aclose(self) -> None:
        await self.store.close()

    def close(self) -> None:
        if self._loop is None:
            asyncio.run(self.aclose())
            return
        loop, self._loop = self._loop, None
        try:  # what asyncio.run does on its way out: nothing left running, then the loop closed
            loop.run_until_complete(self.aclose())
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def __enter__(self) -> Scanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Scanner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
