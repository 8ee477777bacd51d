"""MessageContext: decoded headers and bodies, HTML, URLs, Received chain, attachments,
and bounded, never-raising parsing of malformed input."""

from __future__ import annotations

import base64
import dataclasses
import email.header
import hashlib
import io
import zipfile
import zlib
from email.message import EmailMessage

import pytest

from mailguard.config import Limits
from mailguard.message.context import Envelope, MessageContext, parse_received

CRLF = b"\r\n"


def raw_message(body: bytes, *, headers: list[tuple[str, str]] | None = None, content_type: str = "text/plain", cte: str = "8bit") -> bytes:
    lines = [b"From: alice@example.org", b"To: bob@example.net", b"Subject: test", b"MIME-Version: 1.0"]
    lines += [f"{k}: {v}".encode() for k, v in headers or []]
    lines += [f"Content-Type: {content_type}".encode(), f"Content-Transfer-Encoding: {cte}".encode()]
    return CRLF.join(lines) + CRLF + CRLF + body


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = (1).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("invoice.txt", "pay now " * 20)
    return buf.getvalue()


def touch_all_views(ctx: MessageContext) -> None:
    """Every view a scorer may read; none of them may raise."""
    assert isinstance(ctx.headers, list)
    assert isinstance(ctx.subject, str)
    assert isinstance(ctx.text, str)
    assert isinstance(ctx.urls, list)
    assert isinstance(ctx.url_domains, list)
    assert isinstance(ctx.attachments, list)
    assert isinstance(ctx.received, list)
    assert isinstance(ctx.html_links, list)
    assert ctx.image_count >= 0
    assert len(ctx.digest) == 64
    limits = ctx.limits
    assert ctx.part_count <= limits.max_parts
    assert len(ctx.attachments) <= limits.max_attachments
    assert len(ctx.urls) <= limits.max_urls
    assert len(ctx.received) <= limits.max_received
    assert len(ctx.headers) <= limits.max_headers
    assert sum(len(p.text) for p in ctx.text_parts) <= limits.max_total_text_bytes


# -- construction -----------------------------------------------------------------------


def test_needs_bytes():
    with pytest.raises(TypeError):
        MessageContext("a string, not bytes")  # type: ignore[arg-type]


def test_accepts_bytearray_and_memoryview():
    raw = raw_message(b"hello bytes\r\n")
    assert "hello bytes" in MessageContext(bytearray(raw)).text
    assert "hello bytes" in MessageContext(memoryview(raw)).text


def test_envelope_is_frozen_and_kept():
    env = Envelope(client_ip="192.0.2.1", helo="mx.example.org", mail_from="", rcpt_to=("bob@example.net",))
    ctx = MessageContext.from_bytes(raw_message(b"x\r\n"), env)
    assert ctx.envelope is env
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.helo = "other"  # type: ignore[misc]


def test_digest_is_sha256_of_raw():
    raw = raw_message(b"digest me\r\n")
    assert MessageContext(raw).digest == hashlib.sha256(raw).hexdigest()


# -- headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["utf-8", "gb2312"])
def test_rfc2047_subject_decoded(charset):
    subject = "中文邮件测试 免费"
    encoded = email.header.Header(subject, charset).encode()
    assert "=?" in encoded and subject not in encoded
    ctx = MessageContext(raw_message(b"body\r\n", headers=[("X-Dummy", "1")]).replace(b"Subject: test", b"Subject: " + encoded.encode()))
    assert ctx.subject == subject


def test_rfc2047_mixed_with_plain_words():
    encoded = email.header.Header("café", "utf-8").encode()
    raw = raw_message(b"x\r\n").replace(b"Subject: test", f"Subject: Re: {encoded} today".encode())
    subject = MessageContext(raw).subject
    assert subject.startswith("Re:") and "café" in subject and subject.endswith("today")


def test_raw_8bit_utf8_header_bytes_decoded():
    subject = "Grüße aus 北京"
    raw = raw_message(b"x\r\n").replace(b"Subject: test", b"Subject: " + subject.encode("utf-8"))
    ctx = MessageContext(raw)
    assert ctx.subject == subject
    assert "\ufffd" not in ctx.subject


