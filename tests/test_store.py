"""The state store, the same tests on SQLite and on a real PostgreSQL server: the send record,
suppressions, events, the lock between two sends, and the migration of a 0.1 send record."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import SMALL_ISSUE, Project
from newsletter import Campaign, load_settings, open_store, prepare
from newsletter.errors import NewsletterError
from newsletter.ledger import IN_FLIGHT, SENT
from newsletter.message import BatchResult, Personalization
from newsletter.store.migrations import LATEST
from smtp_server import Recorder

SECRET = "store-test-secret-0123456789abcdef"


def person(email: str) -> Personalization:
    return Personalization(email, "", ("u",), ("u",))


def test_send_record_round_trip(tmp_path: Path, database_url: str | None) -> None:
    with open_store(tmp_path, database_url) as store, store.send_record("2021-03") as record:
        record.mark_in_flight("b1", "smtp", [person("a@example.com"), person("B@example.com")])
        record.record(BatchResult(sent={"a@example.com": "id-1"}, unknown={"B@example.com": "lost"}))
        assert record.states(["a@example.com", "b@example.com", "c@example.com"]) == {
            "a@example.com": SENT, "b@example.com": IN_FLIGHT}
    with open_store(tmp_path, database_url) as store:
        assert store.read_record("2021-03").states(["a@example.com"]) == {"a@example.com": SENT}
        assert store.read_record("2021-04").states(["a@example.com"]) == {}
        assert list(store.first_sent()) == ["2021-03"]


def test_two_sends_of_one_issue_exclude_each_other(tmp_path: Path, database_url: str | None) -> None:
    with open_store(tmp_path, database_url) as one, open_store(tmp_path, database_url) as two:
        with one.send_record("2021-03"):
            with pytest.raises(NewsletterError, match="another `newsletter send` of 2021-03 is running"):
                two.send_record("2021-03")
            two.send_record("2021-04").close()  # another issue is free
        two.send_record("2021-03").close()  # free again once the first send ended


def test_suppressions_keep_the_first_reason_and_can_be_lifted(tmp_path: Path, database_url: str | None) -> None:
    with open_store(tmp_path, database_url) as store:
        s = store.suppressions
        assert s.add("Ann@Example.com", "unsubscribed", "one-click", issue="2021-03")
        assert not s.add("ann@example.com", "bounced", "webhook")  # idempotent; the first reason stays
        assert s.reasons(["ann@example.com", "bob@example.com"]) == {"ann@example.com": "unsubscribed"}
        got = s.get("ANN@example.com")
        assert got and got.source == "one-click" and got.issue == "2021-03"
        assert s.count() == {"unsubscribed": 1}
        assert s.remove("ann@example.com") and not s.remove("ann@example.com")
        assert list(s) == []
        with pytest.raises(ValueError, match="reason"):
            s.add("x@example.com", "bored", "cli")


def test_events_are_kept_once(tmp_path: Path, database_url: str | None) -> None:
    with open_store(tmp_path, database_url) as store:
        e = store.events
        assert e.add("ev-1", "sendgrid", "delivered", "a@example.com", "2021-03", "2021-03-31T10:00:00+00:00")
        assert not e.add("ev-1", "sendgrid", "delivered", "a@example.com", "2021-03", None)
        assert e.add("ev-2", "sendgrid", "open", "a@example.com", "2021-03", None)
        assert e.counts("2021-03") == {"delivered": 1, "open": 1}
        assert e.cursor("sendgrid:bounces") is None
        e.set_cursor("sendgrid:bounces", "1617184800")
        e.set_cursor("sendgrid:bounces", "1617271200")
        assert e.cursor("sendgrid:bounces") == "1617271200"


def test_a_send_skips_suppressed_readers_and_counts_them(project: Project, serve, database_url: str | None) -> None:
    handler = Recorder()
    env = {"NEWSLETTER_SECRET": SECRET, "NEWSLETTER_SMTP_PORT": str(serve(handler))}
    if database_url:
        env["NEWSLETTER_DATABASE_URL"] = database_url
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    project.write_list("email,name\n" + "".join(f"r{i}@example.com,R{i}\n" for i in range(4)))
    settings = load_settings(project.root / "newsletter.toml", env=env)
    with settings.open_store() as store:
        store.suppressions.add("r1@example.com", "bounced", "webhook")
        store.suppressions.add("R2@example.com", "unsubscribed", "link")
    campaign = Campaign(prepare(project.root / "issues" / "2021-03.yaml", settings), settings, "readers")
    plan = campaign.plan()
    assert plan.recipients == 2 and plan.report.suppressed == {"bounced": 1, "unsubscribed": 1}
    assert campaign.dry_run().suppressed == {"bounced": 1, "unsubscribed": 1}
    report = campaign.send()
    assert report.sent == 2 and report.suppressed == {"bounced": 1, "unsubscribed": 1}
    assert sorted(rcpt for _, rcpts, _, _ in handler.messages for rcpt in rcpts) == ["r0@example.com", "r3@example.com"]


def test_a_send_record_from_0_1_is_migrated_in_place(tmp_path: Path) -> None:
    # the schema 0.1 wrote, and one row of it: it must survive, and the new tables appear
    path = tmp_path / "sends.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE deliveries (issue TEXT NOT NULL, email_key TEXT NOT NULL, email TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('in_flight', 'sent', 'failed', 'retry')),
            attempts INTEGER NOT NULL DEFAULT 0, batch TEXT, provider TEXT, answer TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (issue, email_key)) WITHOUT ROWID;
        INSERT INTO deliveries VALUES ('2021-03', 'ann@example.com', 'Ann@example.com', 'sent', 1, 'b', 'smtp',
            '<id@x>', '2021-03-31T10:00:00+00:00', '2021-03-31T10:00:00+00:00');
    """)
    db.close()
    with open_store(tmp_path) as store:
        assert store.db.version() == LATEST
        assert store.read_record("2021-03").states(["ann@example.com"]) == {"ann@example.com": SENT}
        assert store.suppressions.add("bob@example.com", "manual", "cli")
    with open_store(tmp_path) as store:  # opening again changes nothing
        assert store.db.version() == LATEST
        assert store.suppressions.reasons(["bob@example.com"]) == {"bob@example.com": "manual"}


