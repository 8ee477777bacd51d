"""Policy: levels, thresholds per user from the store, and decide() -> verdict, headers, reply."""

from __future__ import annotations

import asyncio
import re

import pytest

from mailguard.config import PolicyConfig
from mailguard.errors import ConfigError, StoreError
from mailguard.policy import LEVELS, Policy, Thresholds, canonical_user, validate_policy_config
from mailguard.result import Action, Contribution, ScorerFailure
from mailguard.stores import MemoryStore

ORDER = [Action.ACCEPT, Action.TAG, Action.JUNK, Action.QUARANTINE, Action.REJECT]
STATUS = re.compile(r"^(Yes|No), score=(-?[\d.]+|inf) required=(-?[\d.]+|inf) tests=(\S+)$")


def run(coro):
    return asyncio.run(coro)


def policy(**kw) -> Policy:
    return Policy(PolicyConfig(**kw), MemoryStore())


def decide(p: Policy, score: float, *, thresholds: Thresholds | None = None, contributions=(), failures=(), subject="hello"):
    return p.decide(
        score=score,
        probability=1 / (1 + 2.718281828 ** -score),
        thresholds=thresholds or p.default,
        user="bob@example.net",
        contributions=list(contributions),
        failures=list(failures),
        subject=subject,
    )


# -- levels and thresholds ----------------------------------------------------------------


@pytest.mark.parametrize("action", ["tag", "junk"])
def test_levels_ordered_strictest_first(action):
    high, medium, low = (getattr(LEVELS[n], action) for n in ("high", "medium", "low"))
    assert high < medium < low


def test_stricter_level_never_milder_action():
    for tenth in range(-50, 150):
        score = tenth / 10
        ranks = [ORDER.index(LEVELS[n].action_for(score)) for n in ("high", "medium", "low")]
        assert ranks[0] >= ranks[1] >= ranks[2], score


def test_action_for_thresholds():
    t = Thresholds(tag=2.0, junk=5.0, quarantine=8.0, reject=12.0)
    assert t.action_for(1.99) is Action.ACCEPT
    assert t.action_for(2.0) is Action.TAG
    assert t.action_for(5.0) is Action.JUNK
    assert t.action_for(8.5) is Action.QUARANTINE
    assert t.action_for(100) is Action.REJECT
    assert t.required == 5.0


def test_required_falls_back():
    assert Thresholds(tag=2.0).required == 2.0
    assert Thresholds(quarantine=7.0, tag=1.0).required == 7.0
    assert Thresholds().required == float("inf")
    assert Thresholds().action_for(1e9) is Action.ACCEPT


def test_explicit_overrides():
    base = LEVELS["medium"]
    t = base.with_overrides({"junk": 4.5, "reject": 15, "tag": None})
    assert (t.tag, t.junk, t.reject) == (None, 4.5, 15.0)
    assert t.quarantine == base.quarantine
    assert base.tag is not None  # the level itself is untouched
    p = policy(level="high", thresholds={"reject": 9.0})
    assert p.default.reject == 9.0 and p.default.junk == LEVELS["high"].junk


@pytest.mark.parametrize("overrides", [{"spam": 1.0}, {"junk": "5"}, {"tag": True}])
def test_bad_overrides(overrides):
    with pytest.raises(ConfigError):
        LEVELS["medium"].with_overrides(overrides)


@pytest.mark.parametrize(
    "config",
    [PolicyConfig(level="paranoid"), PolicyConfig(thresholds={"bogus": 1.0}), PolicyConfig(on_failure={"virus": "reject"})],
)
def test_validate_policy_config(config):
    with pytest.raises(ConfigError):
        validate_policy_config(config)
    with pytest.raises(ConfigError):
        Policy(config, MemoryStore())


# -- per-user thresholds ------------------------------------------------------------------


def test_canonical_user():
    assert canonical_user(" <Bob@Example.NET> ") == canonical_user("bob@example.net") == "bob@example.net"


def test_user_thresholds_round_trip_through_store():
    p = policy(level="medium")
    returned = run(p.set_user("<Bob@Example.NET>", level="high", thresholds={"reject": 10.0}))
    expected = LEVELS["high"].with_overrides({"reject": 10.0})
    assert returned == expected
    assert run(p.thresholds_for("bob@example.net")) == expected
    assert run(p.thresholds_for("carol@example.net")) == p.default
    assert run(p.thresholds_for(None)) == p.default


