"""The feedback scorer on real components: a redis-server shared by two scanner nodes, and an
authoritative DNS server (the session's test zones) for the DKIM/DMARC check of allow entries.

Nothing here is mocked; redis-server and dnslib are required.
"""

from __future__ import annotations

import asyncio
import uuid

import dkim
import redis

from mailguard import Config, Scanner
from mailguard.config import ScannerConfig, StoreConfig, UsersConfig
from mailguard.message import Envelope, MessageContext
from mailguard.scorer import Services
from mailguard.scorers.bayes import BayesScorer
from mailguard.scorers.feedback import FeedbackScorer, parse_entry
from mailguard.stores.redis import RedisStore

from ..conftest import HAM_WORDS, make_message
from .conftest import resolver_for

USER = "bob@example.org"


def message(sender: str, body: str = "Your invoice for March is attached.") -> bytes:
    return f"From: {sender}\r\nTo: {USER}\r\nSubject: invoice\r\nMessage-ID: <1@x>\r\n\r\n{body}\r\n".encode()


def test_allow_entries_checked_against_real_dkim_and_dmarc(server, fake_dns, dkim_key):
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    genuine = message("Billing <billing@example.test>")
    genuine = dkim.sign(genuine, b"sel1", b"example.test", dkim_key.pem, include_headers=[b"from", b"to", b"subject"]) + genuine
    forged = message("Billing <billing@example.test>", "Urgent: pay to the new account below.")  # unsigned; p=reject
    unlisted_policy = message("Club <news@nodmarc.test>")  # no DMARC record at all

    async def scenario():
        store = RedisStore(server.url, prefix=prefix)
        services = Services(Config(store=StoreConfig(backend="redis", url=server.url, prefix=prefix)), store, None, resolver_for(fake_dns))
        scorer = FeedbackScorer.from_config({}, services)
        for entry in ("@example.test", "@nodmarc.test"):
            await scorer.lists.add(USER, "allow", parse_entry(entry))
        results = {}
        for name, raw in (("genuine", genuine), ("forged", forged), ("no policy", unlisted_policy)):
            results[name] = [(h.symbol, h.reason) for h in await scorer.score(MessageContext(raw, user=USER))]
        await store.close()
        return results

    results = asyncio.run(scenario())
    assert [s for s, _ in results["genuine"]] == ["USER_ALLOW"] and "DKIM-authenticated" in results["genuine"][0][1]
    assert results["forged"] == []  # example.test publishes p=reject: an unsigned From is not honoured
    assert [s for s, _ in results["no policy"]] == ["USER_ALLOW"]


def symbols(result) -> set[str]:
    return {c.symbol for c in result.contributions}


def test_reports_on_one_node_list_the_sender_on_the_other(server, tiny_model):
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    config = Config(
        store=StoreConfig(backend="redis", url=server.url, prefix=prefix),
        scanner=ScannerConfig(network=False),
        users=UsersConfig(global_after=2),
    )

    def node() -> Scanner:
        store = RedisStore(server.url, prefix=prefix)
        scorers = [BayesScorer(tiny_model.bayes, store), FeedbackScorer.from_config({}, Services(config, store, tiny_model))]
        return Scanner(config, store=store, model=tiny_model, scorers=scorers)

    newsletters = [make_message(HAM_WORDS, subject="weekly", sender="Deals <deals@promo.example>", seed=70 + n) for n in range(3)]
    envelope = Envelope(mail_from="bounce@promo.example", rcpt_to=(USER,))
    with node() as a, node() as b:
        before = b.scan_sync(newsletters[2], envelope)
        first = a.report_sync(newsletters[0], "spam", user=USER)
        middle = b.scan_sync(newsletters[2], envelope)
        second = a.report_sync(newsletters[1], "spam", user="Bob+junk@example.org")
        after = b.scan_sync(newsletters[2], envelope)
        shift, shift_where_reported = b._run(b.policy.shift_for(USER)), a._run(a.policy.shift_for(USER))
        other_user = b.scan_sync(newsletters[2], Envelope(mail_from="bounce@promo.example", rcpt_to=("carol@example.org",)))
        carol = b.report_sync(newsletters[0], "spam", user="carol@example.org")
    assert first.learned and second.learned
    assert "USER_BLOCK" not in symbols(before) | symbols(middle)  # block_after = 2
    assert "USER_BLOCK" in symbols(after) and after.score > middle.score
    assert "USER_BLOCK" not in symbols(other_user)
    # the first report was of a spam that got through, so it lowered Bob's thresholds (the
    # second too, unless what the first taught his classifier already caught it): the shift
    # node a wrote is what node b reads
    assert shift == shift_where_reported <= -config.users.threshold_step
    assert carol.learned_globally  # a second user agreed (global_after = 2 here)
    # lists are the user's data (no expiry, bounded); report counts and the shift expire
    client = redis.Redis.from_url(server.url)
    try:
        # (RedisStore keeps sets under <prefix>s:, counters under <prefix>c:)
        assert client.ttl(f"{prefix}s:fb:{{{USER}}}:block") == -1
        counts = client.keys(f"{prefix}c:fb:{{{USER}}}:n:*")
        assert counts and all(client.ttl(k) > 0 for k in counts)
        assert client.ttl(f"{prefix}c:policy:shift:{USER}") > 0
    finally:
        client.close()
