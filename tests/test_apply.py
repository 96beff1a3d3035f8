"""`newsletter subscribers apply`: suppressions written back into the list as statuses, changing only
the status cells of the affected rows, byte for byte, atomically, idempotently."""

from __future__ import annotations

import csv
import errno
import io
import os
import random
import tempfile
from pathlib import Path

import pytest

from conftest import Project, run_cli
from newsletter.applystatus import REASON_STATUS, apply_statuses
from newsletter.errors import SubscriberListError
from newsletter.store import open_store
from newsletter.subscribers import SubscriberList
from newsletter.suppressions import Suppressions


def store_env(database_url: str | None) -> dict[str, str]:
    return {"NEWSLETTER_DATABASE_URL": database_url} if database_url else {}


def suppress(project: Project, database_url: str | None, *entries: tuple[str, str, str]) -> None:
    with open_store(project.root / ".newsletter", database_url) as store:
        for email, reason, source in entries:
            store.suppressions.add(email, reason, source, at="2026-11-27T09:30:00+00:00")


def write_bytes(project: Project, data: bytes, name: str = "readers") -> Path:
    path = project.root / "subscribers" / f"{name}.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def test_only_the_status_cells_change_in_a_crlf_list_with_bom_and_quoted_fields(
        project: Project, database_url: str | None) -> None:
    before = (
        "\ufeffemail,name,status,note\r\n"
        'ann@example.com,"Ann, the first",subscribed,plain\r\n'
        'eve@example.com,Eve,subscribed,"line one\r\nline two"\r\n'
        '"bob@example.com","Bob ""B"" Smith","subscribed",x\r\n'
        "\r\n"
        "cy@example.com,Cy, subscribed ,\r\n"
        "di@example.com,Di,unsubscribed,\r\n"
        "Ann@Example.com,Ann again,subscribed,duplicate row\r\n"
        "not-an-address,X,subscribed,\r\n"
        "fay@example.com,Фая,,no line break at the end"
    ).encode("utf-8")
    after = (
        "\ufeffemail,name,status,note\r\n"
        'ann@example.com,"Ann, the first",unsubscribed,plain\r\n'
        'eve@example.com,Eve,subscribed,"line one\r\nline two"\r\n'
        '"bob@example.com","Bob ""B"" Smith","bounced",x\r\n'
        "\r\n"
        "cy@example.com,Cy, complained ,\r\n"
        "di@example.com,Di,unsubscribed,\r\n"
        "Ann@Example.com,Ann again,subscribed,duplicate row\r\n"
        "not-an-address,X,subscribed,\r\n"
        "fay@example.com,Фая,bounced,no line break at the end"
    ).encode("utf-8")
    path = write_bytes(project, before)
    suppress(project, database_url, ("ANN@example.com", "unsubscribed", "one-click"),
             ("bob@example.com", "invalid", "sendgrid-sync"), ("cy@example.com", "complained", "webhook"),
             ("di@example.com", "bounced", "webhook"), ("fay@example.com", "bounced", "webhook"),
             ("eve@example.com", "manual", "cli"), ("zed@example.com", "manual", "cli"))
    r = run_cli("subscribers", "apply", "--list", "readers", cwd=project.root, env=store_env(database_url))
    assert r.code == 0, r.output
    assert path.read_bytes() == after
    assert r.out.splitlines() == [
        "subscribers/readers.csv:2: ann@example.com: subscribed -> unsubscribed (unsubscribed via one-click, 2026-11-27)",
        "subscribers/readers.csv:5: bob@example.com: subscribed -> bounced (invalid via sendgrid-sync, 2026-11-27)",
        "subscribers/readers.csv:7: cy@example.com: subscribed -> complained (complained via webhook, 2026-11-27)",
        "subscribers/readers.csv:11: fay@example.com: subscribed -> bounced (bounced via webhook, 2026-11-27)",
        "4 rows changed in subscribers/readers.csv",
    ]
    # rows a send skips stay as they are: eve's (a line break in a value), the duplicate, the invalid
    # address. The list reads as it did, but for those statuses; a second run changes nothing at all
    stat = path.stat()
    again = run_cli("subscribers", "apply", "--list", "readers", cwd=project.root, env=store_env(database_url))
    assert again.code == 0 and "nothing to change" in again.out
    assert path.read_bytes() == after and path.stat().st_mtime_ns == stat.st_mtime_ns
    listed = SubscriberList(path)
    assert {s.email: s.status for s in listed} == {
        "ann@example.com": "unsubscribed", "bob@example.com": "bounced", "cy@example.com": "complained",
        "di@example.com": "unsubscribed", "fay@example.com": "bounced"}


