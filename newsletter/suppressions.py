"""Who must not get mail any more, and why: unsubscribes, bounces, complaints, invalid and manual
suppressions, kept in the state store beside the send record. Every send (the dry run included; test
sends to the preview inbox excluded) skips a suppressed address before any provider sees it.

Also the provider's events (delivered, open, click, ...), de-duplicated on the provider's event id.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

from .addresses import AddressValidator, EmailNotValidError
from .errors import NewsletterError
from .ledger import key_of
from .store.db import Database, now

REASONS = ("unsubscribed", "bounced", "complained", "invalid", "manual")
SOURCES = ("link", "one-click", "webhook", "sendgrid-sync", "cli")


@dataclass(frozen=True)
class Suppression:
    email: str
    reason: str
    source: str
    created_at: str
    issue: str | None = None
    detail: str | None = None


class Suppressions:
    """The suppression list of one state store."""

    def __init__(self, db: Database):
        self.db = db

    def add(self, email: str, reason: str, source: str, *, issue: str | None = None,
            detail: str | None = None, at: str | None = None) -> bool:
        """Suppress `email`; True if it was not suppressed yet. Idempotent: the first reason stays
        (a reader who unsubscribed and later bounced is still an unsubscribe)."""
        _check(reason, source)
        # one statement, atomic on its own (the connection autocommits; inside a caller's
        # transaction it joins it): for the one-click service, one round trip instead of three
        inserted = self.db.execute(
            """INSERT INTO suppressions (email_key, email, reason, source, issue, detail, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (email_key) DO NOTHING RETURNING email_key""",
            (_key(email), email, reason, source, issue, detail, at or now()))
        return bool(inserted)

    def remove(self, email: str) -> bool:
        """Lift a suppression (the reader asked to come back); True if there was one."""
        removed = self.db.execute("DELETE FROM suppressions WHERE email_key = ? RETURNING email_key",
                                  (_key(email),))  # one statement: atomic on its own
        return bool(removed)

    def reasons(self, keys: Iterable[str]) -> dict[str, str]:
        """key -> reason for each of `keys` (send-record keys) that is suppressed."""
        if not self.db.execute("SELECT 1 FROM suppressions LIMIT 1"):  # none yet: nothing to look up
            return {}
        return dict(self.db.rows_in("SELECT email_key, reason FROM suppressions WHERE email_key IN ({marks})", keys))

    def get(self, email: str) -> Suppression | None:
        rows = self.db.execute(
            "SELECT email, reason, source, created_at, issue, detail FROM suppressions WHERE email_key = ?",
            (_key(email),))
        return Suppression(*rows[0]) if rows else None

    def __iter__(self) -> Iterator[Suppression]:
        rows = self.db.execute(
            "SELECT email, reason, source, created_at, issue, detail FROM suppressions ORDER BY created_at, email")
        return (Suppression(*r) for r in rows)

    def count(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT reason, count(*) FROM suppressions GROUP BY reason"))

    def all(self, reason: str | None = None) -> Iterator[Suppression]:
        """Every suppression, oldest first; only those for `reason` when given."""
        if reason is None:
            return iter(self)
        rows = self.db.execute(
            "SELECT email, reason, source, created_at, issue, detail FROM suppressions WHERE reason = ? "
            "ORDER BY created_at, email", (reason,))
        return (Suppression(*r) for r in rows)

    def find(self, keys: Iterable[str]) -> dict[str, Suppression]:
        """key -> the whole suppression, for each of `keys` that is suppressed."""
        rows = self.db.rows_in("SELECT email_key, email, reason, source, created_at, issue, detail FROM suppressions "
                               "WHERE email_key IN ({marks})", keys)
        return {key: Suppression(*row) for key, *row in rows}

    def add_many(self, items: Iterable[Suppression]) -> list[Suppression]:
        """Suppress many at once, in one transaction; returns those that were new (an address
        already suppressed keeps its first reason, as with add())."""
        new: dict[str, Suppression] = {}
        items = list(items)
        for s in items:
            _check(s.reason, s.source)
        validator = AddressValidator()  # each domain checked once
        keys = [_key(s.email, validator) for s in items]
        with self.db.transaction():
            known = self.reasons(keys)
            for s, key in zip(items, keys):
                if key not in known and key not in new:
                    new[key] = s
            self.db.executemany(
                """INSERT INTO suppressions (email_key, email, reason, source, issue, detail, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (email_key) DO NOTHING""",
                [(k, s.email, s.reason, s.source, s.issue, s.detail, s.created_at) for k, s in new.items()])
        return list(new.values())


class Events:
    """Provider events, each kept once (a webhook may deliver the same event twice)."""

    def __init__(self, db: Database):
        self.db = db

    def add(self, event_id: str, provider: str, kind: str, email: str | None, issue: str | None,
            occurred_at: str | None) -> bool:
        """Keep one event; False if this event id was already kept."""
        inserted = self.db.execute(  # one statement: atomic on its own, or part of the caller's transaction
            """INSERT INTO events (event_id, provider, kind, email_key, issue, occurred_at, received_at)
               VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING RETURNING event_id""",
            (event_id, provider, kind, key_of(email) if email else None, issue, occurred_at, now()))
        return bool(inserted)

    def counts(self, issue: str) -> dict[str, int]:
        """kind -> how many events of that kind an issue has had (delivered, open, click, ...)."""
        return dict(self.db.execute("SELECT kind, count(*) FROM events WHERE issue = ? GROUP BY kind", (issue,)))

    def cursor(self, name: str) -> str | None:
        rows = self.db.execute("SELECT value FROM sync_state WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def set_cursor(self, name: str, value: str) -> None:
        self.db.execute("""INSERT INTO sync_state (name, value) VALUES (?, ?)
                           ON CONFLICT (name) DO UPDATE SET value = excluded.value""", (name, value))


def _key(email: str, validator: AddressValidator | None = None) -> str:
    """The key of an address however it is written, as the lists key it: a webhook or a caller may
    give the domain in its IDNA form (anna@xn--e1afmkfd.xn--p1ai), which a list reads as
    anna@пример.рф; and spaces around it. One that does not validate is keyed as it stands."""
    try:
        return (validator or AddressValidator())(email.strip()).key
    except EmailNotValidError:
        return key_of(email.strip())


def _check(reason: str, source: str) -> None:
    if reason not in REASONS:
        raise ValueError(f"reason {reason!r}: use one of {', '.join(REASONS)}")
    if source not in SOURCES:
        raise ValueError(f"source {source!r}: use one of {', '.join(SOURCES)}")


# --- the operator's calls (`newsletter suppressions ...`) --------------------------------------------


def normalize_address(email: str) -> str:
    """The address as subscriber lists read it (syntax checked, domain normalized); a bad one is a
    NewsletterError that says why."""
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as e:
        raise NewsletterError(f"{email!r} is not an email address: {e}") from None


def check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise NewsletterError(f"reason {reason!r}: use one of {', '.join(REASONS)}")
    return reason


def suppress(suppressions: Suppressions, email: str, reason: str = "manual", *,
             source: str = "cli", detail: str | None = None) -> tuple[bool, Suppression]:
    """Suppress one address by hand: (True, the new suppression), or (False, the one already there,
    which keeps its reason). A bad address or reason raises NewsletterError."""
    address = normalize_address(email)
    added = suppressions.add(address, check_reason(reason), source, detail=detail)
    found = suppressions.get(address)
    assert found is not None
    return added, found


def unsuppress(suppressions: Suppressions, email: str) -> Suppression | None:
    """Lift the suppression of one address; the one lifted, or None if there was none."""
    try:
        address = normalize_address(email)
    except NewsletterError:
        address = email.strip()  # a stored address that no longer validates can still be lifted
    found = suppressions.get(address)
    if found is not None:
        suppressions.remove(address)
    return found


EXPORT_COLUMNS = ("email", "reason", "source", "created_at", "issue", "detail")


def export_csv(suppressions: Suppressions, out: TextIO, reason: str | None = None) -> int:
    """Write the suppression list as CSV (header + one row each, oldest first); returns the row count.
    A cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading '."""
    from .providers.dry_run import csv_safe

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for s in suppressions.all(reason):
        writer.writerow([csv_safe(getattr(s, c) or "") for c in EXPORT_COLUMNS])
        n += 1
    return n
