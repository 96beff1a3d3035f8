"""Text from a request, made safe for a log line: a path or a value may hold a line break (a forged
log line), an escape sequence (a terminal's colours or title), or be very long."""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str, limit: int = 300) -> str:
    """`text` as part of one log line: control characters written as escapes (`\\n`, `\\x1b`), and
    cut to `limit` characters."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