def test_folded_header_unfolded_and_case_insensitive_lookup():
    raw = raw_message(b"x\r\n", headers=[("X-Long", "first part\r\n\tsecond part")])
    ctx = MessageContext(raw)
    assert ctx.header("x-long") == ctx.header("X-LONG") == "first part second part"
    assert ctx.header("x-absent", "dflt") == "dflt"
    assert ("from", "alice@example.org") in ctx.headers


def test_header_all_keeps_order():
    raw = raw_message(b"x\r\n", headers=[("X-Tag", "one"), ("X-Tag", "two"), ("X-Tag", "three")])
    assert MessageContext(raw).header_all("x-tag") == ["one", "two", "three"]


def test_max_headers_bound():
    extra = [(f"X-H{i}", str(i)) for i in range(50)]
    ctx = MessageContext(raw_message(b"x\r\n", headers=extra), limits=Limits(max_headers=10))
    assert len(ctx.headers) == 10
    assert any("headers" in p for p in ctx.problems)


# -- body text in many charsets ---------------------------------------------------------

CHARSET_SAMPLES = [
    ("gb2312", "中文邮件测试，发票请查收"),
    ("GBK", "中文邮件测试 喆 镕"),  # 喆 and 镕 are in GBK but not in GB2312
    ("gb18030", "中文测试 € 𠀀"),  # 𠀀 needs GB18030's four-byte form
    ("big5", "繁體中文測試 發票"),
    ("iso-2022-jp", "日本語のテストメール"),
    ("utf-8", "Grüße, 你好, привет, 😀"),
    ("iso-8859-1", "Café crème, déjà vu, Ærø"),
]


@pytest.mark.parametrize("cte", ["base64", "8bit"])
@pytest.mark.parametrize(("charset", "text"), CHARSET_SAMPLES, ids=[c for c, _ in CHARSET_SAMPLES])
def test_text_part_charset_round_trip(charset, text, cte):
    data = text.encode(charset)
    assert data != text.encode("utf-8") or charset == "utf-8"
    body = base64.encodebytes(data) if cte == "base64" else data + CRLF
    ctx = MessageContext(raw_message(body, content_type=f'text/plain; charset="{charset}"', cte=cte))
    assert text in ctx.text
    assert ctx.text_parts[0].content_type == "text/plain"
    assert text in ctx.text_parts[0].text


@pytest.mark.parametrize("label", ["x-no-such-charset", "utf-8", "base64", "rot13", "zlib", ""])
def test_wrong_or_unknown_charset_label_falls_back(label):
    text = "Grüße 你好"
    # utf-8 content under labels that are unknown, or not charsets at all
    ctx = MessageContext(raw_message(text.encode("utf-8") + CRLF, content_type=f'text/plain; charset="{label}"'))
    assert text in ctx.text


@pytest.mark.parametrize("label", ["punycode", "idna"])
@pytest.mark.parametrize("cte", ["8bit", "quoted-printable"])
def test_8bit_part_under_a_codec_that_cannot_replace_is_read(label, cte):
    """Found by fuzzing: the stdlib's get_payload() decodes 8-bit bodies with the declared
    charset and let punycode's and idna's errors out, which lost the whole message body."""
    body = "café -€ spam words".encode("utf-8") + b"\x87" + CRLF
    one = raw_message(body, content_type=f"text/plain; charset={label}", cte=cte)
    ctx = MessageContext(one)
    touch_all_views(ctx)
    assert "spam words" in ctx.text and not any("skipped" in p for p in ctx.problems)


def test_mislabelled_gbk_as_utf8_does_not_raise():
    data = "中文邮件测试".encode("gbk")
    ctx = MessageContext(raw_message(data + CRLF, content_type="text/plain; charset=utf-8"))
    touch_all_views(ctx)
    assert ctx.text.strip()


def test_mislabelled_latin1_as_ascii_keeps_letters():
    ctx = MessageContext(raw_message("Café crème".encode("latin-1") + CRLF, content_type="text/plain; charset=us-ascii"))
    assert "Café crème" in ctx.text


# -- HTML -------------------------------------------------------------------------------


