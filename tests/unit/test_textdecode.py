"""Bytes to text whatever charset the sender claimed, and header decoding."""

from __future__ import annotations

import codecs
import email.header

import pytest

from mailguard.message.textdecode import decode_bytes, decode_header_value

SAMPLES = [
    ("gb2312", "中文邮件测试"),
    ("gbk", "中文 喆 镕"),
    ("gb18030", "中文 € 𠀀"),
    ("big5", "繁體中文測試"),
    ("iso-2022-jp", "日本語のテスト"),
    ("shift_jis", "日本語のテスト"),
    ("euc-kr", "한국어 시험"),
    ("utf-8", "Grüße 你好 😀"),
    ("iso-8859-1", "Café crème"),
    ("windows-1251", "Привет мир"),
]


@pytest.mark.parametrize(("label", "text"), SAMPLES)
def test_declared_charset_round_trip(label, text):
    decoded, codec = decode_bytes(text.encode(label), label)
    assert decoded == text
    assert codecs.lookup(codec)  # a real codec name comes back


@pytest.mark.parametrize("label", ["GB2312", " gb2312 ", '"gb2312"', "'GB2312'"])
def test_label_spelling_tolerated(label):
    text = "中文邮件测试"
    assert decode_bytes(text.encode("gb2312"), label)[0] == text


def test_gb2312_label_decodes_gbk_only_characters():
    text = "喆镕"  # senders label GBK text as gb2312 all the time
    with pytest.raises(UnicodeEncodeError):
        text.encode("gb2312")
    assert decode_bytes(text.encode("gbk"), "gb2312")[0] == text


def test_latin1_label_read_as_windows_1252():
    text = "“quoted” — €5"
    assert decode_bytes(text.encode("cp1252"), "iso-8859-1")[0] == text


@pytest.mark.parametrize("label", [None, "", "x-unknown", "utf-8", "base64", "rot13", "zlib", "hex", "uu", "bz2",
                                   "idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"])
def test_unknown_or_non_text_label_falls_back_to_utf8(label):
    text = "Grüße 你好"
    decoded, codec = decode_bytes(text.encode("utf-8"), label)
    assert decoded == text
    assert codec == "utf-8"


@pytest.mark.parametrize("label", [None, "utf-8", "x-unknown", "gb2312", "base64"])
def test_garbage_never_raises(label):
    data = bytes(range(256)) * 4
    decoded, codec = decode_bytes(data, label)
    assert isinstance(decoded, str) and decoded
    codecs.lookup(codec)


def test_empty_bytes():
    assert decode_bytes(b"", None)[0] == ""
    assert decode_bytes(b"", "gb2312")[0] == ""


def test_undeclared_cjk_detected_or_at_least_decoded():
    text = "这是一封关于发票和付款的中文邮件，请尽快查收并回复。" * 5
    decoded, _ = decode_bytes(text.encode("gb18030"), None)
    assert isinstance(decoded, str) and len(decoded) > 0


@pytest.mark.parametrize("charset", ["utf-8", "gb2312", "big5", "iso-2022-jp", "iso-8859-1"])
def test_header_encoded_words(charset):
    text = {"big5": "繁體測試", "iso-2022-jp": "日本語", "iso-8859-1": "Café crème"}.get(charset, "中文测试")
    encoded = email.header.Header(text, charset).encode()
    assert "=?" in encoded
    assert decode_header_value(encoded) == text


def test_header_encoded_word_with_unknown_charset_does_not_raise():
    value = decode_header_value("=?x-nonsense?q?abc?= tail")
    assert "tail" in value


def test_header_malformed_encoded_word_kept():
    assert decode_header_value("=?utf-8?b?not base64 at all") == "=?utf-8?b?not base64 at all"


def test_header_unfolded_and_stripped():
    assert decode_header_value("  one\r\n\t two\n  three  ") == "one two three"


def test_header_surrogate_escaped_8bit_bytes():
    text = "Grüße 北京"
    escaped = text.encode("utf-8").decode("ascii", "surrogateescape")
    assert decode_header_value(escaped) == text


def test_header_limit():
    assert len(decode_header_value("x" * 1000, limit=100)) == 100


def test_header_non_str_value():
    assert decode_header_value(12345) == "12345"


def test_header_raw_8bit_text_next_to_encoded_word():
    encoded = email.header.Header("发票", "utf-8").encode()
    escaped = "中文".encode("utf-8").decode("ascii", "surrogateescape")
    value = decode_header_value(f"{escaped} {encoded} tail")
    assert "中文" in value and "发票" in value and value.endswith("tail")
    assert "\\u" not in value


@pytest.mark.parametrize("label", ["idna", "punycode", "undefined", "unicode-escape"])
def test_host_name_and_escape_codecs_are_not_charsets(label):
    """Found by fuzzing: these codecs raised UnicodeError (idna cannot even decode with
    errors="replace"), so the part carrying the label was lost."""
    data = "café \\u12 -".encode("utf-8") + b"\x87"
    text, codec = decode_bytes(data, label)
    assert "caf" in text and codec not in ("idna", "punycode", "undefined", "unicode-escape")
