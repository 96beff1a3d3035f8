"""AddressValidator (each domain validated once) against email-validator itself: same decisions,
same normalized addresses, same messages, on tricky addresses and on every address in the corpus."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email

from newsletter.addresses import AddressValidator

CORPUS = Path(__file__).parent / "corpus" / "lists"

TRICKY = [
    "user@example.com", "User.Name+tag@Example.COM", "a@b.co", "x@EXAMPLE.com", "x@example.com.",
    "Postmaster@example.com", "INFO@Example.com", "www@example.com", "abuse@example.org",
    "straße@example.com", "üser@example.com", "пользователь@пример.рф", "anna@пример.рф",
    "anna@xn--e1afmkfd.xn--p1ai", "anna@XN--E1AFMKFD.XN--P1AI", "anna@ПРИМЕР.РФ", "a@bücher.de",
    "a@xn--bcher-kva.de", "a@ﬁle.com", "a@Ⅻ.com", "a@ex\u0301ample.com", "e\u0301@example.com",
    "é@example.com", '"quoted"@example.com', '"with space"@example.com', '"a@b"@example.com',
    "a..b@example.com", ".a@example.com", "a.@example.com", "a@b@example.com", "@example.com",
    "user@", "user", "", "user@localhost", "user@example", "user@[127.0.0.1]", "user@[IPv6:::1]",
    "user@-example.com", "user@example-.com", "user@exa_mple.com", "user@example..com",
    "user@.example.com", "user@example.invalid", "user@example.test", "user@sub.example.local",
    "user@example.onion", "user@123.123.123.123", "user@1.2.3.4.com", "user@e.x.a.m.p.l.e",
    "Name <user@example.com>", "<user@example.com>", "user@example.com>", "user @example.com",
    "user@ example.com", "us\ter@example.com", "user@exam\tple.com", "a" * 64 + "@example.com",
    "a" * 65 + "@example.com", "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com",
    "a" * 64 + "@" + ("b" * 60 + ".") * 3 + "com", "a" * 60 + "@" + ("b" * 61 + ".") * 3 + "co",
    "a" * 40 + "@" + ("ü" * 50 + ".") * 3 + "de", "!#$%&'*+/=?^_`{|}~-@example.com",
    "a/b@example.com", "a\\b@example.com", "a(b)@example.com", "a,b@example.com", "a;b@example.com",
    "a:b@example.com", "a<b@example.com", "a[b]@example.com", "user@exa mple.com",
    "user@example.com\u200b", "user\u200b@example.com", "user@\u00a0example.com", "user@ex\u00adample.com",
    "user@ex%41mple.com", "user@EXAMPLE.COM", "user@Example.Com", "ß@ß.de", "a@xn--.com",
    "a@xn--zz.com", "a@1234567890.com", "a@example.c", "a@example.co1", "a@a-b.c-d.com",
    "a@127.0.0.1", "a@example.arpa", "a@ex\u2024ample.com", "a@example\u3002com", "a@example\uff0ecom",
    "\ud800@example.com", "a@\ud800.com", "a@example.com\x00", "a@e\u0338xample.com", "a@e\u200dx.com",
]


def _corpus_addresses() -> list[str]:
    found = []
    for path in sorted(CORPUS.glob("*.csv")):
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            for row in csv.reader(f):
                found += [cell.strip() for cell in row if "@" in cell]
    return found


def _reference(email: str) -> tuple[str, str] | str:
    try:
        valid = validate_email(email, check_deliverability=False)
    except EmailNotValidError as e:
        return str(e)
    return valid.normalized, valid.local_part


def _ours(check: AddressValidator, email: str) -> tuple[str, str] | str:
    try:
        valid = check(email)
    except EmailNotValidError as e:
        return str(e)
    return valid.normalized, valid.local_part


@pytest.mark.parametrize("email", TRICKY + _corpus_addresses())
def test_same_decision_as_email_validator(email: str) -> None:
    check = AddressValidator()
    first = _ours(check, email)
    assert first == _reference(email)
    assert _ours(check, email) == first  # the domain now comes from the cache


def test_cached_domains_give_the_same_answers_for_their_other_addresses() -> None:
    check = AddressValidator()
    domains = ["example.com", "EXAMPLE.com", "пример.рф", "xn--e1afmkfd.xn--p1ai", "bücher.de",
               "example", "-bad.com", "example.invalid", "[127.0.0.1]", "ex\u0301ample.com"]
    locals_ = ["a", "Bob.Smith", "INFO", "x+y", "a..b", "é", '"q"', "a" * 64, "a" * 65, ""]
    for domain in domains:
        for local in locals_:
            email = f"{local}@{domain}"
            assert _ours(check, email) == _reference(email), email
    assert set(check.domains) <= set(domains)


@pytest.mark.parametrize("email", TRICKY + _corpus_addresses())
def test_the_key_is_address_key_of_the_normalized_address(email: str) -> None:
    from newsletter.subscribers import address_key
    try:
        valid = AddressValidator()(email)
    except EmailNotValidError:
        return
    assert valid.key == address_key(valid.normalized)