def html_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["Subject"] = "html"
    msg.set_content("plain alternative text")
    msg.add_alternative(
        "<html><head><title>TITLE-HIDDEN</title><style>.x{color:red} STYLE-HIDDEN</style></head>"
        "<body><script>var SCRIPT_HIDDEN = 1;</script>"
        "<p>Visible paragraph</p><p>Second block</p>"
        '<a href="http://click.tracker.example.com/c?id=1">Claim your prize</a>'
        '<a href="https://www.example.org/about">About us</a>'
        '<img src="cid:a"><img src="http://img.example.net/p.gif"></body></html>',
        subtype="html",
    )
    return msg.as_bytes()


def test_html_part_reduced_to_visible_text():
    ctx = MessageContext(html_message())
    html_parts = [p for p in ctx.text_parts if p.content_type == "text/html"]
    assert len(html_parts) == 1
    text = html_parts[0].text
    assert "Visible paragraph" in text and "Second block" in text
    for hidden in ("TITLE-HIDDEN", "STYLE-HIDDEN", "SCRIPT_HIDDEN", "<p>", "color:red"):
        assert hidden not in ctx.text
    assert "plain alternative text" in ctx.text


def test_html_links_and_images_collected():
    ctx = MessageContext(html_message())
    assert ("http://click.tracker.example.com/c?id=1", "Claim your prize") in ctx.html_links
    assert ("https://www.example.org/about", "About us") in ctx.html_links
    assert ctx.image_count == 2
    assert {"example.com", "example.org"} <= set(ctx.url_domains)


def test_xhtml_with_xml_declaration_still_gives_text():
    body = b'<?xml version="1.0" encoding="utf-8"?>\r\n<html><body><p>declared xhtml words</p></body></html>\r\n'
    ctx = MessageContext(raw_message(body, content_type="text/html; charset=utf-8"))
    assert "declared xhtml words" in ctx.text


# -- URLs -------------------------------------------------------------------------------


def test_urls_and_registered_domains_from_text():
    body = b"See http://a.b.example.co.uk/x and http://192.0.2.7/login, also www.shop.example.com.\r\n"
    ctx = MessageContext(raw_message(body))
    by_host = {u.host: u for u in ctx.urls}
    assert by_host["a.b.example.co.uk"].domain == "example.co.uk"
    assert by_host["a.b.example.co.uk"].path == "/x"
    assert by_host["192.0.2.7"].domain == "192.0.2.7"
    assert by_host["www.shop.example.com"].domain == "example.com"
    assert ctx.url_domains == ["example.co.uk", "192.0.2.7", "example.com"]


def test_url_domains_distinct():
    body = b"http://x.example.com/1 http://y.example.com/2 http://x.example.com/1\r\n"
    ctx = MessageContext(raw_message(body))
    assert ctx.url_domains == ["example.com"]
    assert len(ctx.urls) == 2


def test_max_urls_bound_noted():
    body = " ".join(f"http://host{i}.example.com/" for i in range(30)).encode() + CRLF
    ctx = MessageContext(raw_message(body), limits=Limits(max_urls=5))
    assert len(ctx.urls) == 5
    assert any("max_urls" in p for p in ctx.problems)


# -- Received chain ---------------------------------------------------------------------


def test_received_chain_newest_first():
    hops = [
        ("helo3.example.net", "rdns3.example.com", "192.0.2.3", "mx.example.org"),
        ("helo2.example.net", "rdns2.example.com", "198.51.100.2", "relay.example.com"),
        ("helo1.example.net", "rdns1.example.com", "203.0.113.1", "out.example.net"),
    ]
    headers = [
        ("Received", f"from {h} ({r} [{ip}])\r\n\tby {by} (Postfix) with ESMTP id Q{i}; Mon, 1 Jan 2024 10:0{i}:00 +0000")
        for i, (h, r, ip, by) in enumerate(hops)
    ]
    raw = CRLF.join(f"{k}: {v}".encode() for k, v in headers) + CRLF + raw_message(b"x\r\n")
    ctx = MessageContext(raw)
    assert [(hop.helo, hop.rdns, hop.ip, hop.by) for hop in ctx.received] == hops
    assert ctx.received[0].date is not None and ctx.received[0].date.minute == 0
    assert ctx.received[2].date.minute == 2