def test_a_list_without_status_column_gets_one_on_every_row(project: Project, database_url: str | None) -> None:
    path = write_bytes(project, b'email,name\nann@example.com,"Ann\nAnnsdottir"\n\nbob@example.com,Bob\n'
                                b'"cy@example.com","Cy"\nbroken-row-with-one-field\n')
    suppress(project, database_url, ("bob@example.com", "manual", "cli"))
    r = run_cli("subscribers", "apply", "--list", "readers", cwd=project.root, env=store_env(database_url))
    assert r.code == 0, r.output
    assert path.read_bytes() == (b'email,name,status\nann@example.com,"Ann\nAnnsdottir",\n\nbob@example.com,Bob,'
                                 b'unsubscribed\n"cy@example.com","Cy",""\nbroken-row-with-one-field,\n')
    assert "subscribers/readers.csv:5: bob@example.com: subscribed -> unsubscribed (manual via cli" in r.out
    assert "has no status column: added one at the end of every row (the whole file changes)" in r.out
    # the broken row stays broken (one field short), rather than gaining a shifted column
    listed = SubscriberList(path)
    assert [s.status for s in listed] == ["unsubscribed", "subscribed"]
    assert len(listed.invalid) == 2  # the line break in Ann's name, and the broken row


def test_dry_run_prints_and_writes_nothing(project: Project, database_url: str | None) -> None:
    before = b"email,status\nann@example.com,\n"
    path = write_bytes(project, before)
    suppress(project, database_url, ("ann@example.com", "complained", "webhook"))
    r = run_cli("subscribers", "apply", "--list", "readers", "--dry-run", cwd=project.root,
                env=store_env(database_url))
    assert r.code == 0, r.output
    assert "subscribers/readers.csv:2: ann@example.com: subscribed -> complained" in r.out
    assert "1 row would change in subscribers/readers.csv (dry run: nothing written)" in r.out
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["readers.csv"]


def test_every_reason_has_a_status_the_list_accepts(tmp_path: Path) -> None:
    from newsletter.subscribers import STATUSES
    from newsletter.suppressions import REASONS

    assert set(REASON_STATUS) == set(REASONS) and set(REASON_STATUS.values()) <= set(STATUSES)
    assert REASON_STATUS["manual"] == "unsubscribed" and REASON_STATUS["invalid"] == "bounced"


def test_the_new_file_replaces_the_old_with_its_permissions_and_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"email,status\nann@example.com,subscribed\n")
    path.chmod(0o640)
    with open_store(tmp_path / "state") as store:
        store.suppressions.add("ann@example.com", "bounced", "webhook")
        result = apply_statuses(path, store.suppressions)
    assert result.written and [c.new for c in result.changes] == ["bounced"]
    assert path.read_bytes() == b"email,status\nann@example.com,bounced\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.csv", "state"]


