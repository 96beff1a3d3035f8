"""Keep secrets out of what we show and store: server replies can echo what they were sent."""

from __future__ import annotations

import base64
from collections.abc import Iterable

MASK = "***"


def scrub(text: str, secrets: Iterable[str | None], mask: str = MASK) -> str:
    """`text` with every occurrence of each non-empty secret replaced by `mask`."""
    # longest first: a secret that contains another must not be left half masked
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, mask)
    return text


def login_forms(username: str | None, password: str | None) -> tuple[str, ...]:
    """The password as it travels in SMTP AUTH (plain and base64, as LOGIN and PLAIN send it), for
    scrub(): a server that echoes a failed AUTH line back shows the base64 form."""
    if not password:
        return ()
    plain = f"\0{username or ''}\0{password}"
    return (password, *(base64.b64encode(s.encode()).decode("ascii") for s in (password, plain)))
