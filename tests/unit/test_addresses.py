"""Canonical addresses: one key per mailbox whatever its spelling, ValueError for non-addresses."""

from __future__ import annotations

import pytest

from mailguard.message.addresses import MAX_ALIAS_HOPS, canonical_address, canonical_domain, normalise_aliases
from mailguard.config import UsersConfig
from mailguard.policy import canonical_user


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("bob@example.org", "bob@example.org"),
        ("  <Bob@Example.ORG>  ", "bob@example.org"),
        ("Bob Smith <bob+lists@example.org>", "bob@example.org"),
        ('"Smith, Bob" <BOB@example.org>', "bob@example.org"),
        ("bob+a+b@example.org", "bob@example.org"),  # cut at the first separator
        ("+bob@example.org", "+bob@example.org"),  # nothing before the tag: not a tag
        ('"bob"@example.org', "bob@example.org"),  # needless quotes go
        ('"a,b"@example.org', '"a,b"@example.org'),  # needed quotes stay
        ("bob@BÜCHER.example", "bob@xn--bcher-kva.example"),  # IDNA, lower case
        ("bob@xn--bcher-kva.example", "bob@xn--bcher-kva.example"),
        ("Jürgen@example.org", "jürgen@example.org"),  # SMTPUTF8 local part, lower-cased
        ("bob@[192.0.2.1]", "bob@[192.0.2.1]"),
        ("bob@[IPv6:2001:DB8:0::1]", "bob@[ipv6:2001:db8::1]"),
        ("bob@example.org (work)", "bob@example.org"),
    ],
)
def test_canonical_forms(given, expected):
    assert canonical_address(given) == expected
    assert canonical_address(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "bob",
        "bob@",
        "@example.org",
        "<>",
        "a b c",
        "bob@example.org, eve@example.org",
        "bob@exa mple.org",
        "bob@example..org",
        "bob@exa_mple.org",
        "bob@" + "a" * 64 + ".org",  # label over 63
        "x" * 65 + "@example.org",  # local part over 64 octets
        "bob@" + ".".join(["abcdefghi"] * 30),  # domain over 253
        "bob@example.org\r\nBcc: eve@example.org",
        "bob@[300.1.1.1]",
        "a" * 2000 + "@example.org",
    ],
)
def test_invalid_input_is_a_value_error(bad):
    with pytest.raises(ValueError) as info:
        canonical_address(bad)
    assert str(info.value)  # says what is wrong


def test_non_strings_are_value_errors():
    with pytest.raises(ValueError):
        canonical_address(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        canonical_domain(42)  # type: ignore[arg-type]


def test_plus_separators_configurable():
    assert canonical_address("bob-news@example.org", plus_separators="+-") == "bob@example.org"
    assert canonical_address("bob+news@example.org", plus_separators="") == "bob+news@example.org"
    assert canonical_address("bob-news@example.org") == "bob-news@example.org"  # default: "+" only
    with pytest.raises(ValueError, match="separator"):
        canonical_address("bob@example.org", plus_separators="@")
    with pytest.raises(ValueError, match="separator"):
        canonical_address("bob@example.org", plus_separators=".")


def test_aliases_whole_address_and_domain():
    table = normalise_aliases(
        {"Info@Shop.Example": "Alice+x@shop.example", "@OLD.example": "@new.example", "bob@new.example": "robert@new.example"}
    )
    assert table == {"info@shop.example": "alice@shop.example", "@old.example": "@new.example", "bob@new.example": "robert@new.example"}
    assert canonical_address("INFO+orders@shop.example", aliases=table) == "alice@shop.example"
    assert canonical_address("carol@old.example", aliases=table) == "carol@new.example"
    assert canonical_address("Bob@Old.Example", aliases=table) == "robert@new.example"  # domain alias, then address alias
    assert canonical_address("dave@elsewhere.example", aliases=table) == "dave@elsewhere.example"


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ({"a@x.example": "b@x.example", "b@x.example": "a@x.example"}, "loop"),
        ({"a+tag@x.example": "b@x.example"}, "sub-address"),
        ({"@x.example": "b@y.example"}, "@domain"),
        ({"a@x.example": "nobody"}, "no @domain"),
        ({"a@x.example": 3}, "strings"),
    ],
)
def test_bad_alias_tables(aliases, message):
    with pytest.raises(ValueError, match=message):
        normalise_aliases(aliases)


def test_alias_chains_are_bounded():
    chain = {f"u{i}@x.example": f"u{i + 1}@x.example" for i in range(MAX_ALIAS_HOPS + 2)}
    with pytest.raises(ValueError, match="loop or chain"):
        normalise_aliases(chain)
    short = {f"u{i}@x.example": f"u{i + 1}@x.example" for i in range(3)}
    assert canonical_address("u0@x.example", aliases=normalise_aliases(short)) == "u3@x.example"


def test_canonical_user_uses_the_users_config_and_never_raises():
    users = UsersConfig(aliases={"info@shop.example": "alice@shop.example"}, plus_separators="+-")
    assert canonical_user("Info-orders@Shop.example", users) == "alice@shop.example"
    assert canonical_user("Bob+x@Example.org") == "bob@example.org"
    assert canonical_user(" <Postmaster> ") == "postmaster"  # not an address: the old rule, no exception
    assert canonical_user("a b c") == "a b c"