def test_a_list_edited_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"email,status\nann@example.com,subscribed\n")

    class EditedMeanwhile(Suppressions):
        """The editor saves the list while apply is reading it."""

        def find(self, keys):  # type: ignore[no-untyped-def]
            with path.open("ab") as f:
                f.write(b"new@example.com,subscribed\n")
            return super().find(keys)

    with open_store(tmp_path / "state") as store:
        store.suppressions.add("ann@example.com", "bounced", "webhook")
        with pytest.raises(SubscriberListError, match="changed while the statuses were being written"):
            apply_statuses(path, EditedMeanwhile(store.db))
    assert path.read_bytes() == b"email,status\nann@example.com,subscribed\nnew@example.com,subscribed\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.csv", "state"]


def test_a_symlinked_list_is_written_where_the_link_points(tmp_path: Path) -> None:
    """The new list used to be renamed over the link itself: the link became a plain file and the
    list it pointed to (shared with another project, or kept elsewhere) never got the statuses."""
    shared = tmp_path / "shared" / "digest.csv"
    shared.parent.mkdir()
    shared.write_bytes(b"email,status\nann@example.com,subscribed\n")
    link = tmp_path / "subscribers" / "digest.csv"
    link.parent.mkdir()
    link.symlink_to(Path("..") / "shared" / "digest.csv")
    with open_store(tmp_path / "state") as store:
        store.suppressions.add("ann@example.com", "bounced", "webhook")
        result = apply_statuses(link, store.suppressions)
    assert result.written and result.changes[0].describe(link).startswith(f"{link}:2: ann@example.com")
    assert link.is_symlink() and shared.read_bytes() == b"email,status\nann@example.com,bounced\n"
    assert sorted(p.name for p in shared.parent.iterdir()) == ["digest.csv"]


@pytest.mark.parametrize("failing, error", [("mkstemp", errno.EROFS), ("fsync", errno.ENOSPC)])
def test_a_full_disk_or_a_read_only_folder_is_a_message_and_the_list_stays_whole(
        project: Project, monkeypatch: pytest.MonkeyPatch, failing: str, error: int) -> None:
    """It was `error: No space left on device` (no file, nothing to do), or named the temporary file."""
    before = b"email,name\nann@example.com,Ann\n"
    path = write_bytes(project, before)
    with open_store(project.root / ".newsletter") as store:
        store.suppressions.add("ann@example.com", "bounced", "webhook")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(tempfile if failing == "mkstemp" else os, failing, fail)
    r = run_cli("subscribers", "apply", "--list", "readers", cwd=project.root)
    assert r.code == 1 and "Traceback" not in r.output
    assert r.err.startswith(f"error: subscribers/readers.csv: the new list could not be written beside it in "
                            f"{path.parent} ({os.strerror(error)}); nothing was changed: free some space or "
                            "make the folder writable, and run the command again"), r.err
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["readers.csv"]
    if failing == "mkstemp":  # a list with nothing to change is not copied at all: no error then
        path.write_bytes(b"email,status\nann@example.com,bounced\n")
        r = run_cli("subscribers", "apply", "--list", "readers", cwd=project.root)
        assert (r.code, r.out) == (0, "nothing to change in subscribers/readers.csv: no subscribed row is suppressed\n")


def test_a_list_that_is_not_a_list_is_refused_as_send_refuses_it(project: Project) -> None:
    r = run_cli("subscribers", "apply", "--list", "missing", cwd=project.root)
    assert r.code == 1 and "subscribers/missing.csv: no such subscriber list" in r.err
    write_bytes(project, b"name\nAnn\n", "noemail")
    r = run_cli("subscribers", "apply", "--list", "noemail", cwd=project.root)
    assert r.code == 1 and "the header row needs an `email` column" in r.err
    write_bytes(project, b"email,status\nann@example.com,\xff\n", "latin")
    with open_store(project.root / ".newsletter") as store:
        store.suppressions.add("ann@example.com", "bounced", "webhook")
    r = run_cli("subscribers", "apply", "--list", "latin", cwd=project.root)
    assert r.code == 1 and "not UTF-8" in r.err