def test_received_bound():
    headers = [("Received", f"from h{i}.example.net (h{i}.example.net [192.0.2.{i}]) by mx.example.org; Mon, 1 Jan 2024") for i in range(20)]
    ctx = MessageContext(raw_message(b"x\r\n", headers=headers), limits=Limits(max_received=4))
    assert [hop.ip for hop in ctx.received] == [f"192.0.2.{i}" for i in range(4)]
    assert any("Received" in p for p in ctx.problems)


def test_parse_received_exim_form():
    hop = parse_received("from rdns.example.com ([192.0.2.9] helo=helo.example) by mx.example.org with esmtp (Exim 4.96) id 1; Mon, 1 Jan 2024 10:00:00 +0000")
    assert (hop.helo, hop.rdns, hop.ip, hop.by) == ("helo.example", "rdns.example.com", "192.0.2.9", "mx.example.org")


def test_parse_received_ipv6_and_unknown_rdns():
    hop = parse_received("from mail.example.com (unknown [IPv6:2001:db8::5]) by mx.example.org; Mon, 1 Jan 2024")
    assert hop.ip == "2001:db8::5"
    assert hop.rdns is None
    assert hop.helo == "mail.example.com"


def test_parse_received_garbage_gives_nones():
    hop = parse_received("complete nonsense [not-an-ip]")
    assert (hop.helo, hop.rdns, hop.ip, hop.by, hop.date) == (None, None, None, None, None)


def test_received_bad_date_is_none():
    hop = parse_received("from a.example.com (a.example.com [192.0.2.1]) by b.example.org; not a date")
    assert hop.date_text == "not a date"
    assert hop.date is None


# -- attachments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "filename", "sniffed"),
    [(zip_bytes(), "invoice.zip", "application/zip"), (png_bytes(), "photo.png", "image/png")],
)
def test_attachment_metadata(payload, filename, sniffed):
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["Subject"] = "files"
    msg.set_content("see attached")
    # declared as something else, so the sniffed type has to come from the bytes
    msg.add_attachment(payload, maintype="application", subtype="octet-stream", filename=filename)
    ctx = MessageContext(msg.as_bytes())
    assert len(ctx.attachments) == 1
    att = ctx.attachments[0]
    assert att.filename == filename
    assert att.declared_type == "application/octet-stream"
    assert att.sniffed_type == sniffed
    assert att.size == len(payload)
    assert att.sha256 == hashlib.sha256(payload).hexdigest()
    assert "see attached" in ctx.text


def test_attachment_unknown_bytes_sniffed_none_and_text_attachment_not_in_text():
    msg = EmailMessage()
    msg.set_content("body words")
    msg.add_attachment("ATTACHED-TEXT-ONLY", filename="notes.txt")
    msg.add_attachment(b"\x01\x02\x03 nothing known", maintype="application", subtype="x-thing", filename="blob.bin")
    ctx = MessageContext(msg.as_bytes())
    assert [a.filename for a in ctx.attachments] == ["notes.txt", "blob.bin"]
    assert ctx.attachments[1].sniffed_type is None
    assert "ATTACHED-TEXT-ONLY" not in ctx.text
    assert "body words" in ctx.text


def test_encoded_attachment_filename_decoded():
    msg = EmailMessage()
    msg.set_content("x")
    msg.add_attachment(b"data", maintype="application", subtype="pdf", filename="发票.pdf")
    ctx = MessageContext(msg.as_bytes())
    assert ctx.attachments[0].filename == "发票.pdf"


def test_nested_message_rfc822_text_seen():
    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("forwarded inner words")
    outer = EmailMessage()
    outer.set_content("outer words")
    outer.add_attachment(inner)
    ctx = MessageContext(outer.as_bytes())
    assert "forwarded inner words" in ctx.text and "outer words" in ctx.text


# -- zip member names (central directory only) ----------------------------------------------


