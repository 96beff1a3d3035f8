"""`newsletter subscribers apply`: write the suppressions back into a subscriber list as statuses.

The list is the editor's file, in git: only the status cell of an affected row changes; every other
byte (column order, quoting, spacing, line endings, a byte-order mark, blank lines) stays as it was.
A list without a `status` column gets one at the end of every row (the one whole-file change). The
new file is written beside the old one, flushed to disk and renamed over it, so a crash leaves either
the old list or the new one, never half of each.

Reasons become statuses: unsubscribed -> unsubscribed, bounced and invalid -> bounced, complained ->
complained, manual -> unsubscribed (the CSV has no "manual": it means "do not send", as unsubscribed
does). Only the rows a send reads as readers who would still get mail change (valid, the first row of
their address, status subscribed or empty); a row with another status keeps it, and rows a send skips
(invalid, duplicates) are left as they are.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from .errors import NewsletterError, SubscriberListError
from .ledger import key_of
from .subscribers import Subscriber, SubscriberList
from .suppressions import normalize_address

if TYPE_CHECKING:
    from .suppressions import Suppression, Suppressions

REASON_STATUS = {"unsubscribed": "unsubscribed", "bounced": "bounced", "invalid": "bounced",
                 "complained": "complained", "manual": "unsubscribed"}
CHUNK = 1000  # readers looked up in the suppressions at a time
BOM = "\ufeff"
_UNQUOTED = re.compile(r"[^,\r\n]*")


@dataclass(frozen=True)
class Change:
    line: int
    email: str
    old: str  # as the cell had it, "" read as subscribed
    new: str
    because: Suppression

    def describe(self, path: Path | str) -> str:
        """`subscribers/x.csv:12: ann@example.com: subscribed -> unsubscribed (unsubscribed via
        one-click, 2026-11-27)`"""
        s = self.because
        return (f"{path}:{self.line}: {self.email}: {self.old or 'subscribed'} -> {self.new} "
                f"({s.reason} via {s.source}, {s.created_at[:10]})")


@dataclass
class ApplyResult:
    path: Path
    changes: list[Change] = field(default_factory=list)
    added_status_column: bool = False
    written: bool = False  # False for a dry run, and when nothing changed
    # rows the list reader yields but that could not be found again, byte for byte (only after a
    # row the reader skipped as unreadable): left alone, for the editor to set by hand
    unmatched: list[Change] = field(default_factory=list)


@dataclass(slots=True)
class _Field:
    start: int  # offsets in the record's text, quotes included
    end: int
    value: str
    quoted: bool


@dataclass(slots=True)
class _Record:
    line: int  # the line it starts on, as the subscriber list reports it
    text: str  # without its line ending
    ending: str  # "\r\n", "\n", "\r" or "" at the end of the file
    fields: list[_Field]


def apply_statuses(path: Path, suppressions: Suppressions, *, dry_run: bool = False) -> ApplyResult:
    """Set the status of each reader of the list at `path` who is suppressed. Idempotent: a second
    run finds nothing to change and leaves the file alone.

    Two passes: the subscriber list's own reader says which rows are readers and who they are (as a
    send reads them: valid, first row of an address, status subscribed); then the file is copied
    with only those rows' status cells rewritten."""
    listed = SubscriberList(path)  # the list's own checks: the file, its header
    before = path.stat()  # the file both passes read: an edit after this is never overwritten
    columns = [c.lower() for c in listed.columns]
    targets = _targets(listed, suppressions)
    result = ApplyResult(path, added_status_column="status" not in columns)
    status_at = len(columns) if result.added_status_column else columns.index("status")
    email_at = columns.index("email")
    if not targets and not result.added_status_column:
        return result  # nothing to change: the file is not even copied (its folder may be read-only)
    # a symlinked list is written where the link points: the link stays a link
    output = _Output(path.resolve(), dry_run, before)
    with path.open("r", encoding="utf-8", newline="") as source:
        try:
            bom = source.read(1)
            if bom != BOM:
                source.seek(0)
                bom = ""
            records = _records(source)
            header = next(records)
            with output as out:
                out.write(bom + header.text + (_new_cell(header, "status") if result.added_status_column else "")
                          + header.ending)
                for record in records:
                    out.write(_rewritten(record, targets.pop(record.line, None), email_at, status_at,
                                         len(columns), result) + record.ending)
                result.unmatched += [change for _, change in sorted(targets.items())]
                output.commit = bool(result.changes) or result.added_status_column
        except UnicodeDecodeError as e:
            raise SubscriberListError(f"{path}: not UTF-8 ({e.reason}); save the list as UTF-8") from None
        except OSError as e:  # a full disk, a read-only folder: the old list is still there, whole
            raise SubscriberListError(
                f"{path}: the new list could not be written beside it in {output.path.parent} "
                f"({e.strerror or e}); nothing was changed: free some space or make the folder "
                "writable, and run the command again") from None
    result.written = not dry_run and (bool(result.changes) or result.added_status_column)
    return result


def _targets(listed: SubscriberList, suppressions: Suppressions) -> dict[int, Change]:
    """line -> the change due there, for each subscribed reader who is suppressed."""
    targets: dict[int, Change] = {}
    chunk: list[Subscriber] = []

    def look_up() -> None:
        found = suppressions.find({s.key for s in chunk})
        for sub in chunk:
            if (because := found.get(sub.key)) is not None:
                targets[sub.line] = Change(sub.line, sub.email, "", REASON_STATUS[because.reason], because)
        chunk.clear()

    for sub in listed:
        if sub.status == "subscribed":
            chunk.append(sub)
            if len(chunk) == CHUNK:
                look_up()
    look_up()
    return targets


