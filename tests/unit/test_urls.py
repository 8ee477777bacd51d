"""URL extraction, hosts and registered domains."""

from __future__ import annotations

import pytest

from mailguard.message.urls import extract_urls, registered_domain


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("a.b.example.co.uk", "example.co.uk"),
        ("www.foo.example.com", "example.com"),
        ("Example.COM.", "example.com"),
        ("example.com", "example.com"),
        ("deep.sub.example.com.au", "example.com.au"),
        ("192.0.2.7", "192.0.2.7"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("co.uk", "co.uk"),  # a bare public suffix comes back as given
    ],
)
def test_registered_domain(host, domain):
    assert registered_domain(host) == domain


def urls_of(text: str, limit: int = 100):
    urls, dropped = extract_urls([text], limit)
    assert dropped == 0
    return urls


def test_extract_basic_fields():
    (url,) = urls_of("Click http://a.b.example.co.uk/x?y=1 now")
    assert url.url == "http://a.b.example.co.uk/x?y=1"
    assert url.host == "a.b.example.co.uk"
    assert url.domain == "example.co.uk"
    assert url.path == "/x"


def test_ip_urls():
    v4, v6 = urls_of("go http://192.0.2.7/login and http://[2001:db8::1]/z")
    assert (v4.host, v4.domain) == ("192.0.2.7", "192.0.2.7")
    assert (v6.host, v6.domain, v6.path) == ("2001:db8::1", "2001:db8::1", "/z")


def test_www_without_scheme_and_trailing_punctuation():
    (url,) = urls_of("Visit www.shop.example.com.")
    assert url.url == "http://www.shop.example.com"
    assert url.domain == "example.com"


def test_case_userinfo_port():
    (url,) = urls_of("HTTPS://user:pw@Login.Example.COM:8443/Path")
    assert url.host == "login.example.com"
    assert url.domain == "example.com"
    assert url.path == "/Path"


def test_idn_host_encoded():
    (url,) = urls_of("http://bücher.example/")
    assert url.host == "xn--bcher-kva.example"
    assert url.host.isascii()


@pytest.mark.parametrize("text", ["ftp://files.example.com/x", "mailto:bob@example.com", "no links here", "http://", "http://[::1/broken"])
def test_not_urls(text):
    assert extract_urls([text], 10) == ([], 0)


def test_distinct_and_ordered_across_sources():
    urls, _ = extract_urls(["http://one.example.com/ http://two.example.org/", "http://one.example.com/"], 10)
    assert [u.host for u in urls] == ["one.example.com", "two.example.org"]


def test_limit_counts_dropped():
    text = " ".join(f"http://h{i}.example.com/" for i in range(12))
    urls, dropped = extract_urls([text], 5)
    assert len(urls) == 5
    assert dropped == 12 - 5
    assert [u.host for u in urls] == [f"h{i}.example.com" for i in range(5)]


def test_very_long_url_bounded():
    text = "http://long.example.com/" + "a" * 10000
    (url,) = urls_of(text)
    assert len(url.url) <= 2000 + len("http://")