def zip_of(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.writestr(name, b"MZ" + name.encode())
    return buf.getvalue()


def with_attachment(
    payload: bytes, filename: str, subtype: str = "octet-stream", *, limits: Limits | None = None
) -> MessageContext:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg.set_content("see attached")
    msg.add_attachment(payload, maintype="application", subtype=subtype, filename=filename)
    return MessageContext(msg.as_bytes(), limits=limits)


def test_zip_member_names_listed_in_order():
    names = ["readme.txt", "docs/invoice.pdf.exe"]
    ctx = with_attachment(zip_of(names), "files.dat")  # found by sniffing, not by the name
    assert ctx.attachments[0].members == tuple(names)
    assert not any("zip" in p for p in ctx.problems)


def test_non_zip_attachment_has_no_members():
    ctx = with_attachment(png_bytes(), "photo.png")
    assert ctx.attachments[0].members == ()


def test_corrupt_zip_noted_not_raised():
    # declared and named zip, but only the local header magic and garbage
    ctx = with_attachment(b"PK\x03\x04" + b"\x00garbage" * 50, "broken.zip", "zip")
    assert ctx.attachments[0].members == ()
    assert any("corrupt zip" in p for p in ctx.problems), ctx.problems


def test_zip_with_bad_central_directory_noted():
    data = bytearray(zip_of(["a.exe"]))
    cd = data.find(b"PK\x01\x02")
    data[cd : cd + 4] = b"XXXX"  # central directory entry signature broken
    ctx = with_attachment(bytes(data), "a.zip", "zip")
    assert ctx.attachments[0].members == ()
    assert any("corrupt zip" in p for p in ctx.problems), ctx.problems


def test_zip_member_count_bound():
    limits = Limits(max_attachments=3)
    ctx = with_attachment(zip_of([f"f{i}.txt" for i in range(4)]), "many.zip", limits=limits)
    assert ctx.attachments[0].members == ()
    assert any("4 members" in p for p in ctx.problems), ctx.problems
    ctx = with_attachment(zip_of([f"f{i}.txt" for i in range(3)]), "few.zip", limits=limits)
    assert len(ctx.attachments[0].members) == 3


def test_zip_central_directory_size_bound():
    # two members are within the count, but their 5000-character names make a directory
    # bigger than two members should ever need: not parsed at all
    limits = Limits(max_attachments=2)
    ctx = with_attachment(zip_of(["a" * 5000, "b" * 5000]), "long.zip", limits=limits)
    assert ctx.attachments[0].members == ()
    assert any("names not read" in p for p in ctx.problems), ctx.problems


def test_zip_member_name_cut_at_255():
    ctx = with_attachment(zip_of(["x" * 600 + ".exe"]), "long.zip")
    (name,) = ctx.attachments[0].members
    assert name == "x" * 255


# -- malformed input: never raises, notes what it skipped ---------------------------------


def nested_multipart(depth: int) -> bytes:
    out = [b"From: alice@example.org", b"Subject: deep"]
    head = b""
    for i in range(depth):
        head += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
    tail = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
    return CRLF.join(out) + CRLF + head + b"Content-Type: text/plain\r\n\r\ninnermost words" + tail + CRLF


def many_parts(n: int) -> bytes:
    body = b"".join(b"--XX\r\nContent-Type: application/octet-stream\r\n\r\npart%d\r\n" % i for i in range(n))
    return b'From: alice@example.org\r\nSubject: many\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' + body + b"--XX--\r\n"


MALFORMED = {
    "broken-boundary": (
        b'From: a@example.org\r\nSubject: b\r\nContent-Type: multipart/mixed; boundary="abc"\r\n\r\n'
        b"--xyz\r\nContent-Type: text/plain\r\n\r\nwords behind a wrong boundary\r\n--xyz--\r\n",
        "Boundary",
    ),
    "unterminated-boundary": (
        b'From: a@example.org\r\nContent-Type: multipart/mixed; boundary="abc"\r\n\r\n--abc\r\nContent-Type: text/plain\r\n\r\nunterminated\r\n',
        "Boundary",
    ),
    "bad-base64": (raw_message(b"aGVsbG8gd29y!!!bGQ\r\n", cte="base64"), "Base64"),
    "bad-quoted-printable": (raw_message(b"soft =ZZ and =4\r\n", cte="quoted-printable"), "quoted-printable"),
    "no-headers": (b"no header here, just words\r\nand more words\r\n", "MissingHeaderBodySeparator"),
    "8bit-garbage": (bytes(range(256)) * 8, None),
    "nul-bytes": (raw_message(b"hel\x00lo nul\x00 world\r\n").replace(b"Subject", b"Sub\x00ject"), "NUL"),
    "empty": (b"", None),
    "only-crlf": (CRLF * 50, None),
    "header-without-colon": (b"this is not a header\r\nFrom a@example.org\r\n\r\nbody\r\n", None),
    "multipart-without-boundary": (b"From: a@example.org\r\nContent-Type: multipart/mixed\r\n\r\nno boundary param\r\n", None),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_never_raises_and_notes_problem(name):
    raw, problem = MALFORMED[name]
    ctx = MessageContext(raw)
    touch_all_views(ctx)
    if problem is not None:
        assert any(problem.lower() in p.lower() for p in ctx.problems), ctx.problems


def test_broken_boundary_text_still_visible():
    ctx = MessageContext(MALFORMED["broken-boundary"][0])
    assert "words behind a wrong boundary" in ctx.text


def test_bad_base64_keeps_decodable_text():
    ctx = MessageContext(MALFORMED["bad-base64"][0])
    assert "hello" in ctx.text


def test_bad_quoted_printable_kept_as_written():
    ctx = MessageContext(MALFORMED["bad-quoted-printable"][0])
    assert "=ZZ" in ctx.text


def test_nul_bytes_removed():
    ctx = MessageContext(MALFORMED["nul-bytes"][0])
    assert "hello nul world" in ctx.text
    assert ctx.subject == "test"
    assert "\x00" not in ctx.text


def test_no_headers_body_still_read():
    ctx = MessageContext(MALFORMED["no-headers"][0])
    assert ctx.headers == []
    assert ctx.subject == ""
    assert "no header here" in ctx.text


def test_truncated_at_max_parse_bytes():
    tail_marker = b"TAILMARKERWORD"
    raw = raw_message(b"head words\r\n" + b"x" * 5000 + b"\r\n" + tail_marker + b"\r\n")
    limits = Limits(max_parse_bytes=1024)
    ctx = MessageContext(raw, limits=limits)
    touch_all_views(ctx)
    assert "head words" in ctx.text
    assert "TAILMARKERWORD" not in ctx.text
    assert any(str(len(raw)) in p and "1024" in p for p in ctx.problems)
    assert ctx.digest == hashlib.sha256(raw).hexdigest()  # identity still covers every byte


def test_real_50mb_message_is_bounded():
    """Only the first max_parse_bytes are parsed (how long that takes is benchmarks/fuzz.py's
    slowest scan, not a timed test)."""
    line = b"spam words http://big.example.com/ " * 2 + b"\r\n"
    raw = raw_message(line * (50 * 1024 * 1024 // len(line)))
    assert len(raw) > 50_000_000
    ctx = MessageContext(raw)
    touch_all_views(ctx)
    assert "spam words" in ctx.text
    assert len(ctx.text) <= ctx.limits.max_part_text_bytes
    assert any("only the first" in p for p in ctx.problems)
    assert ctx.url_domains[0] == "example.com"  # (the text cut may leave a URL stump too)


def test_ten_thousand_parts_bounded_by_max_parts():
    limits = Limits()
    ctx = MessageContext(many_parts(10_000), limits=limits)
    touch_all_views(ctx)
    assert ctx.part_count == limits.max_parts
    assert len(ctx.attachments) == limits.max_attachments
    assert any("MIME parts" in p for p in ctx.problems)
    assert any("attachments" in p for p in ctx.problems)
    assert len(ctx.problems) < 10  # one note per bound, not one per skipped part


def test_small_part_bound():
    ctx = MessageContext(many_parts(50), limits=Limits(max_parts=10, max_attachments=100))
    assert ctx.part_count == 10
    assert len(ctx.attachments) == 9  # the container is the first part


def test_thousand_deep_nesting_never_raises():
    ctx = MessageContext(nested_multipart(1000))
    touch_all_views(ctx)
    assert ctx.subject == "deep"  # headers survive whatever the body parser did
    assert ctx.problems


def test_nesting_deeper_than_max_depth_skipped_and_noted():
    limits = Limits(max_depth=5)
    ctx = MessageContext(nested_multipart(30), limits=limits)
    touch_all_views(ctx)
    assert ctx.part_count <= limits.max_depth + 1
    assert "innermost words" not in ctx.text
    assert any("nesting deeper than 5" in p for p in ctx.problems)


def test_nesting_within_max_depth_read():
    ctx = MessageContext(nested_multipart(5))
    assert "innermost words" in ctx.text
    assert ctx.part_count == 6


def test_text_truncated_to_max_part_text_bytes():
    ctx = MessageContext(raw_message(b"a" * 5000 + CRLF), limits=Limits(max_part_text_bytes=100))
    assert len(ctx.text_parts[0].text) == 100
    assert any("truncated" in p for p in ctx.problems)


def test_max_total_text_bytes_across_parts():
    msg = EmailMessage()
    msg.set_content("first " * 100)
    msg.add_alternative("<p>" + "second " * 100 + "</p>", subtype="html")
    ctx = MessageContext(msg.as_bytes(), limits=Limits(max_total_text_bytes=200))
    touch_all_views(ctx)
    assert "second" not in ctx.text
    assert any("max_total_text_bytes" in p for p in ctx.problems)


# -- per-recipient views ----------------------------------------------------------------


def test_for_user_shares_parsed_views():
    ctx = MessageContext(html_message(), Envelope(rcpt_to=("a@example.net", "b@example.net")))
    alice = ctx.for_user("a@example.net")
    assert alice.user == "a@example.net" and ctx.user is None
    assert alice.envelope is ctx.envelope and alice.raw is ctx.raw
    # computed on the copy, seen by the original (and the other way round)
    assert alice.attachments is ctx.attachments
    assert ctx.text is alice.text
    assert ctx.urls is alice.urls
    bob = ctx.for_user("b@example.net")
    assert bob.received is alice.received
    assert bob.problems is ctx.problems


def test_cached_builds_once_across_users():
    ctx = MessageContext(raw_message(b"x\r\n"))
    calls = []

    def build():
        calls.append(1)
        return ["token"]

    first = ctx.for_user("a@example.net").cached("tokens", build)
    second = ctx.for_user("b@example.net").cached("tokens", build)
    assert first is second
    assert len(calls) == 1


def test_encoded_word_mixed_with_raw_8bit_subject():
    encoded = email.header.Header("发票", "utf-8").encode().encode()
    raw = raw_message(b"x\r\n").replace(b"Subject: test", b"Subject: " + "中文".encode() + b" " + encoded)
    subject = MessageContext(raw).subject
    assert "中文" in subject and "发票" in subject


def test_rfc2231_parameters_in_a_codec_that_cannot_replace_hide_nothing():
    """Found by fuzzing: ``boundary*=idna''..`` made the stdlib parser raise (the whole body
    was read unsplit, its attachment unseen) and an idna file name lost its part."""
    boundary = (b"Content-Type: multipart/mixed; boundary*=idna''b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
                b"--b1\r\nContent-Disposition: attachment; filename=invoice.exe\r\n\r\nMZ\r\n--b1--\r\n")
    ctx = MessageContext(b"From: a@example.org\r\n" + boundary)
    assert ctx.text == "hello" and [a.filename for a in ctx.attachments] == ["invoice.exe"] and not ctx.problems
    name = (b"From: a@example.org\r\nContent-Type: application/zip\r\n"
            b"Content-Disposition: attachment; filename*0*=idna''%FF; filename*1=x.exe\r\n\r\nPK")
    ctx = MessageContext(name)
    assert [a.filename[-5:] for a in ctx.attachments] == ["x.exe"]


@pytest.mark.parametrize(
    "headers, expected",
    [
        (b"Content-Type: application/octet-stream; NAME=\"Report.PDF\"\r\n", "Report.PDF"),
        (b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; FileName=a.exe\r\n", "a.exe"),
        (b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=utf-8''%E5%8F%91.pdf\r\n", "\u53d1.pdf"),
        (b"Content-Type: application/octet-stream; charset=x\r\nContent-Disposition: attachment\r\n", ""),
    ],
)
def test_a_parts_file_name_is_found_however_its_parameter_is_written(headers, expected):
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n" + headers + b"\r\nAAAA\r\n--b--\r\n"
    )
    ctx = MessageContext(raw)
    assert [a.filename for a in ctx.attachments] == [expected]
