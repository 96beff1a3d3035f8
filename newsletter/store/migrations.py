"""Versioned schema of the state store, for SQLite and PostgreSQL.

Each migration moves the schema one version up, in one transaction. A database made before versions
existed (the send record of 0.1, a `deliveries` table and nothing else) is version 1 as it is: the
first migration creates exactly that table, so opening it only adds what came later and no send record
is lost. Never edit a released migration; add the next one.
"""

from __future__ import annotations

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

# version -> statements per dialect
MIGRATIONS: dict[int, dict[str, str]] = {
    1: {"sqlite": _DELIVERIES + " WITHOUT ROWID", "postgres": _DELIVERIES},
    2: {"sqlite": _SUPPRESSIONS, "postgres": _SUPPRESSIONS},
}
LATEST = max(MIGRATIONS)
