"""One connection to the state store, SQLite or PostgreSQL, behind the few calls the rest needs.

SQL is written once, with `?` placeholders (converted for psycopg) and the subset both dialects share
(ON CONFLICT upserts, TEXT timestamps in ISO 8601 UTC, which sort as they read).
"""

from __future__ import annotations

import fcntl
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NewsletterError
from ..scrub import scrub
from .migrations import LATEST, MIGRATIONS, STEPS

SQLITE_NAME = "sends.sqlite3"  # the file name 0.1 used: an old state folder is opened in place


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Database:
    """A connection plus its dialect ("sqlite" or "postgres")."""

    def __init__(self, conn: Any, dialect: str, where: str, state_dir: Path | None = None):
        self.conn = conn
        self.dialect = dialect
        self.where = where  # for messages: a path or a URL without its password
        self.state_dir = state_dir
        self._depth = 0  # transactions open on this connection (nested ones join the outermost)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(self._sql(sql), tuple(params))
        return list(cur.fetchall()) if cur.description else []

    def rows_in(self, sql: str, keys: Iterable[str], params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of `sql`, whose `{marks}` is an IN list over `keys`, asked in chunks of 900
        (SQLite's bound-parameter limit); `params` come before the keys."""
        keys = list(keys)
        for i in range(0, len(keys), 900):
            chunk = keys[i : i + 900]
            yield from self.execute(sql.format(marks=",".join("?" * len(chunk))), [*params, *chunk])

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        if self.dialect == "postgres":
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit; SQLite takes its write lock at the start (BEGIN IMMEDIATE), so a reader
        never sees half of it and two writers queue instead of failing halfway. A transaction opened
        inside another joins it: the outer one commits (or rolls back) everything."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            if self.dialect == "postgres":
                with self.conn.transaction():
                    yield
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # a failed COMMIT (a full disk) leaves it open
                    self.conn.execute("ROLLBACK")
                raise
        finally:
            self._depth = 0

    def close(self) -> None:
        self.conn.close()

    # --- schema -------------------------------------------------------------------------------------

    def version(self) -> int:
        if self.dialect == "postgres":
            exists = self.execute("SELECT to_regclass('schema_version') IS NOT NULL")[0][0]
            has_deliveries = self.execute("SELECT to_regclass('deliveries') IS NOT NULL")[0][0]
        else:
            names = {r[0] for r in self.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            exists, has_deliveries = "schema_version" in names, "deliveries" in names
        recorded = self.execute("SELECT max(version) FROM schema_version")[0][0] if exists else None
        if recorded is not None:
            return int(recorded)
        return 1 if has_deliveries else 0  # a send record from before versions: version 1

    def migrate(self) -> None:
        """Bring the schema to the latest version, one migration per transaction. Safe when several
        processes open the store at once: each step re-reads the version under a lock."""
        while True:
            with self.transaction():
                if self.dialect == "postgres":  # SQLite's BEGIN IMMEDIATE already serializes this
                    self.execute("SELECT pg_advisory_xact_lock(hashtextextended('newsletter-migrate', 0))")
                self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                current = self.version()
                if not self.execute("SELECT 1 FROM schema_version"):
                    self.execute("INSERT INTO schema_version (version) VALUES (?)", (current,))
                if current > LATEST:
                    raise NewsletterError(
                        f"{self.where}: the state store has schema version {current}, newer than this "
                        f"newsletter knows ({LATEST}); upgrade newsletter")
                if current == LATEST:
                    return
                for statement in MIGRATIONS[current + 1][self.dialect].split(";"):
                    if statement.strip():
                        self.execute(statement)
                if current + 1 in STEPS:
                    STEPS[current + 1](self)
                self.execute("UPDATE schema_version SET version = ?", (current + 1,))

    # --- the lock that keeps two sends of one issue apart --------------------------------------------

    @contextmanager
    def send_lock(self, issue: str, *, shared: bool = False) -> Iterator[None]:
        """Held for a whole send; a second send of the same issue refuses at once. SQLite: a lock
        file beside the database (released by the OS if the process dies). PostgreSQL: a session
        advisory lock, so senders on different machines exclude each other. `shared` (PostgreSQL
        only): the lock of a `--worker`; workers share it, and a plain send excludes them all."""
        if self.dialect == "postgres":
            key = f"newsletter-send:{issue}"
            kind = "_shared" if shared else ""
            if not self.execute(f"SELECT pg_try_advisory_lock{kind}(hashtextextended(?, 0))", (key,))[0][0]:
                if shared:
                    raise NewsletterError(f"a `newsletter send` of {issue} without --worker is running "
                                          f"(lock held in {self.where}); wait for it to finish")
                raise NewsletterError(f"another `newsletter send` of {issue} is running (lock held in "
                                      f"{self.where}), or `--worker` sends of it are; wait for them to finish")
            try:
                yield
            finally:
                if not self.conn.closed:
                    self.execute(f"SELECT pg_advisory_unlock{kind}(hashtextextended(?, 0))", (key,))
            return
        if shared:
            raise NewsletterError("--worker needs the state store in PostgreSQL (NEWSLETTER_DATABASE_URL): "
                                  "with SQLite, one machine sends; use [smtp] connections to send in parallel")
        assert self.state_dir is not None
        path = self.state_dir / f"{issue}.lock"
        with path.open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise NewsletterError(f"another `newsletter send` of {issue} is running (lock {path}); "
                                      "wait for it to finish") from None
            yield


def connect_sqlite(state_dir: Path, *, create: bool = True) -> Database:
    """The SQLite store in `state_dir`; with create=False and no file yet, an empty one in memory
    (a dry run creates nothing on disk)."""
    path = state_dir / SQLITE_NAME
    if state_dir.exists() and not state_dir.is_dir():
        raise ConfigError(f"the state folder {state_dir} (NEWSLETTER_STATE_DIR) is a file: point it at a folder, "
                          "where the send record lives (default .newsletter/)")
    if not path.exists() and not create:
        db = Database(sqlite3.connect(":memory:", isolation_level=None), "sqlite", ":memory:", state_dir)
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        # one connection shared by a send's threads, every use under the record's lock (parallel.py)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        # WAL + synchronous=NORMAL: a committed "in flight" survives the process dying (the case
        # we guard against) at ~50 µs a commit instead of an fsync, so SMTP can record every message
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        db = Database(conn, "sqlite", str(path), state_dir)
    db.migrate()
    return db


def connect_postgres(url: str) -> Database:
    """The PostgreSQL store at `url` (postgresql://user:password@host:port/db)."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError("NEWSLETTER_DATABASE_URL is a PostgreSQL URL, but psycopg is not installed: "
                          "pip install 'newsletter[postgres]'") from None
    where = _without_password(url)
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:  # OperationalError: no answer; ProgrammingError: a URL libpq cannot read
        message = scrub(str(e).strip(), _passwords(url))  # libpq may quote the part it could not read
        raise ConfigError(f"cannot connect to the state store {where}: {message}") from None
    # A sender that vanishes (power, network) must not hold its send lock for the OS default of
    # ~2 hours: the server probes an idle connection after 30 s and drops it after 3 missed probes.
    for setting, value in (("tcp_keepalives_idle", 30), ("tcp_keepalives_interval", 10), ("tcp_keepalives_count", 3)):
        conn.execute(f"SET {setting} = {value}")
    db = Database(conn, "postgres", where)
    db.migrate()
    return db


def _without_password(url: str) -> str:
    """`url` with its password, as user:password@ or as ?password=, shown as ***."""
    return scrub(url, _passwords(url))


def _passwords(url: str) -> list[str]:
    """The password(s) in a PostgreSQL URL, as written and percent-decoded (for scrub): read with
    patterns, not urlsplit, so that a URL too broken to parse still gives its password up."""
    from urllib.parse import unquote

    written = re.findall(r"://[^/?#@:]*:([^/?#]*)@", url) + re.findall(r"[?&]password=([^&#]*)", url)
    return [form for p in written for form in (p, unquote(p))]
