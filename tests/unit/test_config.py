"""Configuration: defaults without a file, TOML into frozen dataclasses, errors naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mailguard.config import Config, Limits, PolicyConfig, ScannerConfig, StoreConfig, UsersConfig, config_from_mapping, load_config
from mailguard.errors import ConfigError


@pytest.fixture(autouse=True)
def no_config_env(monkeypatch):
    monkeypatch.delenv("MAILGUARD_CONFIG", raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailguard.toml"
    path.write_text(text, "utf-8")
    return path


def test_defaults_without_file():
    config = load_config()
    assert config == Config()
    assert config.limits == Limits()
    assert config.policy.level == "medium"
    assert config.store.backend == "sqlite"
    assert isinstance(config.store.path, Path)
    assert config.scanner.scorers == ("bayes", "reputation", "fingerprint", "behaviour", "feedback")  # all local, no network


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_env_var_names_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, "[limits]\nmax_parts = 7\n")
    monkeypatch.setenv("MAILGUARD_CONFIG", str(path))
    assert load_config().limits.max_parts == 7


def test_toml_loads_into_frozen_dataclasses(tmp_path):
    path = write(
        tmp_path,
        """
[limits]
max_parts = 42
max_parse_bytes = 1048576

[store]
backend = "memory"
path = "~/mg/store.sqlite3"

[scanner]
scorers = ["bayes", "dnsbl"]
deadline = 3
network = false
autolearn_ham = -2.5

[policy]
level = "high"
thresholds = { junk = 4.5 }
subject_tag = "[SPAM] "
on_failure = { virus = "tempfail" }

[scorers.dnsbl]
zones = ["zen.example.org"]
""",
    )
    config = load_config(path)
    assert config.limits.max_parts == 42
    assert config.limits.max_parse_bytes == 1048576
    assert config.limits.max_depth == Limits().max_depth  # untouched keys keep their default
    assert config.store == StoreConfig(backend="memory", path=Path("~/mg/store.sqlite3").expanduser())
    assert config.scanner.scorers == ("bayes", "dnsbl")
    assert config.scanner.deadline == 3.0 and isinstance(config.scanner.deadline, float)
    assert config.scanner.network is False
    assert config.scanner.autolearn_ham == -2.5
    assert config.policy.level == "high"
    assert config.policy.thresholds["junk"] == 4.5
    assert config.policy.subject_tag == "[SPAM] "
    assert config.policy.on_failure["virus"] == "tempfail"
    assert list(config.scorers["dnsbl"]["zones"]) == ["zen.example.org"]
    for section in (config, config.limits, config.store, config.scanner, config.policy):
        assert dataclasses.is_dataclass(section)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(section, dataclasses.fields(section)[0].name, None)
    with pytest.raises(TypeError):
        config.policy.thresholds["junk"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        config.scorers["dnsbl"]["zones"] = []  # type: ignore[index]


def test_replace_gives_new_config():
    config = Config()
    other = config.replace(scanner=ScannerConfig(network=False))
    assert other.scanner.network is False and config.scanner.network is True


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[limitz]\nmax_parts = 1\n", "limitz"),
        ("[limits]\nmax_partz = 1\n", "max_partz"),
        ("[policy]\nlevle = 'high'\n", "levle"),
        ("[limits]\nmax_parts = 'ten'\n", "limits.max_parts"),
        ("[limits]\nmax_parts = 2.5\n", "limits.max_parts"),
        ("[limits]\nmax_parts = true\n", "limits.max_parts"),
        ("[limits]\nmax_parts = -1\n", "limits.max_parts"),
        ("[scanner]\nnetwork = 'yes'\n", "scanner.network"),
        ("[scanner]\nnetwork = 1\n", "scanner.network"),
        ("[scanner]\ndeadline = '10s'\n", "scanner.deadline"),
        ("[scanner]\nscorers = 'bayes'\n", "scanner.scorers"),
        ("[scanner]\nscorers = ['bayes', 3]\n", "scanner.scorers"),
        ("[store]\npath = 5\n", "store.path"),
        ("[store]\nbackend = ['sqlite']\n", "store.backend"),
        ("[policy]\nsubject_tag = 1\n", "policy.subject_tag"),
        ("[policy]\nthresholds = 5\n", "policy.thresholds"),
        ("[policy]\nlevel = 'extreme'\n", "level"),
        ("[policy]\nthresholds = { spam = 3.0 }\n", "spam"),
        ("[policy]\nthresholds = { junk = 'high' }\n", "junk"),
        ("[policy]\non_failure = { virus = 'reject' }\n", "on_failure.virus"),
        ("limits = 3\n", "limits"),
        ("[scorers]\nbayes = 1\n", "scorers"),
    ],
)
def test_bad_config_names_the_key(tmp_path, toml, names):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml))
    assert names in str(info.value)


def test_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="TOML"):
        load_config(write(tmp_path, "[limits\nmax_parts = \n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_config_error_is_raised_for_mapping_too():
    assert config_from_mapping({"policy": {"level": "low"}}).policy == PolicyConfig(level="low")
    with pytest.raises(ConfigError, match="policy"):
        config_from_mapping({"policy": "low"})


def test_redis_store_section(tmp_path):
    path = write(tmp_path, '[store]\nbackend = "redis"\nurl = "redis://10.0.0.5:6379/2"\nprefix = "mail:"\ntimeout = 2\n')
    store = load_config(path).store
    assert (store.backend, store.url, store.prefix, store.timeout) == ("redis", "redis://10.0.0.5:6379/2", "mail:", 2.0)
    assert isinstance(store.timeout, float)
    for toml, name in [("url = 6379\n", "store.url"), ("timeout = '1s'\n", "store.timeout"), ("timeout = -1\n", "store.timeout")]:
        with pytest.raises(ConfigError, match=name):
            load_config(write(tmp_path, "[store]\n" + toml))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"backend": "sqlite", "cluster": True}, "apply to backend"),
        ({"backend": "memory", "wait_replicas": 1}, "apply to backend"),
        ({"backend": "redis", "url": "unix:///run/redis.sock", "cluster": True}, "over TCP"),
        ({"backend": "redis", "url": "redis://h:1", "wait_replicas": -1}, "negative"),
        ({"backend": "redis", "url": "redis://h:1", "wait_replicas": 1.5}, "whole number"),
        ({"backend": "redis", "url": "redis://h:1", "cluster": "yes"}, "true or false"),
    ],
)
def test_redis_cluster_keys_checked(section, message):
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({"store": section})


def test_redis_cluster_section():
    config = config_from_mapping({"store": {"backend": "redis", "url": "redis://10.0.0.1:7000", "cluster": True, "wait_replicas": 1}})
    assert config.store.cluster and config.store.wait_replicas == 1


def test_users_section(tmp_path):
    path = write(
        tmp_path,
        """
