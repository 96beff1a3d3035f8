"""The addresses one reading of a subscriber list has seen: exact de-duplication in flat memory.

A Python set of a million address keys takes ~100 MB; a private temporary SQLite database keeps them
in a file with a small page cache instead (a few MB, whatever the list's length). The whole key is
stored, so de-duplication is exact (no hash that two addresses could share).
"""

from __future__ import annotations

import json
import sqlite3

CACHE_KB = 2_000  # SQLite page cache: what the table costs in memory; the rest stays in its file
_LOOKUP = 500  # keys per SELECT ... IN (...), under SQLite's limit on bound parameters


class SeenKeys:
    """Keys with the line each was first seen on. Add them a batch at a time (see `add`)."""

    def __init__(self, cache_kb: int = CACHE_KB):
        self._db = sqlite3.connect("")  # "" = private temporary database that spills to disk
        self._db.execute(f"PRAGMA cache_size=-{cache_kb}")
        # private and thrown away at close: no journal to keep (it cost ~30% of each insert)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        try:  # SQLite's JSON functions: built in since 3.38, but a build may leave them out
            self._json = bool(self._db.execute("SELECT json_array_length('[]') = 0").fetchone()[0])
        except sqlite3.OperationalError:
            self._json = False

    def add(self, batch: list[tuple[str, int]]) -> dict[int, int]:
        """Record (key, line) pairs in order; return {line: first line} for the pairs whose key was
        seen before, earlier in this batch included. Lines must increase (a row's first line)."""
        if not batch:
            return {}
        before = self._db.total_changes
        # the first row with a key wins; later ones are ignored: one statement for the whole batch
        first_line = batch[0][1]
        array = json.dumps([key for key, _ in batch]) if self._json else ""
        # rows on consecutive lines (the usual batch): the keys as one JSON array, each one's line
        # the first line plus its index; a statement per row costs ~40% more. SQLite's JSON text
        # ends at a NUL character: a key with one (never a valid address) takes the other way.
        if array and batch[-1][1] - first_line == len(batch) - 1 and "\\u0000" not in array:
            self._db.execute("INSERT OR IGNORE INTO seen SELECT value, ? + key FROM json_each(?)",
                             (first_line, array))
        else:
            self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", batch)
        if self._db.total_changes - before == len(batch):
            return {}  # no key seen before
        first: dict[str, int] = {}
        keys = list(dict.fromkeys(key for key, _ in batch))
        for i in range(0, len(keys), _LOOKUP):
            part = keys[i:i + _LOOKUP]
            first.update(self._db.execute(
                f"SELECT key, line FROM seen WHERE key IN ({','.join('?' * len(part))})", part))
        return {line: first[key] for key, line in batch if first[key] != line}

    def close(self) -> None:
        self._db.close()
