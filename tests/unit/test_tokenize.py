"""Tokenizer: words, prefixes by origin, CJK bigrams, bounds, stable hashing."""

from __future__ import annotations

import subprocess
import sys
from email.mime.text import MIMEText

import numpy as np

from mailguard.config import Limits
from mailguard.message import MessageContext
from mailguard.classifier.tokens import hash_tokens, message_tokens, words


def tokens_of(text: str) -> set[str]:
    out: set[str] = set()
    words(text, out)
    return out


def test_words_lowercased_trimmed_and_bounded():
    out = tokens_of("Cheap PILLS!! now... a $100 'offer' " + "x" * 55)
    assert {"cheap", "pills", "now", "$100", "offer"} <= out
    assert "a" not in out  # single characters carry nothing
    assert "skip:x:50" in out and not any(len(t) > 40 for t in out)


def test_cjk_becomes_character_bigrams_not_single_characters():
    assert tokens_of("代开发票") == {"代开", "开发", "发票"}
    mixed = tokens_of("invoice 发票 now")
    assert {"invoice", "发票", "now"} <= mixed
    assert "发" not in mixed and "票" not in mixed


def test_message_tokens_carry_their_origin():
    msg = MIMEText("visit http://www.shop.example.co.uk/buy/now?id=7 today", "plain", "utf-8")
    msg["Subject"] = "Big Sale"
    msg["From"] = "Shop News <news@shop.example.co.uk>"
    msg["X-Mailer"] = "MassMailer 3"
    msg["Message-ID"] = "<AB12cd@shop.example.co.uk>"
    msg["Received"] = "from relay.example.org (relay.example.org [192.0.2.7]) by mx.example.net"
    tokens = message_tokens(MessageContext(msg.as_bytes()))
    assert {"subj:big", "subj:sale", "visit", "today"} <= tokens
    assert {"from:addr:news@shop.example.co.uk", "from:dom:shop.example.co.uk", "from:name:shop"} <= tokens
    assert {"x-mailer:massmailer 3", "x-mailer:w:massmailer", "hdr:x-mailer"} <= tokens
    assert {"mid:dom:shop.example.co.uk", "mid:shape:<A9a"} <= tokens
    assert {"rcvd:host:relay.example.org", "rcvd:ip:192.0.2.7", "rcvd:ip24:192.0.2"} <= tokens
    assert {"url:host:www.shop.example.co.uk", "url:dom:example.co.uk", "url:p:buy", "url:p:id"} <= tokens
    assert {"part:text/plain", "ct:text/plain", "ct:charset:utf-8"} <= tokens


def test_cjk_message_in_gb2312():
    msg = MIMEText("本公司长期代开各类正规发票", "plain", "gb2312")
    tokens = message_tokens(MessageContext(msg.as_bytes()))
    assert {"发票", "代开", "ct:charset:gb2312"} <= tokens


def test_token_count_is_bounded():
    body = " ".join(f"w{i:05d}" for i in range(3000))
    ctx = MessageContext(MIMEText(body).as_bytes(), limits=Limits(max_tokens=500))
    assert len(message_tokens(ctx)) == 500
    assert any("distinct tokens" in p for p in ctx.problems)


def test_hash_ids_are_stable_across_processes():
    tokens = ["alpha", "beta", "subj:gamma", "发票"]
    here = hash_tokens(tokens)
    code = f"from mailguard.classifier.tokens import hash_tokens; print(hash_tokens({tokens!r}).tolist())"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert [int(x) for x in there.strip()[1:-1].split(",")] == [int(x) for x in here]
    assert len(here) == 4 and here.dtype == np.uint64 and (np.diff(here.astype(np.float64)) > 0).all()
    assert len(hash_tokens(tokens + tokens)) == 4
    assert len(hash_tokens([])) == 0
