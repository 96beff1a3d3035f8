"""Subscriber lists: a streaming CSV reader that validates, de-duplicates and reports every skip.

Memory stays flat in the list's length: rows are streamed, and the "seen" set for de-duplication
lives in a temporary on-disk SQLite table rather than a Python set (1M addresses in a set ~ 100 MB).
"""

from __future__ import annotations

import csv
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from .errors import Problem, SubscriberListError

STATUSES = ("subscribed", "unsubscribed", "bounced", "complained")
RESERVED = ("email", "name", "status")


@dataclass(frozen=True)
class Subscriber:
    email: str  # as validated (domain normalized)
    name: str
    status: str
    fields: dict[str, str]  # every column, for merge fields: email, name, and extras
    line: int

    @property
    def key(self) -> str:
        """Identity for de-duplication and the send record: case-insensitive."""
        return self.email.casefold()


def resolve_list(spec: str, root: Path) -> Path:
    """`--list digest` -> subscribers/digest.csv; a path to a CSV is taken as is."""
    if spec.endswith(".csv") or "/" in spec or "\\" in spec:
        return Path(spec)
    return root / "subscribers" / f"{spec}.csv"


@dataclass
class SubscriberList:
    """Iterate to stream valid, unique rows; invalid rows and duplicates are collected as Problems."""

    path: Path
    invalid: list[Problem] = field(default_factory=list)
    duplicates: list[Problem] = field(default_factory=list)
    rows: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.path.is_file():
            raise SubscriberListError(
                f"{self.path}: no such subscriber list; create it (a CSV with an `email` column) "
                "or pass --list with a list name from subscribers/ or a path"
            )
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), None)
        except UnicodeDecodeError as e:
            raise SubscriberListError(
                f"{self.path}: not UTF-8 ({e.reason} at byte {e.start}); save the list as UTF-8 "
                "(in a spreadsheet: CSV UTF-8)"
            ) from None
        if not header or "email" not in [h.strip().lower() for h in header]:
            raise SubscriberListError(f"{self.path}:1: the header row needs an `email` column")
        self.columns = [h.strip() for h in header]

    def _problem(self, line: int, message: str) -> Problem:
        return Problem(self.path, line, "", message)

    def __iter__(self) -> Iterator[Subscriber]:
        seen = sqlite3.connect("")  # "" = private temporary database that spills to disk
        seen.execute("PRAGMA cache_size=-4000")
        seen.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        cur = seen.cursor()
        lower = [c.lower() for c in self.columns]
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                next(reader, None)
                line = reader.line_num + 1
                for row in reader:
                    start, line = line, reader.line_num + 1  # a quoted field may span lines
                    if not any(cell.strip() for cell in row):
                        continue
                    self.rows += 1
                    if len(row) != len(self.columns):
                        self.invalid.append(self._problem(
                            start, f"{len(row)} fields where the header has {len(self.columns)}; "
                            "quote values that contain commas"))
                        continue
                    values = {(c.lower() if c.lower() in RESERVED else c): v.strip()
                              for c, v in zip(self.columns, row)}
                    raw = {lc: v.strip() for lc, v in zip(lower, row)}
                    status = raw.get("status", "") or "subscribed"
                    if status.lower() not in STATUSES:
                        self.invalid.append(self._problem(
                            start, f"status {status!r} is not one of {', '.join(STATUSES)}"))
                        continue
                    try:
                        email = validate_email(raw["email"], check_deliverability=False).normalized
                    except EmailNotValidError as e:
                        self.invalid.append(self._problem(start, f"{raw['email']!r}: {e}"))
                        continue
                    cur.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (email.casefold(), start))
                    if cur.rowcount == 0:
                        first = cur.execute("SELECT line FROM seen WHERE key = ?", (email.casefold(),)).fetchone()[0]
                        self.duplicates.append(self._problem(
                            start, f"{email} duplicates line {first} (case-insensitive); the first row wins"))
                        continue
                    values["email"] = email
                    status = status.lower()
                    self.by_status[status] += 1
                    yield Subscriber(email, raw.get("name", ""), status, values, start)
        except UnicodeDecodeError as e:
            raise SubscriberListError(f"{self.path}:{line}: not UTF-8 ({e.reason}); save the list as UTF-8") from None
        except csv.Error as e:
            raise SubscriberListError(f"{self.path}:{line}: {e}") from None
        finally:
            seen.close()