def test_user_explicit_thresholds_on_default_level():
    p = policy(level="low")
    run(p.set_user("bob@example.net", thresholds={"junk": 2.0}))
    t = run(p.thresholds_for("bob@example.net"))
    assert t.junk == 2.0 and t.tag == LEVELS["low"].tag


def test_set_user_validates_before_storing():
    p = policy()
    with pytest.raises(ConfigError):
        run(p.set_user("bob@example.net", level="extreme"))
    with pytest.raises(ConfigError):
        run(p.set_user("bob@example.net", thresholds={"junk": "x"}))  # type: ignore[dict-item]
    assert run(p.store.get("policy:thresholds:bob@example.net")) is None


@pytest.mark.parametrize(
    "stored",
    [
        b"not json",
        b"\xff\xfe\x00garbage",
        b"",
        b"[]",
        b"42",
        b"null",
        b'"high"',
        b'{"level": "extreme"}',
        b'{"level": null}',
        b'{"level": []}',
        b'{"level": {"a": 1}}',
        b'{"thresholds": [1, 2]}',
        b'{"thresholds": "tag"}',
        b'{"thresholds": {"tag": "x"}}',
        b'{"thresholds": {"nope": 1}}',
    ],
)
def test_garbage_stored_value_falls_back_to_default(stored):
    p = policy(level="medium", thresholds={"junk": 5.5})
    run(p.store.set("policy:thresholds:bob@example.net", stored))
    assert run(p.thresholds_for("bob@example.net")) == p.default


def test_unreadable_store_falls_back_to_default():
    class BrokenStore:
        async def get(self, key):
            raise StoreError("disk on fire")

        async def set(self, key, value, ttl=None):
            raise StoreError("disk on fire")

        async def delete(self, key):
            raise StoreError("disk on fire")

    p = Policy(PolicyConfig(level="high"), BrokenStore())
    assert run(p.thresholds_for("bob@example.net")) == LEVELS["high"]


# -- decide -------------------------------------------------------------------------------


def contributions():
    return [
        Contribution("bayes", "BAYES_SPAM", 4.0, 1.0, 4.0, "many spam tokens"),
        Contribution("rules", "SUBJ_ALL_CAPS", 1.0, 1.5, 1.5),
        Contribution("rules", "TINY", 1.0, 0.001, 0.001),
        Contribution("auth", "SPF_PASS", 1.0, -0.5, -0.5),
    ]


@pytest.mark.parametrize("score", [-3.0, 0.0, 2.99, 3.0, 4.2, 5.999, 6.0, 11.5])
def test_decide_action_and_headers_consistent(score):
    p = policy(level="medium")
    t = p.default
    verdict = decide(p, score, contributions=contributions())
    assert verdict.action is t.action_for(score)
    assert verdict.score == score and verdict.required == t.required
    assert verdict.is_spam == (score >= t.required)
    assert verdict.user == "bob@example.net"
    headers = dict(verdict.headers)
    assert set(headers) == {"X-Spam-Flag", "X-Spam-Status", "X-Spam-Score", "X-Mailguard-Report"}
    assert headers["X-Spam-Flag"] == ("YES" if verdict.is_spam else "NO")
    assert float(headers["X-Spam-Score"]) == pytest.approx(score, abs=0.005)
    match = STATUS.match(headers["X-Spam-Status"])
    assert match, headers["X-Spam-Status"]
    flag, s, required, tests = match.groups()
    assert flag == ("Yes" if verdict.is_spam else "No")
    assert float(s) == pytest.approx(score, abs=0.005)
    assert float(required) == pytest.approx(t.required, abs=0.005)
    listed = dict(item.split("=") for item in tests.split(","))
    assert set(listed) == {"BAYES_SPAM", "SUBJ_ALL_CAPS", "SPF_PASS"}  # negligible ones left out
    assert float(listed["SPF_PASS"]) == pytest.approx(-0.5)
    report = headers["X-Mailguard-Report"]
    assert f"action={verdict.action}" in report
    assert "bayes:BAYES_SPAM +4.00 (many spam tokens)" in report
    for value in headers.values():
        assert "\n" not in value and "\r" not in value


