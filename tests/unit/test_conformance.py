"""One conformance check over every registered scorer (like scikit-learn's check_estimator)."""

from __future__ import annotations

import asyncio

import pytest

from mailguard import Config, Hit, MessageContext, Scorer
from mailguard.config import StoreConfig
from mailguard.errors import ConfigError, MailguardError
from mailguard.scorer import Services, available_scorers, load_scorer
from mailguard.stores.memory import MemoryStore

from ..conftest import SAMPLES

SCORERS = sorted(available_scorers())


def test_builtin_scorers_are_registered():
    assert "bayes" in SCORERS


@pytest.mark.parametrize("name", SCORERS)
def test_scorer_conformance(name, tiny_model):
    store = MemoryStore()
    services = Services(Config(store=StoreConfig(backend="memory")), store, tiny_model)
    scorer = load_scorer(name, {}, services)
    assert isinstance(scorer, Scorer) and scorer.name == name
    info = scorer.info
    assert info.symbols and set(info.default_weights) <= set(info.symbols)
    assert info.timeout > 0 and info.group
    # unknown config keys fail at start-up, not mid-scan
    with pytest.raises(ConfigError):
        load_scorer(name, {"no_such_option_xyz": 1}, services)

    async def run_all():
        for path in sorted(SAMPLES.iterdir()):
            ctx = MessageContext(path.read_bytes(), user="bob@example.net")
            try:
                hits = await scorer.score(ctx)
            except MailguardError:
                # A scorer whose service is absent here (clamd, DNS) may fail, but only with
                # our own error, which the scanner records; tests/integration runs it for real.
                continue
            assert isinstance(hits, list) and all(isinstance(h, Hit) for h in hits)
            assert all(h.symbol in info.symbols for h in hits), f"{name} emitted an undeclared symbol"
            if info.learns:
                await scorer.learn(ctx, "spam", "bob@example.net")  # type: ignore[attr-defined]
                assert isinstance(await scorer.score(ctx), list)

    asyncio.run(run_all())
