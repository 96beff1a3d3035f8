"""The send record: the single source of truth for "who already got this issue".

A batch is written as in flight *before* it is handed to the provider and as sent once the provider
accepts it, so a crash in between is detectable, never silent. The dispatcher depends only on the
`SendRecord` interface; three implementations:

- SQLiteRecord: one SQLite row per (issue, recipient) in the state folder, with a lock so that two
  sends of the same issue cannot run at once. Real sends.
- ReadOnlyRecord: reads the same database, writes nothing, takes no lock. Dry runs and counts.
- NoRecord: knows nothing, keeps nothing. Test sends to the preview inbox.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, Self

from .errors import NewsletterError
from .message import BatchResult, Personalization

SENT, IN_FLIGHT, FAILED, RETRY = "sent", "in_flight", "failed", "retry"

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    issue       TEXT NOT NULL,
    email_key   TEXT NOT NULL,             -- casefolded address: one copy per reader
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


class SendRecord(Protocol):
    """What the dispatcher needs to know and to write about one issue's deliveries."""

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        """Recorded state (SENT, IN_FLIGHT, FAILED, RETRY) of each key that has one."""
        ...

    def mark_in_flight(self, batch_id: str, provider: str, batch: list[Personalization]) -> None:
        """Before a batch is handed over: a crash from here on leaves it in flight."""
        ...

    def record(self, result: BatchResult) -> None:
        """What the provider said; an unknown fate stays in flight."""
        ...

    def close(self) -> None: ...


class NoRecord:
    """Test sends: nothing is known beforehand and nothing is kept."""

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        return {}

    def mark_in_flight(self, batch_id: str, provider: str, batch: list[Personalization]) -> None:
        pass

    def record(self, result: BatchResult) -> None:
        pass

    def close(self) -> None:
        pass


class _SQLiteStates:
    """The look-up both SQLite records share."""

    db: sqlite3.Connection
    issue: str

    def states(self, keys: Iterable[str]) -> dict[str, str]:
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()


class ReadOnlyRecord(_SQLiteStates):
    """Dry runs and counts: what a real send would find, without a lock (a real send may be
    running) and without creating or writing anything."""

    def __init__(self, state_dir: Path, issue: str):
        self.issue = issue
        path = state_dir / "sends.sqlite3"
        if path.exists():
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            self.db = sqlite3.connect(":memory:", isolation_level=None)
            self.db.executescript(SCHEMA)

    def mark_in_flight(self, batch_id: str, provider: str, batch: list[Personalization]) -> None:
        pass  # a dry run hands nothing over

    def record(self, result: BatchResult) -> None:
        pass


class SQLiteRecord(_SQLiteStates):
    """Real sends. Holds an exclusive lock per issue so two sends cannot race."""

    def __init__(self, state_dir: Path, issue: str):
        self.issue = issue
        self.path = state_dir / "sends.sqlite3"
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

    def close(self) -> None:
        self.db.close()
        self._lock.close()

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
                [(self.issue, p.email.casefold(), p.email, batch_id, provider, now, now) for p in batch],
            )

    def record(self, result: BatchResult) -> None:
        now = _now()
        rows = [(SENT, a, now, e) for e, a in result.sent.items()]
        rows += [(FAILED, a, now, e) for e, a in result.failed.items()]
        rows += [(RETRY, a, now, e) for e, a in result.retry.items()]
        rows += [(IN_FLIGHT, a, now, e) for e, a in result.unknown.items()]  # fate unknown: stays
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "UPDATE deliveries SET state = ?, answer = ?, updated_at = ? WHERE issue = ? AND email_key = ?",
                [(s, a, t, self.issue, e.casefold()) for s, a, t, e in rows],
            )


def sent_issues(state_dir: Path) -> dict[str, datetime]:
    """Issues with at least one delivery recorded as sent, and when the first one was: what the
    archive publishes. Read-only; without a send record, nothing was sent."""
    path = state_dir / "sends.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        rows = db.execute("SELECT issue, MIN(updated_at) FROM deliveries WHERE state = ? GROUP BY issue", (SENT,))
        return {issue: datetime.fromisoformat(when) for issue, when in rows}
    finally:
        db.close()