def test_dry_run_creates_no_store(project: Project) -> None:
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    project.write_list("email\nr@example.com\n")
    settings = load_settings(project.root / "newsletter.toml", env={})
    campaign = Campaign(prepare(project.root / "issues" / "2021-03.yaml", settings), settings, "readers")
    assert campaign.plan().recipients == 1
    assert not (project.root / ".newsletter").exists()


def test_database_url_must_be_postgres_and_stays_out_of_files(project: Project) -> None:
    with pytest.raises(NewsletterError, match="NEWSLETTER_DATABASE_URL: database_url: must be a PostgreSQL URL"):
        load_settings(project.root / "newsletter.toml", env={"NEWSLETTER_DATABASE_URL": "mysql://x"})
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace("[newsletter]\n", '[newsletter]\ndatabase_url = "postgresql://u:p@h/d"\n'))
    with pytest.raises(NewsletterError, match="secrets are read only from the environment"):
        load_settings(cfg, env={})


@pytest.mark.parametrize("url", [
    "postgresql://u:S3CRET-pw@127.0.0.1:notaport/db",  # libpq refuses it: the message names the URL
    "postgresql://u@127.0.0.1:1/db?password=S3CRET-pw&sslmode=bogus",  # libpq takes ?password= too
    "postgresql://u:S3CRET%pw@127.0.0.1:1/db",  # bad percent-encoding: libpq quotes the token
    "postgresql://u:S3CRET%2Dpw@127.0.0.1:1/db?sslmode=bogus",  # written encoded, shown decoded
    "postgres://u:S3CRET-pw@[::1/db",  # too broken for urlsplit: a ConfigError, not an internal error
    "postgresql://u:S3CRET@pw@127.0.0.1:1/db?sslmode=bogus",  # an @ in the password, unencoded
])
def test_a_database_url_that_fails_never_shows_its_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(NewsletterError, match="cannot connect to the state store") as caught:
        open_store(tmp_path, url)
    assert "S3CRET" not in str(caught.value) and "***" in str(caught.value)


def test_a_transaction_inside_another_joins_it(tmp_path: Path, database_url: str | None) -> None:
    # a webhook delivery writes suppressions and events in one transaction: if it fails halfway,
    # nothing of it is kept, whatever the inner calls did
    with open_store(tmp_path, database_url) as store:
        with pytest.raises(RuntimeError):
            with store.db.transaction():
                store.suppressions.add("gone@example.com", "bounced", "webhook")
                store.events.add("ev-9", "sendgrid", "bounce", "gone@example.com", "2021-03", None)
                store.suppressions.add_many([])  # a transaction of its own inside: joins
                raise RuntimeError("the delivery fails halfway")
        assert store.suppressions.get("gone@example.com") is None
        assert store.events.add("ev-9", "sendgrid", "bounce", "gone@example.com", "2021-03", None)


def test_a_commit_that_fails_leaves_no_transaction_open(tmp_path: Path) -> None:
    """SQLite keeps a transaction open when its COMMIT fails (a full disk): rolled back, so the
    connection is not left inside it and the next transaction starts cleanly."""
    from newsletter.store.db import connect_sqlite

    db = connect_sqlite(tmp_path)
    real = db.conn

    class FullDisk:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def execute(self, sql: str, *args: object) -> object:
            if sql == "COMMIT":
                raise sqlite3.OperationalError("database or disk is full")
            return real.execute(sql, *args)

    db.conn = FullDisk()  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        with db.transaction():
            db.execute("INSERT INTO suppressions (email_key, email, reason, source, created_at) "
                       "VALUES ('a@example.com', 'a@example.com', 'manual', 'cli', 'now')")
    assert not real.in_transaction
    db.conn = real
    with db.transaction():
        assert db.execute("SELECT count(*) FROM suppressions") == [(0,)]
    db.close()