def test_no_contributions_says_so():
    verdict = decide(policy(), 0.0)
    headers = dict(verdict.headers)
    assert headers["X-Spam-Status"].endswith("tests=none")
    assert "no evidence" in headers["X-Mailguard-Report"]
    assert verdict.action is Action.ACCEPT and verdict.smtp_reply is None


def test_reject_reply():
    p = policy(thresholds={"reject": 10.0})
    verdict = decide(p, 12.3)
    assert verdict.action is Action.REJECT
    code, enhanced, text = verdict.smtp_reply
    assert (code, enhanced) == ("550", "5.7.1")
    assert "12.3" in text


def test_failed_scorer_with_tempfail_policy():
    p = policy(on_failure={"virus": "tempfail"})
    failure = ScorerFailure("virus", "timeout", "clamd did not answer")
    verdict = decide(p, -5.0, failures=[failure])
    assert verdict.action is Action.TEMPFAIL
    assert verdict.smtp_reply[:2] == ("451", "4.7.1")
    assert "virus" in verdict.reason
    assert "failed: virus (timeout)" in dict(verdict.headers)["X-Mailguard-Report"]


def test_failed_scorer_not_named_fails_open():
    p = policy(on_failure={"virus": "tempfail"})
    verdict = decide(p, -5.0, failures=[ScorerFailure("dnsbl", "error", "SERVFAIL")])
    assert verdict.action is Action.ACCEPT
    assert verdict.smtp_reply is None
    assert "dnsbl (error)" in dict(verdict.headers)["X-Mailguard-Report"]


def test_failure_with_accept_policy_fails_open():
    p = policy(on_failure={"virus": "accept"})
    verdict = decide(p, 7.0, failures=[ScorerFailure("virus", "error", "x")])
    assert verdict.action is p.default.action_for(7.0)


@pytest.mark.parametrize("score,tagged", [(0.0, False), (3.5, True), (7.0, True)])
def test_subject_tag(score, tagged):
    p = policy(level="medium", subject_tag="[SPAM] ")
    verdict = decide(p, score, subject="Cheap pills")
    assert verdict.subject == ("[SPAM] Cheap pills" if tagged else None)


def test_subject_tag_not_doubled_and_off_when_empty():
    p = policy(level="medium", subject_tag="[SPAM] ")
    assert decide(p, 7.0, subject="[SPAM] Cheap pills").subject is None
    assert decide(policy(level="medium"), 7.0, subject="Cheap pills").subject is None


def test_subject_not_tagged_on_reject():
    p = policy(thresholds={"reject": 10.0}, subject_tag="[SPAM] ")
    assert decide(p, 20.0).subject is None


def test_header_values_stay_single_line_with_hostile_reasons():
    hostile = [Contribution("rules", "URL_HIT", 1.0, 2.0, 2.0, "url http://x.example/\r\nX-Injected: yes")]
    verdict = decide(policy(), 4.0, contributions=hostile, failures=[ScorerFailure("dns\nbl", "error", "bad\r\nthing")])
    for _, value in verdict.headers:
        assert "\n" not in value and "\r" not in value


def test_rewritten_subject_stays_single_line():
    p = policy(level="medium", subject_tag="[SPAM] ")
    verdict = decide(p, 7.0, subject="hi\r\nX-Injected: 1")
    assert verdict.subject.startswith("[SPAM] hi")
    assert "\n" not in verdict.subject and "\r" not in verdict.subject


# -- thresholds moved by the user's reports ---------------------------------------------------

from mailguard.config import UsersConfig, config_from_mapping  # noqa: E402


def moving(users: UsersConfig | None = None, **kw) -> Policy:
    return Policy(PolicyConfig(**kw), MemoryStore(), users or UsersConfig())


def test_shifted_thresholds_stop_at_the_limits_but_keep_a_setting_already_past_them():
    t = Thresholds(tag=2.0, junk=3.4, reject=9.5)
    assert t.shifted(-0.5) == Thresholds(tag=1.5, junk=2.9, reject=9.0)
    down = t.shifted(-1.5, floor=1.0, ceiling=10.0)
    assert down == Thresholds(tag=1.0, junk=1.9, reject=8.0)
    assert t.shifted(1.0, floor=1.0, ceiling=10.0) == Thresholds(tag=3.0, junk=4.4, reject=10.0)
    low = Thresholds(tag=0.5, junk=12.0)  # set outside [1, 10] by hand: a shift never pulls it in
    assert low.shifted(-1.0, floor=1.0, ceiling=10.0) == Thresholds(tag=0.5, junk=11.0)
    assert low.shifted(1.0, floor=1.0, ceiling=10.0) == Thresholds(tag=1.5, junk=12.0)
    assert t.shifted(0.0) is t


