"""Bounds on everything message content controls, the parser's own safety limits.

Filled from the configuration's [limits] section; lives with the parser so the message views
need nothing from the configuration.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Limits"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds on everything message content controls; past a bound, parts are skipped and noted."""

    max_parse_bytes: int = 8 * 1024 * 1024  # only this much is MIME-parsed; the rest is noted
    max_header_bytes: int = 16 * 1024  # one header value
    max_parts: int = 500
    max_depth: int = 20
    max_headers: int = 500
    max_part_text_bytes: int = 512 * 1024  # decoded text kept per text part
    max_total_text_bytes: int = 2 * 1024 * 1024
    max_html_bytes: int = 1024 * 1024
    max_urls: int = 500
    max_received: int = 50
    max_attachments: int = 100
    max_tokens: int = 20000
