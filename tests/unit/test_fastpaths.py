"""The speed-ups in tokenize, fingerprint, urls, message, relay and behaviour against the plain
code they replace: each fast path must give exactly what the straightforward version gives,
on crafted edge cases and on random text built from the characters that matter."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import random
import re

import numpy as np
import pytest
from xxhash import xxh3_64_intdigest

from mailguard.classifier import tokens as tokenize
from mailguard.classifier.features import script_mix
from mailguard.message import relay, urls
from mailguard.scorers import behaviour_features as behaviour
from mailguard.scorers import minhash as fingerprint
from mailguard.message.context import MessageContext, _valid_ip
from mailguard.scorers.behaviour import BehaviourScorer
from mailguard.stores.memory import MemoryStore
from mailguard.message import textdecode
from mailguard.message.textdecode import decode_header_value

RNG_SEED = 20261123


def random_texts(atoms: list[str], count: int, longest: int = 30) -> list[str]:
    rng = random.Random(RNG_SEED)
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(0, longest))) for _ in range(count)]


WORDY = ["a", "Bc", "7", "_", "-", ".", "!", "'", "$", "@", " ", "\t", "\n", "\x1c", "\x0b", "é", "Ω", "٣", "中文", "ﬁ", "x" * 45, ":", "/", "\\"]


def test_word_lists_match_their_regexes():
    for text in ["", "Hello, World!", "it's $5.00 -- e-mail: bob@x.org", "_n_ 12 __x__", "tab\there\x1cfs", *random_texts(WORDY, 3000)]:
        assert tokenize._WORD.findall(text) == tokenize._WORD.regex.findall(text), text
        assert fingerprint._WORD.findall(text) == fingerprint._WORD.regex.findall(text), text


ADDRESSY = ["a", "b1", "@", ".", "-", "+", "_", " ", "\n", "é", "x" * 70, "y" * 30, "@@", ".com", "a.b", "@x.y", "q" * 64]


def test_address_replacement_matches_a_plain_sub():
    for text in ["", "@", "mail bob@example.com now", "a" * 64 + "@b.cc", "a" * 65 + "@b.cc", *random_texts(ADDRESSY, 3000, 40)]:
        assert fingerprint._replace_addresses(text) == fingerprint._EMAIL.sub(f" {fingerprint.EMAIL} ", text), text


def test_address_replacement_far_apart_and_long_domains():
    label = "d" * 63
    long_domain = "@" + ".".join([label] * 9)  # longer than a match can reach
    for gap in (0, 1, 64, 65, 66, 599, 600, 601, 700):
        text = "x" * 700 + " a@b.cc" + " " * gap + "c@" + label + "." + label + long_domain + " tail"
        assert fingerprint._replace_addresses(text) == fingerprint._EMAIL.sub(f" {fingerprint.EMAIL} ", text)


def reference_shingles(words: list[str]) -> np.ndarray:
    if len(words) < fingerprint.SHINGLE:
        return np.zeros(0, dtype=np.uint64)
    per_word = np.array([xxh3_64_intdigest(w.encode("utf-8", "surrogatepass")) for w in words], dtype=np.uint64)
    mix = fingerprint._mix
    combined = mix(per_word[2:] + np.uint64(0x632BE59BD9B4E019))
    combined = mix(per_word[1:-1] ^ combined)
    return np.unique(mix(per_word[:-2] ^ combined))


def test_shingle_hashes_match_the_word_by_word_reference():
    cases = [[], ["a"], ["a", "b"], ["a", "b", "c"], ["a", "b", "a", "b", "a", "b", "a"], ["x\0y", "z", "w", "v"], ["\ud800", "é", "中", "_n_", "k"]]
    for words in cases + [text.split() for text in random_texts(["a ", "b ", "c ", "dd ", "中 ", "_n_ "], 300, 400)]:
        assert np.array_equal(fingerprint.shingle_hashes(words), reference_shingles(words)), words


def test_signature_chunks_do_not_change_the_minimum():
    shingles = np.unique(np.random.default_rng(1).integers(0, 2**63, 5000, dtype=np.uint64))
    whole = fingerprint._mix(shingles.reshape(1, -1) ^ fingerprint._SEEDS).min(axis=1)
    assert np.array_equal(fingerprint.signature(shingles), (whole >> np.uint64(32)).astype(np.uint32))


@pytest.mark.parametrize("tokens", [set(), {"a"}, {"hdr:from", "subj:hi", "中文", "x" * 100}, ["dup", "dup", "other"], frozenset({"\ud83d", "ok"})])
def test_hash_tokens_is_sorted_unique_xxh3(tokens):
    expected = np.unique(np.array([xxh3_64_intdigest(t.encode("utf-8", "surrogatepass")) for t in set(tokens)], dtype=np.uint64))
    assert np.array_equal(tokenize.hash_tokens(tokens), expected)


RECEIVED = ["a", "B", "1", "22", "333", ".", "-", "_", " ", "\t", "\n", "\xa0", "\x1c", "é", ".com", "[", "]", "(", ";", "1.2.3.4", "mail.ex-ample.co.uk", "ESMTP"]


def test_received_tokens_match_the_whole_value_regexes():
    example = "from mail.example.com (mail.example.com [192.0.2.1]) by mx.example.org with ESMTP; Tue, 1 Jan 2002 00:00:00 +0000"
    for value in [example, *random_texts(RECEIVED, 3000)]:
        expected = {"hdr:received"}
        lowered = value.lower()
        for host in tokenize._HOST.findall(lowered):
            expected |= {"rcvd:host:" + host, "rcvd:dom:" + tokenize._last_two(host)}
        for net, last in tokenize._IPV4.findall(lowered):
            expected |= {f"rcvd:ip:{net}.{last}", f"rcvd:ip24:{net}"}
        found: set[str] = set()
        tokenize._header_tokens("received", value, found)
        assert found == expected, value


def test_list_header_hosts_match_the_whole_value_regex():
    for value in ["<mailto:a-request@Lists.Example.com?subject=unsubscribe>, <http://lists.example.com/x>", *random_texts(RECEIVED, 1000)]:
        lowered = value.lower()
        expected = {f"list-id:host:{h}" for h in tokenize._HOST.findall(lowered)} | {f"list-id:{lowered.strip()[:60]}", "hdr:list-id"}
        found: set[str] = set()
        tokenize._header_tokens("list-id", value, found)
        assert found == expected, value


URLISH = ["http", "HTTP", "https://", "://", "www.", "WwW.", "x.com", "/p?q=1", " ", "\n", "[", "::1]", "(", ")", "é", "hhttp://", "wwww.", "a"]


def test_url_matches_are_finditer():
    for text in ["see http://a.example/x and www.b.example", "Hhttp://x.y", *random_texts(URLISH, 3000)]:
        found = [(m.start(), m.group(0)) for m in urls._url_matches(text, text.lower())]
        assert found == [(m.start(), m.group(0)) for m in urls._URL_RE.finditer(text)], text


def test_url_matches_after_a_url_cut_at_its_length_bound():
    for extra in range(4):  # the bound can end a match inside the next "http" or "www."
        for nxt in ("http://b.example/x", "www.b.example/x"):
            text = "http://" + "a" * (1996 + extra) + nxt + " http://c.example"
            found = [(m.start(), m.group(0)) for m in urls._url_matches(text, text.lower())]
            assert found == [(m.start(), m.group(0)) for m in urls._URL_RE.finditer(text)], (extra, nxt)


def test_remembered_urls_are_the_parsed_ones():
    text = "see http://a.example/x?y=1. and HTTP://B.Example./p " + "http://" + "c" * 600 + ".example/"
    first, _ = urls.extract_urls([text], 10)
    again, _ = urls.extract_urls([text], 10)
    assert first == again
    assert [u.domain for u in first] == ["a.example", "b.example", "c" * 600 + ".example"]


def test_registered_domain_long_host_is_not_cached():
    host = "a." * 200 + "example.com"
    assert urls.registered_domain(host) == "example.com"
    assert urls.registered_domain("WWW.Example.CO.UK.") == "example.co.uk"


def test_header_lookups_keep_order_and_case_rules():
    raw = b"Received: one\nX-A: 1\nreceived: two\nSubject: hi\nRECEIVED: three\n\nbody\n"
    ctx = MessageContext(raw)
    assert ctx.header_all("Received") == ["one", "two", "three"]
    assert ctx.header("RECEIVED") == "one"
    assert ctx.header("missing", "dflt") == "dflt"
    values = ctx.header_all("received")
    values.append("mutated")  # a caller's list is its own
    assert ctx.header_all("received") == ["one", "two", "three"]


def reference_decode_header_value(value: str, limit: int = 16 * 1024) -> str:
    """The plain path: always unfold, always decode (the decoding itself is not a fast path)."""
    return textdecode._decoded.__wrapped__(re.sub(r"\r?\n[ \t]+", " ", value[: limit * 2]))[:limit].strip()


HEADER_VALUES = [
    "", "plain", "folded\r\n value", "a\n\tb", "=?utf-8?q?caf=C3=A9?=", "x" * 40000, "=?utf-8?b?5Lit5paH?= and =?bogus?q?x?=",
    "=?iso-8859-1?q?a?= =?iso-8859-1?q?b?=", "caf\udce9 cr\udce8me", "Ünïcödé", "=?utf-8?q?bad", "=?x?b?@@@?=", "=?utf-8?q?" + "a" * 3000 + "?=",
]


@pytest.mark.parametrize("value", HEADER_VALUES)
def test_header_decoding_matches_the_plain_version(value):
    for _ in range(2):  # computed, then remembered
        assert decode_header_value(value) == reference_decode_header_value(value)
        assert decode_header_value(value, 100) == reference_decode_header_value(value, 100)


@pytest.mark.parametrize("text", ["192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1", "1.2.3", "999.1.1.1", "0" * 60, "1" * 50 + ".1.1.1", ""])
def test_valid_ip_is_ipaddress(text):
    try:
        expected = str(ipaddress.ip_address(text))
    except ValueError:
        expected = None
    assert _valid_ip(text) == expected


@pytest.mark.parametrize("ip", ["10.1.2.3", "192.0.2.7", "::1", "2001:db8::5", "fe80::1", "172.31.0.1", "172.32.0.1"])
def test_is_trusted_with_tuple_list_and_generator(ip):
    networks = relay.parse_networks(list(relay.DEFAULT_TRUSTED_NETWORKS), "test")
    addr = ipaddress.ip_address(ip)
    expected = any(addr.version == n.version and addr in n for n in networks)
    assert relay.is_trusted(ip, networks) is expected
    assert relay.is_trusted(ip, networks) is expected  # remembered
    assert relay.is_trusted(ip, list(networks)) is expected
    assert relay.is_trusted(ip, iter(networks)) is expected


def test_is_trusted_refuses_a_non_address_every_time():
    networks = relay.parse_networks(["10.0.0.0/8"], "test")
    for _ in range(2):
        with pytest.raises(ValueError):
            relay.is_trusted("not-an-ip", networks)


def test_trusted_sets_are_told_apart_by_identity():
    a = relay.parse_networks(["10.0.0.0/8"], "test")
    b = relay.parse_networks(["192.0.2.0/24"], "test")
    assert relay.is_trusted("10.0.0.1", a) and not relay.is_trusted("10.0.0.1", b)
    assert relay.is_trusted("192.0.2.1", b) and not relay.is_trusted("192.0.2.1", a)


@pytest.mark.parametrize(
    "values",
    [[], ["a@b.example"], ['"Doe, J" <j@d.example>', "x@y.example"], ["undisclosed-recipients:;"], ["bad <<@>>"], ["n" * 1200 + " <a@b.c>"]],
)
def test_addresses_are_getaddresses(values):
    assert list(behaviour._addresses(values)) == email.utils.getaddresses(values)
    assert list(behaviour._addresses(values)) == email.utils.getaddresses(values)  # remembered


def reference_subject_hits(subject: str) -> list[tuple[str, float, str]]:
    core = behaviour._SUBJECT_PREFIX.sub("", subject.strip())
    hits = []
    cased = [c for c in core if c.isupper() or c.islower()]
    upper = sum(1 for c in cased if c.isupper())
    if len(cased) >= 10 and upper >= 0.8 * len(cased):
        hits.append(("SUBJ_ALL_CAPS", 1.0, f"{upper} of {len(cased)} letters are capitals"))
    symbols = sum(1 for c in core if c in behaviour._SUBJECT_SYMBOLS)
    if symbols >= 3:
        hits.append(("SUBJ_SYMBOLS", 1.0, f"{symbols} of $!%* in the subject"))
    return hits


def test_subject_counts_match_the_character_loop():
    atoms = ["A", "b", "É", "ß", "ǅ", "Ⅻ", "ⅻ", "$", "!", "%", "*", "€", "£", "¥", " ", "1", "Re: ", "[list] ", "中"]
    for subject in ["FREE MONEY $$$ NOW!!!", "Re: [x] HELLO THERE FRIEND", *random_texts(atoms, 2000)]:
        if not subject.strip():
            continue
        ctx = MessageContext(b"Subject: " + subject.encode("utf-8") + b"\n\nbody\n")
        got = [(h.symbol, h.value, h.reason) for h in behaviour.subject_hits(ctx)]
        assert got == reference_subject_hits(ctx.subject), subject


def test_remembered_header_tokens_are_the_computed_ones():
    headers = [("from", '"Bob" <bob@example.com>'), ("x-mailer", "Mutt 1.4"), ("list-id", "<foo.lists.example.org>"), ("x-spam", "yes 12 $$$"), ("subject", "hi")]
    for name, value in headers * 2:  # the second round is answered from memory
        computed: set[str] = set()
        tokenize._add_header_tokens(name, value, computed)
        found: set[str] = set()
        tokenize._header_tokens(name, value, found)
        assert found == computed
        found.add("mutated")  # the caller's set, not the remembered one
    again: set[str] = set()
    tokenize._header_tokens(*headers[0], again)
    assert "mutated" not in again


def test_behaviour_static_hits_are_shared_by_the_recipients_of_one_message():
    scorer = BehaviourScorer(MemoryStore(), rate=False)
    ctx = MessageContext(b"From: a@b.example\nSubject: FREE MONEY NOW FOR YOU!!!\n\nbody\n")
    alice, bob = ctx.for_user("alice@example.org"), ctx.for_user("bob@example.org")
    first, second = asyncio.run(scorer.score(alice)), asyncio.run(scorer.score(bob))
    assert first == second == behaviour.static_hits(ctx, scorer.settings)
    assert first is not second  # each scan may extend its own list


def _script_by_patterns(text: str) -> tuple[int, tuple[float, ...]]:
    """The plain `script_mix`: every script pattern over the whole text, each letter weighed
    by the length of its own UTF-8 encoding."""
    from mailguard.classifier.features import _SCRIPT_LETTERS, SCRIPTS

    letters = {name: pattern.findall(text) for name, pattern in _SCRIPT_LETTERS}
    if letters["kana"] and len(letters["kana"]) * 5 >= len(letters["kana"]) + len(letters["han"]):
        letters["kana"] += letters.pop("han")
    weights = {name: sum(len(c.encode()) for c in found) for name, found in letters.items()}
    total = sum(weights.values())
    if not total:
        return 0, ()
    name = max(weights, key=weights.__getitem__)
    return SCRIPTS.index(name), tuple(weights.get(script, 0) / total for script in SCRIPTS)


def test_script_mix_matches_the_script_patterns():
    """ASCII letters are counted without the regexes and the patterns see only the rest,
    weighed by a table of UTF-8 lengths; the answer must be the patterns' own over the whole
    text, each letter weighed by its own encoding, for ASCII text, for mixed text and for text
    with no ASCII at all."""
    atoms = ["a", "Z", "7", " ", "\n", "-", "@", "_", "\x00", "\x7f", "[", "`", "{", "é", "ɏ", "\u0250", "中", "カ", "한", "Ж", "α", "ก", "\u2603"]
    texts = ["", "1234 !!", "Hello", "z", "@[`{", "中文 mail", "カナ中文中文中文中文", "Ωmega ω"]
    texts += [*random_texts(atoms, 3000), *random_texts(atoms[:13], 3000), *random_texts(atoms[13:], 2000)]
    assert sum(t.isascii() for t in texts) > 3000 and sum(not t.isascii() for t in texts) > 3000
    for text in texts:
        script, shares = _script_by_patterns(text)
        assert script_mix(text)[0] == script, text
        assert script_mix(text)[1] == pytest.approx(shares), text
    assert {script_mix(t)[0] for t in texts} >= {0, 1, 2, 3, 4, 5, 6, 9}  # the answers compared include every script drawn