def test_random_lists_change_in_their_status_cells_only(tmp_path: Path) -> None:
    """Lists of every shape (quotes, commas and line breaks in fields, CRLF/LF/CR, blank lines,
    padding): what csv reads back differs from before in the status of suppressed rows only."""
    rng = random.Random(8)
    cells = ["", "x", "a,b", 'say "hi"', "two\nlines", "cr\r\nlf", " padded ", "Фая"]
    with open_store(tmp_path / "state") as store:
        for i in range(0, 40, 3):
            store.suppressions.add(f"r{i}@example.com", rng.choice(list(REASON_STATUS)), "cli")
        suppressed = store.suppressions.reasons(f"r{i}@example.com" for i in range(40))
        for n in range(60):
            ending = rng.choice(["\n", "\r\n", "\r"])
            out = io.StringIO(newline="")
            writer = csv.writer(out, lineterminator=ending,
                                quoting=rng.choice([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
            has_status = rng.random() < 0.7
            writer.writerow(["note", "email", "status"] if has_status else ["note", "email"])
            rows = []
            for i in range(rng.randint(0, 40)):
                # (csv.writer leaves a bare \n unquoted when its line ending is \r: no such cells then)
                note = rng.choice([c for c in cells if not (ending == "\r" and c == "two\nlines")])
                row = [note, f"r{i}@example.com"] + (
                    [rng.choice(["", "subscribed", " subscribed ", "bounced"])] if has_status else [])
                rows.append(row)
                writer.writerow(row)
                if rng.random() < 0.1:
                    out.write(ending)  # a blank line
            text = out.getvalue()
            if rng.random() < 0.3:
                text = text[: -len(ending)]  # no line break at the end
            path = tmp_path / f"list{n}.csv"
            path.write_bytes(text.encode())
            result = apply_statuses(path, store.suppressions)
            expected = []
            for row in rows:
                reason = suppressed.get(row[1])
                status = row[2] if has_status else ""
                readable = not any(c in row[0] for c in "\r\n")  # a line break in a value: skipped
                if reason and readable and status.strip() in ("", "subscribed"):
                    status = REASON_STATUS[reason]
                expected.append([row[0], row[1], status])
            with path.open(newline="", encoding="utf-8") as f:
                got = [r for r in csv.reader(f) if r]
            assert got[0] == ["note", "email", "status"]
            assert [(r[0], r[1]) for r in got[1:]] == [(e[0], e[1]) for e in expected]
            assert [r[2].strip() for r in got[1:]] == [e[2].strip() for e in expected]
            if not has_status or result.changes:
                assert result.written
            else:
                assert path.read_bytes() == text.encode()
            assert len(result.changes) == sum(1 for row, e in zip(rows, expected) if e[2] != (row[2] if has_status else ""))
            assert not result.unmatched
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("list")) == ["state"]


def test_a_reader_seen_only_after_an_unreadable_row_is_left_alone_and_named(project: Project) -> None:
    """csv cannot read a value longer than its field limit; the list reader then starts afresh on
    the next line, inside the quoted value, and finds a row there that apply cannot find again."""
    before = ('email,name,status\nann@example.com,"' + "x" * 140_000 + '\nbob@example.com,Bob,subscribed\n'
              'end",subscribed\ncy@example.com,Cy,subscribed\n').encode()
    path = write_bytes(project, before)
    with open_store(project.root / ".newsletter") as store:
        store.suppressions.add("bob@example.com", "bounced", "webhook")
        store.suppressions.add("cy@example.com", "bounced", "webhook")
    r = run_cli("subscribers", "apply", "--list", "readers", cwd=project.root)
    assert r.code == 1, r.output
    assert "subscribers/readers.csv:5: cy@example.com: subscribed -> bounced" in r.out
    assert ("subscribers/readers.csv:3: bob@example.com: suppressed (bounced), but the row could not be found "
            "again as the list reader read it") in r.err and "set its status to bounced by hand" in r.err
    assert path.read_bytes() == before.replace(b"cy@example.com,Cy,subscribed", b"cy@example.com,Cy,bounced")
