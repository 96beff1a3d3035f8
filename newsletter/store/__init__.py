"""The state store: the send record, suppressions and provider events, in one database.

SQLite in the state folder (`.newsletter/sends.sqlite3`) is the default; with
`NEWSLETTER_DATABASE_URL=postgresql://...` the same tables live in PostgreSQL, so the unsubscribe
service on a server and sends from a laptop or a CI runner share one record. Both are reached through
`open_store` and behave alike; the same tests run against both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Self

from .db import Database, connect_postgres, connect_sqlite

if TYPE_CHECKING:
    from ..ledger import DeliveryRecord


class Store:
    """One open state store. Use as a context manager, or close() it."""

    def __init__(self, db: Database):
        from ..suppressions import Events, Suppressions  # they import store.db: not at the top

        self.db = db
        self.suppressions = Suppressions(db)
        self.events = Events(db)

    def send_record(self, issue: str, *, worker: bool = False) -> DeliveryRecord:
        """The record a real send writes, holding the send lock of `issue` until closed (a
        worker's: shared with the other workers, PostgreSQL only)."""
        from ..ledger import DeliveryRecord

        return DeliveryRecord(self.db, issue, writable=True, worker=worker)

    def read_record(self, issue: str) -> DeliveryRecord:
        """What a real send would find, for dry runs and counts: no lock, no writes."""
        from ..ledger import DeliveryRecord

        return DeliveryRecord(self.db, issue, writable=False)

    def first_sent(self) -> dict[str, str]:
        """Each issue at least one reader has been sent, and when the first of them was (ISO 8601
        UTC): what the archive publishes, and the date its feed gives."""
        return dict(self.db.execute(
            "SELECT issue, MIN(updated_at) FROM deliveries WHERE state = 'sent' GROUP BY issue"))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()


def open_store(state_dir: Path, database_url: str | None = None, *, create: bool = True) -> Store:
    """The store at `database_url` (PostgreSQL) or in `state_dir` (SQLite). With create=False, a
    missing SQLite file is not created: the store is then empty and in memory (dry runs)."""
    if database_url:
        return Store(connect_postgres(database_url))
    return Store(connect_sqlite(state_dir, create=create))


__all__ = ["Store", "open_store"]