def _rewritten(r: _Record, due: Change | None, email_at: int, status_at: int, width: int,
               result: ApplyResult) -> str:
    """The record's text with its status cell set (or, without a status column, appended)."""
    if due is not None and not _same_reader(r, due, email_at, status_at, width, result.added_status_column):
        result.unmatched.append(due)
        due = None
    if result.added_status_column:
        if not _has_text(r):
            return r.text  # a blank line stays blank
        if due is not None:
            result.changes.append(due)
        return r.text + _new_cell(r, due.new if due else "")
    if due is None:
        return r.text
    cell = r.fields[status_at]
    result.changes.append(replace(due, old=cell.value.strip()))
    return r.text[: cell.start] + _replaced(r.text[cell.start : cell.end], cell, due.new) + r.text[cell.end :]


def _same_reader(r: _Record, due: Change, email_at: int, status_at: int, width: int, no_status: bool) -> bool:
    """The record is the reader the list reader yielded on that line, still subscribed."""
    if len(r.fields) != width:
        return False
    try:
        email = normalize_address(r.fields[email_at].value)
    except NewsletterError:
        return False
    return key_of(email) == key_of(due.email) and (
        no_status or r.fields[status_at].value.strip().lower() in ("", "subscribed"))


def _replaced(raw: str, cell: _Field, new: str) -> str:
    """The cell with its value replaced: quoted stays quoted, spaces around a bare value stay."""
    if cell.quoted:
        return f'"{new}"'
    m = re.fullmatch(r"(\s*)(.*?)(\s*)", raw, re.DOTALL)
    assert m is not None
    return m.group(1) + new + m.group(3)


def _new_cell(record: _Record, value: str) -> str:
    """A cell appended to a row: quoted only in a row whose every cell is quoted."""
    quoted = bool(record.fields) and all(f.quoted for f in record.fields)
    return f',"{value}"' if quoted else f",{value}"


def _has_text(record: _Record) -> bool:
    """The rows the subscriber list skips as blank are left alone."""
    return any(f.value.strip() for f in record.fields)


# --- a CSV reader that knows where each field is ----------------------------------------------------


def _records(source: TextIO) -> Iterator[_Record]:
    """The records of a CSV file read with newline="", split as Python's csv module splits them
    (quotes, doubled quotes, line breaks inside quotes, \r\n, \n or \r endings), with the offsets
    of each field. Lines without a quote, nearly all of a list, take the fast path."""
    lines = iter(source)
    line_no = 0
    for line in lines:
        line_no += 1
        start = line_no
        body, ending = _split_ending(line)
        if '"' not in body:
            fields, pos = [], 0
            for value in body.split(",") if body else []:
                fields.append(_Field(pos, pos + len(value), value, False))
                pos += len(value) + 1
            yield _Record(start, body, ending, fields)
            continue
        text = line
        while (parsed := _parse_quoted(text, at_end=False)) is None:
            more = next(lines, None)
            if more is None:  # the csv module takes the rest of the file as the open field
                parsed = _parse_quoted(text, at_end=True)
                break
            line_no += 1
            text += more
        assert parsed is not None
        fields, end = parsed
        yield _Record(start, text[:end], text[end:], fields)


def _split_ending(line: str) -> tuple[str, str]:
    if line.endswith("\r\n"):
        return line[:-2], "\r\n"
    if line.endswith(("\n", "\r")):
        return line[:-1], line[-1]
    return line, ""


def _parse_quoted(text: str, at_end: bool) -> tuple[list[_Field], int] | None:
    """Fields of the record at the start of `text` and where its line ending starts; None if a
    quoted field is still open at the end of `text` (the record goes on on the next line), unless
    `text` ends the file: then the open field runs to its end."""
    fields: list[_Field] = []
    i, n = 0, len(text)
    while True:
        start, quoted, value = i, False, []
        if i < n and text[i] == '"':
            quoted, i = True, i + 1
            while True:
                j = text.find('"', i)
                if j < 0:
                    if not at_end:
                        return None
                    value.append(text[i:])
                    fields.append(_Field(start, n, "".join(value), quoted))
                    return fields, n
                value.append(text[i:j])
                if j + 1 < n and text[j + 1] == '"':
                    value.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
        # unquoted text, or text after a closing quote (Python's csv keeps it, as literal text)
        j = _UNQUOTED.match(text, i).end()  # type: ignore[union-attr]  # (always matches)
        value.append(text[i:j])
        fields.append(_Field(start, j, "".join(value), quoted))
        if j < n and text[j] == ",":
            i = j + 1
            continue
        return fields, j


class _Output:
    """The new list, written to a temporary file beside the old one and renamed over it on commit
    (after fsync), keeping the old file's permissions; a dry run writes nothing."""

    def __init__(self, path: Path, dry_run: bool, before: os.stat_result):
        self.path = path
        self.dry_run = dry_run
        self.commit = False
        self._before = before
        self._tmp: Path | None = None
        self._file: TextIO | None = None

    def __enter__(self) -> TextIO:
        if self.dry_run:
            return cast(TextIO, _Discard())
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "w", encoding="utf-8", newline="")
        return self._file

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._file is None or self._tmp is None:
            return
        try:
            if exc_type is None and self.commit:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                os.chmod(self._tmp, self._before.st_mode & 0o7777)
                now = self.path.stat()
                if (now.st_mtime_ns, now.st_size) != (self._before.st_mtime_ns, self._before.st_size):
                    raise SubscriberListError(f"{self.path}: changed while the statuses were being written; "
                                              "nothing was written: run the command again")
                os.replace(self._tmp, self.path)
                self._tmp = None
                _fsync_dir(self.path.parent)
        finally:
            self._file.close()
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)


class _Discard(io.TextIOBase):
    """Where a dry run writes the new list: nowhere."""

    def write(self, text: str) -> int:
        return len(text)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