def test_a_reader_handed_over_again_loses_the_earlier_answer(tmp_path: Path, database_url: str | None) -> None:
    """A reader refused with 451, then handed over again when the process died: its row must not
    still say "451", which reads as "not delivered" while this copy may well have been."""
    with open_store(tmp_path, database_url) as store, store.send_record("2021-03") as record:
        record.mark_in_flight("b1", "smtp", [person("a@example.com")])
        record.record(BatchResult(retry={"a@example.com": "451 4.3.0 try later"}))
        record.mark_in_flight("b2", "smtp", [person("a@example.com")])  # ...and then kill -9
        assert store.db.execute("SELECT state, answer, attempts FROM deliveries") == [(IN_FLIGHT, None, 2)]


def _store_at_version_2(where: Path, database_url: str | None, deliveries: list[tuple], suppressions: list[tuple]):
    """A state store as the versions before 3 left it, with rows keyed as they keyed them."""
    from newsletter.store.migrations import MIGRATIONS

    if database_url:
        import psycopg

        conn = psycopg.connect(database_url, autocommit=True)
        dialect, mark = "postgres", "%s"
    else:
        conn = sqlite3.connect(where / "sends.sqlite3", isolation_level=None)
        dialect, mark = "sqlite", "?"
    for version in (1, 2):
        for statement in MIGRATIONS[version][dialect].split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    for table, rows in (("deliveries", deliveries), ("suppressions", suppressions)):
        for row in rows:
            conn.execute(f"INSERT INTO {table} VALUES ({', '.join([mark] * len(row))})", row)
    conn.close()


def test_keys_written_by_older_versions_are_made_again_and_rows_that_meet_merge(
        tmp_path: Path, database_url: str | None) -> None:
    """0.1 and the first state store keyed with str.casefold(), and suppressions were keyed as
    given until the IDNA fix: after an upgrade, a reader sent under such a key was sent again
    (anna@straße.de, keyed anna@strasse.de) and an IDNA-keyed bounce suppressed nobody. Version 3
    keys every row again, merging rows that meet as the code's rules would."""
    t = "2026-01-01T10:00:00+00:00"
    later = "2026-01-02T10:00:00+00:00"

    def delivery(issue: str, key: str, email: str, state: str, at: str = t) -> tuple:
        return (issue, key, email, state, 1, "b", "smtp", None, at, at)

    def suppression(key: str, email: str, reason: str, at: str) -> tuple:
        return (key, email, reason, "webhook", None, None, at)

    _store_at_version_2(tmp_path, database_url, [
        delivery("2021-03", "anna@strasse.de", "anna@straße.de", "sent"),  # 0.1's casefold
        delivery("2021-03", "änne@example.de", "Änne@example.de", "in_flight"),  # unknown stays unknown
        delivery("2021-03", "bob@example.com", "bob@example.com", "sent"),
        delivery("2021-04", "Änne@example.de", "Änne@example.de", "failed", later),  # meets the next one:
        delivery("2021-04", "änne@example.de", "Änne@example.de", "sent"),  # sent says more
    ], [
        suppression("anna@xn--e1afmkfd.xn--p1ai", "anna@xn--e1afmkfd.xn--p1ai", "bounced", t),  # the first
        suppression("anna@пример.рф", "anna@пример.рф", "unsubscribed", later),
        suppression("cy@пример.рф", "cy@пример.рф", "manual", t),  # the same second: the stronger
        suppression("cy@xn--e1afmkfd.xn--p1ai", "cy@xn--e1afmkfd.xn--p1ai", "complained", t),
        suppression("änne@example.de", "Änne@example.de", "complained", t),
        suppression(" Dan@Example.com ", " Dan@Example.com ", "manual", t),
    ])
    with open_store(tmp_path, database_url) as store:
        assert store.db.version() == LATEST
        assert store.read_record("2021-03").states(
            ["anna@straße.de", "Änne@example.de", "bob@example.com", "anna@strasse.de"]) == {
            "anna@straße.de": SENT, "Änne@example.de": IN_FLIGHT, "bob@example.com": SENT}
        assert store.read_record("2021-04").states(["Änne@example.de"]) == {"Änne@example.de": SENT}
        assert store.db.execute("SELECT count(*) FROM deliveries")[0][0] == 4
        assert store.suppressions.reasons(["anna@пример.рф", "cy@пример.рф", "Änne@example.de", "dan@example.com"]) == {
            "anna@пример.рф": "bounced", "cy@пример.рф": "complained", "Änne@example.de": "complained",
            "dan@example.com": "manual"}
        assert store.db.execute("SELECT count(*) FROM suppressions")[0][0] == 4
        got = store.suppressions.get("anna@пример.рф")
        assert got is not None and got.created_at == t and got.email == "anna@xn--e1afmkfd.xn--p1ai"
    with open_store(tmp_path, database_url) as store:  # once only
        assert store.db.execute("SELECT version FROM schema_version") == [(LATEST,)]
        assert store.suppressions.count() == {"bounced": 1, "complained": 2, "manual": 1}