def test_many_missed_spams_never_move_past_the_clamp():
    users = UsersConfig(threshold_step=0.25, threshold_max_down=1.5, threshold_floor=1.0)
    p = moving(users)
    shifts = [run(p.move_thresholds("Bob@Example.net", "missed_spam")) for _ in range(20)]
    assert shifts[:3] == [-0.25, -0.5, -0.75] and min(shifts) == -1.5 and shifts[-1] == -1.5
    moved = run(p.thresholds_for("bob@example.net"))
    assert moved.junk == pytest.approx(LEVELS["medium"].junk - 1.5)
    assert moved.tag == 1.0  # 2.0 - 1.5 would be below the floor
    assert run(p.thresholds_for("carol@example.net")) == p.default  # nobody else moves


def test_a_false_positive_moves_up_twice_the_step_and_is_clamped_too():
    p = moving(UsersConfig(threshold_step=0.25, threshold_fp_step=0.5, threshold_max_up=1.0))
    run(p.move_thresholds("bob@example.net", "missed_spam"))
    assert run(p.move_thresholds("bob@example.net", "false_positive")) == pytest.approx(0.25)
    assert run(p.thresholds_for("bob@example.net")).junk == pytest.approx(LEVELS["medium"].junk + 0.25)
    for _ in range(10):
        run(p.move_thresholds("bob@example.net", "false_positive"))
    assert run(p.shift_for("bob@example.net")) == 1.0
    assert run(p.thresholds_for("bob@example.net")).junk == pytest.approx(LEVELS["medium"].junk + 1.0)
    with pytest.raises(ValueError):
        run(p.move_thresholds("bob@example.net", "ham"))


def test_explicit_thresholds_move_unless_fixed():
    p = moving()
    run(p.set_user("bob@example.net", level="high", thresholds={"reject": 8.0}))
    run(p.move_thresholds("bob@example.net", "false_positive"))
    high = LEVELS["high"]
    assert run(p.thresholds_for("bob@example.net")) == Thresholds(tag=high.tag + 0.5, junk=high.junk + 0.5, reject=8.5)
    run(p.set_user("bob@example.net", level="high", thresholds={"reject": 8.0}, moves=False))
    assert run(p.thresholds_for("bob@example.net")) == LEVELS["high"].with_overrides({"reject": 8.0})
    assert run(p.user_record("bob@example.net")) == (LEVELS["high"].with_overrides({"reject": 8.0}), False)
    run(p.reset_shift("bob@example.net"))
    assert run(p.shift_for("bob@example.net")) == 0.0


def test_moves_turned_off_in_config_record_nothing():
    p = moving(UsersConfig(threshold_moves=False))
    assert run(p.move_thresholds("bob@example.net", "missed_spam")) == 0.0
    assert run(p.store.get_counters(["policy:shift:bob@example.net"])) == {}
    assert run(p.thresholds_for("bob@example.net")) == p.default


def test_a_shift_stored_out_of_bounds_is_clamped_when_read():
    p = moving(UsersConfig(threshold_max_down=0.5))
    run(p.store.incr_many({"policy:shift:bob@example.net": -40.0}))
    assert run(p.shift_for("bob@example.net")) == -0.5
    # and the next move starts from the clamped value, not from -40
    assert run(p.move_thresholds("bob@example.net", "false_positive")) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "section",
    [
        {"threshold_step": -0.1},
        {"threshold_floor": 5.0, "threshold_ceiling": 4.0},
        {"threshold_moves": "yes"},
        {"global_after": 1},
        {"global_after": 2.5},
        {"global_max_dissent": 0.5},
        {"threshold_max_up": "far"},
    ],
)
def test_users_section_refuses_bad_feedback_settings(section):
    with pytest.raises(ConfigError):
        config_from_mapping({"users": section})


def test_users_section_accepts_feedback_settings():
    users = config_from_mapping({"users": {"threshold_step": 0.5, "global_after": 0, "global_max_dissent": 0}}).users
    assert users.threshold_step == 0.5 and users.global_after == 0 and users.global_max_dissent == 0.0
