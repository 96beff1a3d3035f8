"""Versioned schema of the state store, for SQLite and PostgreSQL.

Each migration moves the schema one version up, in one transaction. A database made before versions
existed (the send record of 0.1, a `deliveries` table and nothing else) is version 1 as it is: the
first migration creates exactly that table, so opening it only adds what came later and no send record
is lost. Never edit a released migration; add the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database

_DELIVERIES = """
CREATE TABLE IF NOT EXISTS deliveries (
    issue       TEXT NOT NULL,
    email_key   TEXT NOT NULL,             -- normalized address: one copy per reader
    email       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('in_flight', 'sent', 'failed', 'retry')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    batch       TEXT,
    provider    TEXT,
    answer      TEXT,                      -- the provider's answer: message id or error
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (issue, email_key)
)"""

_SUPPRESSIONS = """
CREATE TABLE suppressions (
    email_key   TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    reason      TEXT NOT NULL CHECK (reason IN ('unsubscribed', 'bounced', 'complained', 'invalid', 'manual')),
    source      TEXT NOT NULL CHECK (source IN ('link', 'one-click', 'webhook', 'sendgrid-sync', 'cli')),
    issue       TEXT,                      -- the issue whose link or event it came from, if known
    detail      TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE events (
    event_id    TEXT PRIMARY KEY,          -- the provider's id (SendGrid's sg_event_id): de-duplication
    provider    TEXT NOT NULL,
    kind        TEXT NOT NULL,             -- delivered, open, click, bounce, spamreport, ...
    email_key   TEXT,
    issue       TEXT,
    occurred_at TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX events_by_issue ON events (issue, kind);
CREATE TABLE sync_state (
    name        TEXT PRIMARY KEY,          -- e.g. sendgrid:bounces
    value       TEXT NOT NULL              -- where the next incremental sync starts
)"""


def _rekey(db: Database) -> None:
    """Version 3: every stored key as the current code makes it. 0.1 and the first state store keyed
    the send record and the suppressions with str.casefold() (Straße@ and strasse@ one reader, a
    domain's ß as ss); later suppressions were keyed as given (anna@xn--e1afmkfd.xn--p1ai, where the
    list has anna@пример.рф). Such a reader was not found: sent twice, or mailed despite a
    suppression. Each row is re-keyed from its stored address; rows that now share a key merge as
    the code's own rules would have them: in the send record the row that says most (sent, else in
    flight: unknown, else the latest answer); in the suppressions the first one (the earliest; within
    one second the stronger reason, in the order sync reads SendGrid's lists), whose reason a later
    one never replaces."""
    from ..addresses import AddressValidator
    from ..ledger import key_of
    from ..suppressions import _key

    # deliveries: only a non-ASCII address or a key that is not its lower() can be keyed otherwise
    non_ascii = ("octet_length(email) <> length(email)" if db.dialect == "postgres"
                 else "length(CAST(email AS BLOB)) <> length(email)")
    columns: tuple[str, ...] = ("issue", "email_key", "email", "state", "attempts", "batch", "provider", "answer",
               "created_at", "updated_at")
    rows = db.execute(f"SELECT {', '.join(columns)} FROM deliveries WHERE email_key <> lower(email) OR {non_ascii}")
    _merge(db, "deliveries", columns, ("issue", "email_key"),
           [(r, (r[0], key_of(r[2]), *r[2:])) for r in rows if key_of(r[2]) != r[1]],
           lambda a, b: max(a, b, key=lambda r: (r[3] == "sent", r[3] == "in_flight", r[9])))
    # suppressions: few rows; each key checked as Suppressions keys an address now
    columns = ("email_key", "email", "reason", "source", "issue", "detail", "created_at")
    validator = AddressValidator()
    rows = db.execute(f"SELECT {', '.join(columns)} FROM suppressions")
    first = ("complained", "unsubscribed", "bounced", "invalid", "manual")
    _merge(db, "suppressions", columns, ("email_key",),
           [(r, (k, *r[1:])) for r in rows if (k := _key(r[1], validator)) != r[0]],
           lambda a, b: min(a, b, key=lambda r: (r[6], first.index(r[2]) if r[2] in first else len(first))))


def _merge(db: Database, table: str, columns: tuple[str, ...], key: tuple[str, ...],
           moved: list[tuple[tuple, tuple]], keep: Callable[[tuple, tuple], tuple]) -> None:
    """Each (row, the row re-keyed) of `moved`: take the row out of `table` and put it back under its
    new key; where rows meet on one key (a row already there included), `keep` picks the one that
    stays (on a tie, its first argument). The key's last column is `email_key`."""
    at = [columns.index(k) for k in key]
    where = " AND ".join(f"{k} = ?" for k in key)
    db.executemany(f"DELETE FROM {table} WHERE {where}", [[row[i] for i in at] for row, _ in moved])
    best: dict[tuple, tuple] = {}
    for _, row in moved:
        k = tuple(row[i] for i in at)
        best[k] = keep(best[k], row) if k in best else row
    by_prefix: dict[tuple, set[str]] = {}  # (issue,) -> its email keys: look-ups the primary key serves
    for k in best:
        by_prefix.setdefault(k[:-1], set()).add(k[-1])
    prefix = "".join(f"{c} = ? AND " for c in key[:-1])
    there = {tuple(r[i] for i in at): tuple(r) for p, keys in by_prefix.items() for r in db.rows_in(
        f"SELECT {', '.join(columns)} FROM {table} WHERE {prefix}email_key IN ({{marks}})", keys, p)}
    db.executemany(f"DELETE FROM {table} WHERE {where}",
                   [k for k, row in best.items() if k in there and keep(there[k], row) is row])
    db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                   [row for k, row in best.items() if k not in there or keep(there[k], row) is row])


# version -> statements per dialect
MIGRATIONS: dict[int, dict[str, str]] = {
    1: {"sqlite": _DELIVERIES + " WITHOUT ROWID", "postgres": _DELIVERIES},
    2: {"sqlite": _SUPPRESSIONS, "postgres": _SUPPRESSIONS},
    3: {"sqlite": "", "postgres": ""},  # data only: _rekey
}
# version -> what it does to the data, after its statements and in the same transaction
STEPS: dict[int, Callable[[Database], None]] = {3: _rekey}
LATEST = max(MIGRATIONS)