[users]
plus_separators = "+-"
report_retention_days = 30
[users.aliases]
"Info@Shop.Example" = "Alice@shop.example"
"@old.example" = "@new.example"
""",
    )
    users = load_config(path).users
    assert users.plus_separators == "+-" and users.report_retention_days == 30.0
    assert dict(users.aliases) == {"info@shop.example": "alice@shop.example", "@old.example": "@new.example"}  # canonical form
    with pytest.raises(TypeError):
        users.aliases["x@y.example"] = "z@y.example"  # type: ignore[index]
    assert Config().users == UsersConfig() and dict(Config().users.aliases) == {}


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[users]\naliaz = {}\n", "aliaz"),
        ("[users]\naliases = 5\n", "users.aliases"),
        ("[users]\nplus_separators = 1\n", "users.plus_separators"),
        ("[users]\nplus_separators = '@'\n", "separator"),
        ("[users]\naliases = { 'a@x.example' = 'nobody' }\n", "a@x.example"),
        ("[users]\naliases = { 'a@x.example' = 'b@x.example', 'b@x.example' = 'a@x.example' }\n", "loop"),
        ("[users]\naliases = { '@x.example' = 'b@y.example' }\n", "@domain"),
        ("[users]\nreport_retention_days = 0\n", "report_retention_days"),
        ("[users]\nreport_max_messages = -3\n", "users.report_max_messages"),
    ],
)
def test_bad_users_section_names_the_problem(tmp_path, toml, names):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml))
    assert names in str(info.value)


@pytest.mark.parametrize("mode", ["rw", "0999", "1777"])
def test_milter_socket_mode_must_be_octal_permissions(mode):
    with pytest.raises(ConfigError, match="socket_mode"):
        config_from_mapping({"milter": {"socket_mode": mode}})
