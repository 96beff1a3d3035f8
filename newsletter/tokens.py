"""Unsubscribe tokens: what the sender signs into each reader's link and the unsubscribe endpoint
verifies. A token is the HMAC-SHA256 of subscribers.address_key(email) keyed with NEWSLETTER_SECRET,
cut to 128 bits and written in base64url (22 characters): unguessable per reader, stable across sends.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from base64 import urlsafe_b64encode
from collections.abc import Callable

from .subscribers import address_key

_BLOCK = 64  # SHA-256's block size in bytes
_IPAD = bytes(x ^ 0x36 for x in range(256))  # translate tables: every key byte XOR the pad
_OPAD = bytes(x ^ 0x5C for x in range(256))
TOKEN_LENGTH = 22  # 16 bytes in base64url, without padding
_TOKEN = re.compile(r"[A-Za-z0-9_-]{%d}" % TOKEN_LENGTH)


def unsubscribe_token(secret: str, email: str) -> str:
    """The token for `email` (compared as address_key does: case-insensitive in A-Z and domain)."""
    return token_signer(secret)(address_key(email))


def token_signer(secret: str) -> Callable[[str], str]:
    """A function from an address key (subscribers.address_key) to its token, the key prepared once:
    what the send loop calls per reader."""
    # surrogateescape: a key read from the environment may hold bytes that are not UTF-8
    key = secret.encode("utf-8", "surrogateescape")
    # HMAC (RFC 2104) with its two keyed SHA-256 states computed once and copied per reader: a third
    # of hmac.digest()'s cost, which sets the key up again on every call
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(key.translate(_IPAD))
    outer = hashlib.sha256(key.translate(_OPAD))

    def sign(address: str) -> str:
        i = inner.copy()
        i.update(address.encode())
        o = outer.copy()
        o.update(i.digest())
        return urlsafe_b64encode(o.digest()[:16]).rstrip(b"=").decode()

    return sign


def verify_unsubscribe_token(secret: str, email: object, token: object) -> bool:
    """True when `token` was issued for `email` with `secret`; False for anything else, malformed
    input included (None, not a string, non-ASCII, wrong length), never an exception."""
    if not (isinstance(secret, str) and secret and isinstance(email, str) and isinstance(token, str)):
        return False
    # the shape check looks only at the token, never at the expected value: no timing leak
    if not _TOKEN.fullmatch(token):
        return False
    try:
        expected = unsubscribe_token(secret, email)
    except UnicodeError:  # e.g. a lone surrogate in an address taken from a URL
        return False
    return hmac.compare_digest(expected.encode("ascii"), token.encode("ascii"))
