"""Address validation at list speed: email-validator's decisions, each distinct domain checked once.

email-validator spends most of its ~100 µs an address on the part after the @ (IDNA, UTS-46 tables),
and a list has few distinct domains. `AddressValidator` takes the common shape -- a plain ASCII
dot-atom before the @ -- on a fast path: the local part is checked with email-validator's own
dot-atom pattern, the domain's result is remembered, and the address is rebuilt exactly as
email-validator builds its normalized form. Anything else (quotes, non-ASCII or role names before the
@, a domain that fails, an address near the length limit) goes to email-validator itself, so every
accept, reject and message is the library's own (tests/test_addresses.py compares the two).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import NamedTuple

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT, EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_domain_name

__all__ = ["AddressValidator", "Address", "EmailNotValidError", "address_key"]
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def address_key(email: str) -> str:
    """The one identity of an address: de-duplication, the send record and unsubscribe tokens.

    The domain is compared case-insensitively; the local part only in A-Z, so that distinct
    mailboxes such as straße@ and strasse@ stay apart (str.casefold() would merge them).
    """
    if email.isascii():  # str.lower() of ASCII text changes A-Z only: the same key, at a fraction of the cost
        return email.lower()
    email = unicodedata.normalize("NFC", email)  # as email-validator normalizes it
    local, at, domain = email.rpartition("@")
    if not at:
        return email.translate(_ASCII_LOWER)
    return f"{local.translate(_ASCII_LOWER)}@{domain.lower()}"

_ROLE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)  # email-validator lower-cases these: slow path
_MAX_DOMAINS = 20_000  # remembered domains; a list of a million distinct domains stays bounded


class Address(NamedTuple):
    """What the list needs of a valid address (the subset of email-validator's ValidatedEmail);
    a named tuple: made once per row, it must be cheap to make."""

    normalized: str
    local_part: str
    key: str  # subscribers.address_key(normalized)


_new = tuple.__new__  # Address(...) without the named tuple's own __new__, a Python call: once a row


@dataclass
class _Domain:
    """One domain as email-validator normalizes it, and how much it adds to an address's length."""

    at_domain: str  # "@" and the domain as email-validator normalizes it
    at_key: str | None  # "@" and the domain as address_key writes it, when that needs no Unicode normalization
    extra: int  # the longest of the three forms email-validator length-checks, minus the local part


@dataclass
class AddressValidator:
    """validate_email(address, check_deliverability=False), with each domain's work done once.

    Owned by one reading of a list (no module-level state): a long-running process never sees a
    stale cache, and the cache is capped at _MAX_DOMAINS entries."""

    domains: dict[str, _Domain | None] = field(default_factory=dict)  # None: the domain fails

    def _domain(self, part: str) -> _Domain | None:
        try:
            info = validate_email_domain_name(part, test_environment=email_validator.TEST_ENVIRONMENT,
                                              globally_deliverable=email_validator.GLOBALLY_DELIVERABLE)
        except Exception:  # noqa: BLE001 - whatever it is, email-validator itself will say it
            found = None
        else:
            # the original, the normalized and the IDNA-ASCII forms are each checked in UTF-8 bytes
            extra = 1 + max(len(part.encode()), len(info["domain"].encode()), len(info["ascii_domain"]))
            domain = info["domain"]
            found = _Domain("@" + domain, "@" + domain.lower() if domain.isascii() else None, extra)
        if len(self.domains) >= _MAX_DOMAINS:
            self.domains.clear()
        self.domains[part] = found
        return found

    def __call__(self, email: str) -> Address:
        """The address as email-validator normalizes it; raises EmailNotValidError with its message."""
        local, at, domain_part = email.partition("@")
        # str.lower() of ASCII text changes A-Z only: what address_key does to a local part
        if (at and domain_part and local.isascii() and (lower := local.lower()) not in _ROLE_NAMES
                and (local.isalnum() or DOT_ATOM_TEXT.match(local))):  # ASCII letters and digits are atext
            domains = self.domains
            domain = domains[domain_part] if domain_part in domains else self._domain(domain_part)
            if domain is not None and len(local) + domain.extra <= EMAIL_MAX_LENGTH:
                normalized = local + domain.at_domain
                key = lower + domain.at_key if domain.at_key is not None else address_key(normalized)
                return _new(Address, (normalized, local, key))
        valid = validate_email(email, check_deliverability=False)  # the rare shapes, and every error
        return Address(valid.normalized, valid.local_part, address_key(valid.normalized))
