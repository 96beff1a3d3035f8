"""`newsletter subscribers apply`: write the suppressions back into a subscriber list as statuses.

The list is the editor's file, in git: only the status cell of an affected row changes; every other
byte (column order, quoting, spacing, line endings, a byte-order mark, blank lines) stays as it was.
A list without a `status` column gets one at the end of every row (the one whole-file change). The
new file is written beside the old one, flushed to disk and renamed over it, so a crash leaves either
the old list or the new one, never half of each.

Reasons become statuses: unsubscribed -> unsubscribed, bounced and invalid -> bounced, complained ->
complained, manual -> unsubscribed (the CSV has no "manual": it means "do not send", as unsubscribed
does). Only rows that would still get mail (status subscribed or empty) change; a row that already
has another status keeps it.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from .errors import SubscriberListError
from .ledger import key_of
from .subscribers import SubscriberList

if TYPE_CHECKING:
    from .suppressions import Suppression, Suppressions

REASON_STATUS = {"unsubscribed": "unsubscribed", "bounced": "bounced", "invalid": "bounced",
                 "complained": "complained", "manual": "unsubscribed"}
CHUNK = 1000  # rows looked up in the suppressions at a time
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
    """Set the status of each row of the list at `path` whose address is suppressed. Idempotent: a
    second run finds nothing to change and leaves the file alone."""
    columns = [c.lower() for c in SubscriberList(path).columns]  # the list's own checks: file, header
    result = ApplyResult(path)
    with path.open("r", encoding="utf-8", newline="") as source:
        try:
            bom = source.read(1)
            if bom != BOM:
                source.seek(0)
                bom = ""
            records = _records(source)
            header = next(records)
            result.added_status_column = "status" not in columns
            # a column named twice: the last one counts, as in the subscriber list
            status_at = len(columns) if result.added_status_column else _last(columns, "status")
            email_at = _last(columns, "email")
            output = _Output(path, dry_run)
            with output as out:
                out.write(bom + header.text + (_new_cell(header, "status") if result.added_status_column else "")
                          + header.ending)
                chunk: list[_Record] = []
                for record in records:
                    chunk.append(record)
                    if len(chunk) == CHUNK:
                        _apply(chunk, out, suppressions, email_at, status_at, len(columns), result)
                        chunk = []
                _apply(chunk, out, suppressions, email_at, status_at, len(columns), result)
                output.commit = bool(result.changes) or result.added_status_column
        except UnicodeDecodeError as e:
            raise SubscriberListError(f"{path}: not UTF-8 ({e.reason}); save the list as UTF-8") from None
    result.written = not dry_run and (bool(result.changes) or result.added_status_column)
    return result


def _apply(chunk: list[_Record], out: TextIO, suppressions: Suppressions, email_at: int, status_at: int,
           width: int, result: ApplyResult) -> None:
    keys = {id(r): _key(r.fields[email_at].value) for r in chunk if len(r.fields) == width and _has_text(r)}
    found = suppressions.find(set(keys.values()))
    for r in chunk:
        text = r.text
        key = keys.get(id(r))
        s = found.get(key) if key else None
        if result.added_status_column:
            if _has_text(r):
                text += _new_cell(r, REASON_STATUS[s.reason] if s else "")
                if s:
                    result.changes.append(Change(r.line, r.fields[email_at].value.strip(), "",
                                                 REASON_STATUS[s.reason], s))
        elif s:
            cell = r.fields[status_at]
            old = cell.value.strip()
            if old.lower() in ("", "subscribed"):
                new = REASON_STATUS[s.reason]
                text = text[: cell.start] + _replaced(text[cell.start : cell.end], cell, new) + text[cell.end :]
                result.changes.append(Change(r.line, r.fields[email_at].value.strip(), old, new, s))
        out.write(text + r.ending)


def _last(columns: list[str], name: str) -> int:
    return len(columns) - 1 - columns[::-1].index(name)


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


def _key(email: str) -> str:
    """The send record's key for a cell, as the subscriber list computes it (validated, normalized,
    case-folded); an address that does not validate is matched as written."""
    email = email.strip()
    if email.isascii() and "xn--" not in email.lower():
        return key_of(email)  # what validation would give, ~40 µs sooner
    from .suppressions import normalize_address
    from .errors import NewsletterError

    try:
        return key_of(normalize_address(email))
    except NewsletterError:
        return key_of(email)


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

    def __init__(self, path: Path, dry_run: bool):
        self.path = path
        self.dry_run = dry_run
        self.commit = False
        self._before = path.stat()
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
