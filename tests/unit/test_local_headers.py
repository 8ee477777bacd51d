"""Headers a mail store or a filter adds are not the sender's evidence; the Return-Path
delivery writes is, and mail scanned before delivery gets it from its envelope."""

from __future__ import annotations

from mailguard.classifier.features import byte_grams, text_features
from mailguard.classifier.tokens import message_tokens
from mailguard.message import Envelope, MessageContext
from mailguard.message.local_headers import delivered_return_path, is_local_header, without_local_headers

SENT = b"From: a@example.org\r\nSubject: hello\r\nX-Mailer: Mutt\r\n\r\nbody text\r\n"


def delivered(raw: bytes) -> bytes:
    """``raw`` as a mailbox holds it after a filter and the user's mail client had it."""
    head, body = raw.split(b"\r\n\r\n", 1)
    stamps = (
        b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=7.1\r\n\tstyle=mailguard\r\n"
        b"X-Mailguard-Report: action=junk\r\nStatus: RO\r\nX-Keywords: $Label1\r\nX-UID: 17\r\n"
    )
    first, others = head.split(b"\r\n", 1)
    return first + b"\r\n" + stamps + others + b"\r\n\r\n" + body


def test_names_of_mailbox_and_filter_headers():
    for name in ("status", "x-status", "x-keywords", "x-uid", "lines", "content-length", "x-spam-flag", "x-spam", "x-mailguard-report", "x-virus-scanned"):
        assert is_local_header(name), name
    for name in ("from", "received", "x-mailer", "subject", "list-id", "x-originating-ip"):
        assert not is_local_header(name), name


def test_their_lines_are_dropped_with_continuations_and_nothing_else():
    assert without_local_headers(delivered(SENT)) == SENT
    assert without_local_headers(SENT) == SENT
    lf = delivered(SENT).replace(b"\r\n", b"\n")
    assert without_local_headers(lf) == SENT.replace(b"\r\n", b"\n")
    body_only = b"no headers at all"
    assert without_local_headers(body_only) == body_only


def test_the_classifier_reads_a_delivered_copy_as_the_sent_message():
    sent, kept = MessageContext(SENT), MessageContext(delivered(SENT))
    assert message_tokens(kept) == message_tokens(sent)
    features, original = text_features(kept), text_features(sent)
    assert (features.tokens == original.tokens).all() and (features.grams == original.grams).all()
    assert len(byte_grams(delivered(SENT))) > len(original.grams)  # the stamps would have added 4-grams


def test_a_limit_gives_the_first_bytes_of_the_whole_answer():
    raw = delivered(SENT) + b"more body\r\n" * 50
    whole = without_local_headers(raw)
    for limit in (0, 1, 10, 40, len(whole) - 1, len(whole), len(whole) + 100):
        assert without_local_headers(raw, limit) == whole[:limit], limit


def test_work_is_bounded_on_a_message_of_local_headers_only():
    flood = b"X-Spam-Flag: YES\r\n" * 5000 + b"\r\nbody\r\n"
    kept = without_local_headers(flood)
    assert kept.startswith(b"X-Spam-Flag: YES\r\n")  # past the bound the rest is kept as it is
    assert len(kept) < len(flood)


def test_the_blank_line_stays_when_the_last_header_is_dropped():
    assert without_local_headers(b"From: a\nX-Keywords: x\n\nbody\n") == b"From: a\n\nbody\n"
    assert without_local_headers(b"From: a\r\nStatus: RO\r\n\r\nbody") == b"From: a\r\n\r\nbody"


def test_a_message_scanned_before_delivery_reads_as_its_delivered_copy():
    """The milter's view (envelope sender, no Return-Path yet) gives the features of the copy
    the delivery agent stores (Return-Path first), which is what training and reports read."""
    for sender in ("a@example.org", ""):  # "" is the null sender <>
        stored = MessageContext(b"Return-Path: <" + sender.encode() + b">\r\n" + SENT)
        live = MessageContext(SENT, Envelope(client_ip="192.0.2.7", mail_from=sender))
        assert delivered_return_path(live) == f"<{sender}>" and delivered_return_path(stored) is None
        assert message_tokens(live) == message_tokens(stored)
        features, delivered_features = text_features(live), text_features(stored)
        assert (features.tokens == delivered_features.tokens).all() and (features.grams == delivered_features.grams).all()
    assert "return-path:dom:example.org" in message_tokens(MessageContext(SENT, Envelope(mail_from="a@example.org")))


def test_a_return_path_already_there_or_no_envelope_sender_adds_nothing():
    stored = b"Return-Path: <bounce@list.example>\r\n" + SENT
    with_envelope = MessageContext(stored, Envelope(mail_from="someone@else.example"))
    assert delivered_return_path(with_envelope) is None
    assert message_tokens(with_envelope) == message_tokens(MessageContext(stored))
    assert delivered_return_path(MessageContext(SENT, Envelope(client_ip="192.0.2.7"))) is None
    assert message_tokens(MessageContext(SENT, Envelope(client_ip="192.0.2.7"))) == message_tokens(MessageContext(SENT))


def test_an_envelope_sender_of_any_length_or_text_is_read_safely():
    path = delivered_return_path(MessageContext(SENT, Envelope(mail_from="x" * 100_000 + "@example.org")))
    assert path is not None and len(path) <= 1000
    for odd in ("\udc80\ud800@example.org", "ü@bücher.example", "a\r\nX-Injected: 1"):
        features = text_features(MessageContext(SENT, Envelope(mail_from=odd)))
        assert len(features.grams) > len(text_features(MessageContext(SENT)).grams)


def test_the_supplied_return_path_ends_as_the_message_lines_do():
    lf = SENT.replace(b"\r\n", b"\n")
    stored = text_features(MessageContext(b"Return-Path: <a@example.org>\n" + lf))
    live = text_features(MessageContext(lf, Envelope(mail_from="a@example.org")))
    assert (live.grams == stored.grams).all()
