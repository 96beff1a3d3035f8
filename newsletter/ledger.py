"""The send record: the single source of truth for "who already got this issue".

A batch is written as in flight *before* it is handed to the provider and as sent once the provider
accepts it, so a crash in between is detectable, never silent. The dispatcher depends only on the
`SendRecord` interface; two implementations:

- DeliveryRecord: one row per (issue, recipient) in the state store (SQLite or PostgreSQL, see
  store/). Writable for real sends, holding a lock so that two sends of the same issue cannot run at
  once; read-only (no lock, no writes) for dry runs and counts.
- NoRecord: knows nothing, keeps nothing. Test sends to the preview inbox.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, Self

from .message import BatchResult, Personalization
from .store.db import now
from .subscribers import address_key

if TYPE_CHECKING:
    from .store.db import Database

SENT, IN_FLIGHT, FAILED, RETRY = "sent", "in_flight", "failed", "retry"

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


class DeliveryRecord:
    """The deliveries of one issue in the state store. Writable: holds the issue's send lock from
    creation to close(). Read-only: for dry runs and counts, no lock, and writes are no-ops."""

    def __init__(self, db: Database, issue: str, *, writable: bool):
        self.db = db
        self.issue = issue
        self.writable = writable
        self._lock = db.send_lock(issue) if writable else None
        if self._lock is not None:
            self._lock.__enter__()  # raises at once when another send holds it

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(keys)
        found: dict[str, str] = {}
        for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            chunk = keys[i : i + 900]
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(
                f"SELECT email_key, state FROM deliveries WHERE issue = ? AND email_key IN ({marks})",
                [self.issue, *chunk]))
        return found

    def mark_in_flight(self, batch_id: str, provider: str, batch: list[Personalization]) -> None:
        if not self.writable:
            return  # a dry run hands nothing over
        stamp = now()
        with self.db.transaction():
            self.db.executemany(
                """INSERT INTO deliveries (issue, email_key, email, state, attempts, batch, provider,
                                           created_at, updated_at)
                   VALUES (?, ?, ?, 'in_flight', 1, ?, ?, ?, ?)
                   ON CONFLICT (issue, email_key) DO UPDATE SET
                       state = 'in_flight', attempts = deliveries.attempts + 1, batch = excluded.batch,
                       provider = excluded.provider, updated_at = excluded.updated_at""",
                [(self.issue, key_of(p.email), p.email, batch_id, provider, stamp, stamp) for p in batch],
            )

    def record(self, result: BatchResult) -> None:
        if not self.writable:
            return
        stamp = now()
        rows = [(SENT, a, e) for e, a in result.sent.items()]
        rows += [(FAILED, a, e) for e, a in result.failed.items()]
        rows += [(RETRY, a, e) for e, a in result.retry.items()]
        rows += [(IN_FLIGHT, a, e) for e, a in result.unknown.items()]  # fate unknown: stays
        with self.db.transaction():
            self.db.executemany(
                "UPDATE deliveries SET state = ?, answer = ?, updated_at = ? WHERE issue = ? AND email_key = ?",
                [(s, a, stamp, self.issue, key_of(e)) for s, a, e in rows],
            )

    def sent_issues(self) -> list[str]:
        """Issues at least one reader has been sent, for the archive."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT issue FROM deliveries WHERE state = 'sent'")]

    def first_sent(self) -> dict[str, str]:
        """Each issue at least one reader has been sent, and when the first of them was (ISO 8601
        UTC): what the archive publishes, and the date its feed gives."""
        return dict(self.db.execute(
            "SELECT issue, MIN(updated_at) FROM deliveries WHERE state = 'sent' GROUP BY issue"))


def key_of(email: str) -> str:
    """The address as the send record and suppressions know it (see subscribers.address_key)."""
    return address_key(email)
