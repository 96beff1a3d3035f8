"""The send record: one SQLite row per (issue, recipient), the single source of truth for
"who already got this issue". A batch is written as in flight *before* it is handed to the provider
and as sent once the provider accepts it, so a crash in between is detectable, never silent.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from .errors import NewsletterError
from .providers.base import BatchResult, Personalization
from .subscribers import address_key

SENT, IN_FLIGHT, FAILED, RETRY = "sent", "in_flight", "failed", "retry"

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    issue       TEXT NOT NULL,
    email_key   TEXT NOT NULL,             -- subscribers.address_key(email): one copy per reader
    email       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('in_flight', 'sent', 'failed', 'retry')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    batch       TEXT,
    provider    TEXT,
    answer      TEXT,                      -- the provider's answer: message id or error
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (issue, email_key)
) WITHOUT ROWID;
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Ledger:
    """Open with a context manager; holds an exclusive lock per issue so two sends cannot race."""

    def __init__(self, state_dir: Path, issue: str, *, readonly: bool = False):
        self.issue = issue
        self.path = state_dir / "sends.sqlite3"
        self._lock = None
        if readonly:
            # a dry run only reads: no lock (a real send may be running) and no file created
            uri = f"file:{self.path}?mode=ro" if self.path.exists() else "file::memory:"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None)
            if not self.path.exists():
                self.db.executescript(SCHEMA)
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = (state_dir / f"{issue}.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise NewsletterError(
                f"another `newsletter send` of {issue} is running (lock {state_dir / (issue + '.lock')}); "
                "wait for it to finish"
            ) from None
        self.db = sqlite3.connect(self.path, isolation_level=None)
        # WAL + synchronous=NORMAL: a committed "in flight" survives the process dying (the case
        # we guard against) at ~50 µs a commit instead of an fsync, so SMTP can record every message
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.close()

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        """Recorded state of each key that has one."""
        keys = list(keys)
        found: dict[str, str] = {}
        for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            chunk = keys[i : i + 900]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT email_key, state FROM deliveries WHERE issue = ? AND email_key IN ({marks})",
                [self.issue, *chunk],
            )
            found.update(rows)
        return found

    def mark_in_flight(self, batch_id: str, provider: str, batch: list[Personalization]) -> None:
        now = _now()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                """INSERT INTO deliveries (issue, email_key, email, state, attempts, batch, provider,
                                           created_at, updated_at)
                   VALUES (?, ?, ?, 'in_flight', 1, ?, ?, ?, ?)
                   ON CONFLICT (issue, email_key) DO UPDATE SET
                       state = 'in_flight', attempts = attempts + 1, batch = excluded.batch,
                       provider = excluded.provider, updated_at = excluded.updated_at""",
                [(self.issue, address_key(p.email), p.email, batch_id, provider, now, now) for p in batch],
            )

    def record(self, result: BatchResult) -> None:
        """Write what the provider said; an unknown fate stays in flight."""
        now = _now()
        rows = [(SENT, a, now, e) for e, a in result.sent.items()]
        rows += [(FAILED, a, now, e) for e, a in result.failed.items()]
        rows += [(RETRY, a, now, e) for e, a in result.retry.items()]
        rows += [(IN_FLIGHT, a, now, e) for e, a in result.unknown.items()]  # fate unknown: stays
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "UPDATE deliveries SET state = ?, answer = ?, updated_at = ? WHERE issue = ? AND email_key = ?",
                [(s, a, t, self.issue, address_key(e)) for s, a, t, e in rows],
            )
