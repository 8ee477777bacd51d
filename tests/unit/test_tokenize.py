"""Tokenizer: prefixes, sparse bigrams, CJK bigrams, stable hashing."""

from __future__ import annotations

import subprocess
import sys
from email.mime.text import MIMEText

import numpy as np

from mailguard.message import MessageContext
from mailguard.tokenize import hash_tokens, message_tokens, text_tokens


def test_words_are_lowercased_and_bigrams_carry_their_gap():
    tokens = text_tokens("Cheap Pills now", bigrams=True)
    assert {"cheap", "pills", "now"} <= set(tokens)
    assert any(t.endswith("cheap pills") for t in tokens)
    assert any(t.endswith("cheap now") for t in tokens)
    adjacent = next(t for t in tokens if t.endswith("cheap pills"))
    skip = next(t for t in tokens if t.endswith("cheap now"))
    assert adjacent != skip.replace("now", "pills")  # the gap is part of the token


def test_cjk_becomes_character_bigrams_not_single_characters():
    tokens = text_tokens("代开发票", bigrams=False)
    assert tokens == ["代开", "开发", "发票"]
    mixed = text_tokens("invoice 发票 now", bigrams=False)
    assert "发票" in mixed and "invoice" in mixed and "now" in mixed


def test_message_tokens_cover_subject_headers_urls(tmp_path):
    msg = MIMEText("visit http://www.shop.example.co.uk/buy/now today", "plain", "utf-8")
    msg["Subject"] = "Big Sale"
    msg["From"] = "Shop <news@shop.example.co.uk>"
    msg["X-Mailer"] = "MassMailer 3"
    tokens = set(message_tokens(MessageContext(msg.as_bytes())))
    assert {"subj:big", "subj:sale"} <= tokens
    assert any(t.startswith("h:from:") and "shop.example.co.uk" in t for t in tokens)
    assert any(t.startswith("h:mailer:") and "massmailer" in t for t in tokens)
    assert "url:dom:example.co.uk" in tokens
    assert "url:path:buy" in tokens


def test_cjk_message_tokenized_in_gb2312():
    text = "本公司长期代开各类正规发票"
    msg = MIMEText(text, "plain", "gb2312")
    tokens = message_tokens(MessageContext(msg.as_bytes()))
    assert "发票" in tokens and "代开" in tokens


def test_hash_ids_are_stable_across_processes():
    tokens = ["alpha", "beta", "subj:gamma", "发票"]
    here = hash_tokens(tokens)
    code = f"from mailguard.tokenize import hash_tokens; print(hash_tokens({tokens!r}).tolist())"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert [int(x) for x in there.strip()[1:-1].split(",")] == [int(x) for x in here]
    assert len(here) == 4 and here.dtype == np.uint64 and (np.diff(here.astype(np.float64)) > 0).all()
    assert len(hash_tokens(tokens + tokens)) == 4
    assert len(hash_tokens([])) == 0
