"""Splitting text into the words of a ``[...]+`` pattern, fast for ASCII text.

``regex.findall`` tries the pattern at every position of the text; for a pattern that is one
character class repeated, a character belongs to a word exactly when it matches the pattern
alone, so for ASCII text (most mail) mapping every other ASCII character to a space and
splitting gives the same list about twice as fast. The table is derived from the regex itself,
so the two cannot disagree; non-ASCII text goes through the regex.
"""

from __future__ import annotations

import re

__all__ = ["WordPattern"]


class WordPattern:
    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern)
        self._not_word = str.maketrans({c: " " for c in map(chr, range(128)) if not self.regex.fullmatch(c)})

    def findall(self, text: str) -> list[str]:
        """``self.regex.findall(text)``."""
        if text.isascii():
            return text.translate(self._not_word).split()
        return self.regex.findall(text)
