"""Subscriber lists: a streaming CSV reader that validates, de-duplicates and reports every skip.

Memory stays flat in the list's length: rows are streamed, and the "seen" set for de-duplication
lives in a temporary on-disk SQLite table rather than a Python set (seen.py).
A bad row (a broken quote, an oversized or control-character field) is reported and skipped; it
never aborts the list, and one row never takes more than MAX_ROW characters of memory.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO

from .addresses import AddressValidator, EmailNotValidError, address_key
from .errors import Problem, SubscriberListError
from .seen import SeenKeys

STATUSES = ("subscribed", "unsubscribed", "bounced", "complained")
RESERVED = ("email", "name", "status")
MAX_ADDRESS_FIELD = 1_000  # characters in `email` and `name` (and in a column name)
MAX_FIELD = 10_000  # characters in any other column
MAX_ROW = 1_000_000  # characters one row (all its lines) may take while it is read
_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "bars"}  # what spreadsheets export instead of commas
_DEDUP_BATCH = 1_000  # rows de-duplicated with one look-up in the "seen" table

# Cc (C0, DEL, C1: NUL, TAB, CR, LF, U+0085 ...) and the Unicode line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# what looks like an address, for naming readers in messages; linear time on hostile text: a match
# starts only where a run of local-part characters starts, and every repetition is bounded
_ADDRESS = re.compile(r"(?<![\w.+'&%=~-])[\w.+'&%=~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")


def describe_control(value: str) -> str | None:
    """`a line break (U+000A) at character 5` for the first control character in value, or None."""
    m = _CONTROL.search(value)
    if m is None:
        return None
    ch = m.group()
    kind = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL character",
            "\x85": "a line break", "\u2028": "a line separator", "\u2029": "a paragraph separator"}
    return f"{kind.get(ch, 'a control character')} (U+{ord(ch):04X}) at character {m.start() + 1}"


@dataclass(slots=True)  # not frozen: made once per row, and a frozen one costs 4x as much to make
class Subscriber:
    email: str  # as validated (domain normalized)
    name: str
    status: str
    fields: dict[str, str]  # every column, for merge fields: email, name, and extras
    line: int
    # identity for de-duplication, the send record and tokens (see address_key); computed once
    key: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            self.key = address_key(self.email)


def resolve_list(spec: str, root: Path) -> Path:
    """`--list digest` -> subscribers/digest.csv; a path to a CSV is taken as is."""
    if spec.endswith(".csv") or "/" in spec or "\\" in spec:
        return Path(spec)
    return root / "subscribers" / f"{spec}.csv"


class _RowTooLong(Exception):
    """Raised from inside csv.reader's input: the row being read passed MAX_ROW characters."""


class _Lines:
    """The file's lines for csv.reader, numbered, with the current row's text kept (up to
    MAX_ROW characters) so that a broken row can be described. csv.reader starts afresh on the
    next line after any error, which is what lets one bad row be skipped."""

    def __init__(self, f: TextIO, cap: int = MAX_ROW):
        self.f = f
        self.cap = cap
        self.lineno = 0  # lines handed out (or skipped) so far
        self.start = 1  # first line of the current row
        self.text: list[str] = []  # the current row's lines
        self.used = 0
        self.first: str | None = None  # the row's first line, when it was read already
        self.error: Exception | None = None  # why the last row rows() gave as None is unreadable

    def begin(self, first: str | None = None) -> None:
        self.start = self.lineno + 1
        self.text.clear()
        self.used = 0
        self.first = first

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.first is not None:
            line, self.first = self.first, None
        else:
            line = self.f.readline(self.cap + 1)
            if not line:
                raise StopIteration
        self.lineno += 1
        self.used += len(line)
        self.text.append(line)
        if self.used > self.cap:
            if not line.endswith(("\n", "\r")):  # one physical line too long: skip the rest of it
                while (more := self.f.readline(self.cap)) and not more.endswith(("\n", "\r")):
                    pass
            raise _RowTooLong
        return line

    def rows(self) -> Iterator[tuple[int, list[str] | None, str]]:
        """(first line, fields, the fields joined with commas) of each row from here on; fields is
        None for a row csv cannot read (`error` says why).

        A line without a quote is a row of its own, split at its commas: exactly what csv.reader
        makes of it (no quote: no escapes, no line break inside a value), at a third of the cost.
        A line with a quote, or a long one, goes to csv.reader, which may take more lines for the row."""
        reader = csv.reader(self)
        readline, cap = self.f.readline, self.cap
        plain = min(cap, csv.field_size_limit())  # longer: csv.reader reports the value or the row
        while line := readline(cap + 1):
            if '"' not in line and len(line) <= plain:
                self.lineno += 1
                text = line.rstrip("\r\n")  # one line ending at most: readline stops at the first
                yield self.lineno, text.split(",") if text else [], text  # csv.reader: [] for ""
                continue
            self.begin(line)
            try:
                row = next(reader)
            except (csv.Error, _RowTooLong) as e:  # csv.reader starts afresh on the next line
                self.error = e
                yield self.start, None, ""
                continue
            yield self.start, row, ",".join(row)

    def row_text(self, start: int, joined: str) -> list[str]:
        """The lines of the row that starts at `start` (the last one rows() gave), to describe it."""
        return self.text if self.start == start and self.text else [joined]


def _swallowed(lines: list[str], width: int) -> tuple[list[str], int]:
    """(addresses, rows) among the lines after a row's first one that look like rows of their
    own: what a quote that runs on took into one value."""
    addresses: list[str] = []
    rows = 0
    for line in lines[1:]:
        found = _ADDRESS.findall(line)
        if (found and ("," in line or width == 1 or line.strip(' \r\n"') == found[0])) or (
                width > 2 and line.count(",") >= width - 1):
            addresses += found
            rows += 1
    return addresses, rows


def _own_address(lines: list[str]) -> str | None:
    """The first address on a row's first line: whom a broken row concerns."""
    m = _ADDRESS.search(lines[0][:MAX_ADDRESS_FIELD * 4]) if lines else None
    return m.group() if m else None


def _who(lines: list[str]) -> str:
    own = _own_address(lines)
    return f"the row of {own}" if own else "the row"


def _some(addresses: list[str], n: int = 10) -> str:
    shown = ", ".join(addresses[:n])
    return shown + (f" and {len(addresses) - n} more" if len(addresses) > n else "")


@dataclass
class SubscriberList:
    """Iterate to stream valid, unique rows; invalid rows and duplicates are collected as Problems.

    allow_utf8_local: accept non-ASCII characters before the @ (they need SMTPUTF8, which an SMTP
    server may offer; SendGrid never does: pass False for SendGrid).
    """

    path: Path
    allow_utf8_local: bool = True
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
                header = next(csv.reader(_Lines(f, cap=64 * MAX_ADDRESS_FIELD)), None)
        except UnicodeDecodeError as e:
            raise SubscriberListError(
                f"{self.path}: not UTF-8 ({e.reason} at byte {e.start}); save the list as UTF-8 "
                "(in a spreadsheet: CSV UTF-8)"
            ) from None
        except (csv.Error, _RowTooLong):
            self._header_error(f"the header row is longer than {64 * MAX_ADDRESS_FIELD:,} characters")
        self.columns = [h.strip() for h in header or []]
        self._check_header()

    def _header_error(self, what: str) -> NoReturn:
        raise SubscriberListError(
            f"{self.path}:1: {what}; the first row must hold the column names (email, name, status, "
            "and your own columns): is this the right file, or is its first row missing?")

    def _check_header(self) -> None:
        if not any(self.columns):
            self._header_error("the first row is empty" if self.path.stat().st_size else "the file is empty")
        if len(self.columns) == 1 and (sep := next((c for c in ";\t|" if c in self.columns[0]), None)):
            raise SubscriberListError(
                f"{self.path}:1: the columns are separated by {_SEPARATORS[sep]}, not commas; save the list as "
                "CSV with commas (in a spreadsheet: CSV UTF-8, comma-delimited)")
        seen: dict[str, int] = {}
        for i, name in enumerate(self.columns, 1):
            if len(name) > MAX_ADDRESS_FIELD:
                self._header_error(f"column {i}'s name is {len(name):,} characters long")
            if (bad := describe_control(name)) is not None:
                self._header_error(f"column {i}'s name contains {bad}")
            folded = name.lower()
            if folded and folded in seen:
                raise SubscriberListError(
                    f"{self.path}:1: column {name!r} appears twice (columns {seen[folded]} and {i}; "
                    "names compare case-insensitively): rename or remove one, so that it is clear "
                    "which column holds what")
            seen[folded] = i
        if "email" not in seen:
            found = ", ".join(repr(c[:40]) for c in self.columns[:10]) + (", ..." if len(self.columns) > 10 else "")
            raise SubscriberListError(f"{self.path}:1: the header row needs an `email` column (it has {found}); "
                                      "name the column of addresses `email`")

    def _problem(self, line: int, message: str, column: str = "") -> Problem:
        return Problem(self.path, line, column, message)

    def _runaway(self, lines: _Lines, why: str = "") -> Problem | None:
        """The row in `lines` as a quote that runs on made it, if it swallowed what look like rows."""
        addresses, rows = _swallowed(lines.text, len(self.columns))
        if not rows:
            return None
        own = _own_address(lines.text)
        taken = (f"the {len(addresses)} address{'es' * (len(addresses) != 1)} it swallowed ({_some(addresses)})"
                 if addresses else f"the {rows} lines after it that look like rows")
        return self._problem(lines.start, (
            f"{why}a quote (\") on line {lines.start} runs on to line {lines.lineno}, so lines "
            f"{lines.start}-{lines.lineno} became one row: {own or 'this row'} and {taken} are not sent. "
            f"Close the quote on line {lines.start} (write a quote inside a value as \"\") or remove "
            "it, and run again"))

    def _unreadable(self, lines: _Lines, error: Exception) -> Problem:
        """A row csv cannot read or that passed MAX_ROW: skipped, described as well as we can."""
        if isinstance(error, _RowTooLong):
            why = f"the row is longer than {MAX_ROW:,} characters"
        elif "field limit" in str(error):
            why = f"a value is longer than {csv.field_size_limit():,} characters"
        else:
            why = f"cannot read the row ({error})"
        if problem := self._runaway(lines, why + ": "):
            return problem
        span = f"lines {lines.start}-{lines.lineno}" if lines.lineno > lines.start else f"line {lines.start}"
        own = _own_address(lines.text)
        return self._problem(lines.start, f"{why} ({span}{', ' + own if own else ''}); the row is skipped")

    def _check_fields(self, row: list[str], start: int, text: list[str]) -> Problem | None:
        """Length and control characters, for every field of a row (its lines are `text`)."""
        for column, value in zip(self.columns, row):
            limit = MAX_ADDRESS_FIELD if column.lower() in ("email", "name") else MAX_FIELD
            if len(value) > limit:
                return self._problem(start, f"{len(value):,} characters, more than the {limit:,} "
                                     f"allowed; {_who(text)} is skipped", column or "(unnamed column)")
        for column, value in zip(self.columns, row):
            if (bad := describe_control(value.strip())) is not None:
                return self._problem(start, f"contains {bad}; a value must be one line of plain "
                                     f"text: fix it in the list ({_who(text)} is skipped, not altered)",
                                     column or "(unnamed column)")
        return None

    def __iter__(self) -> Iterator[Subscriber]:
        seen = SeenKeys()
        lower = [c.lower() for c in self.columns]
        names = [c if c in RESERVED else o for c, o in zip(lower, self.columns)]
        i_email = lower.index("email")
        i_status = lower.index("status") if "status" in lower else None
        i_name = lower.index("name") if "name" in lower else None
        width = len(self.columns)
        check = AddressValidator()  # each distinct domain validated once per reading
        pending: list[Subscriber] = []  # valid rows waiting for their batched de-duplication
        lines: _Lines | None = None
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as f:
                lines = _Lines(f)
                lines.begin()
                next(csv.reader(lines), None)  # the header, checked when the list was opened
                for start, row, joined in lines.rows():
                    if row is None:
                        self.rows += 1
                        self.invalid.append(self._unreadable(lines, lines.error or csv.Error()))
                        continue
                    # a blank row (whitespace only) is not a reader; a row with an address is not blank
                    if (len(row) != width or not row[i_email] or row[i_email].isspace()) \
                            and not "".join(row).strip():
                        continue
                    self.rows += 1
                    if lines.lineno > start and (problem := self._runaway(lines)):
                        self.invalid.append(problem)  # a quoted value ran on over what look like rows
                        continue
                    if len(row) != width:
                        self.invalid.append(self._problem(
                            start, f"{len(row)} fields where the header has {width}; quote values "
                            f"that contain commas ({_who(lines.row_text(start, joined))} is skipped)"))
                        continue
                    # no value is longer than the whole row, and printable text has no control
                    # character (isprintable() is one C loop, ~5x faster than the regex): the usual row
                    suspect = len(joined) > MAX_ADDRESS_FIELD or not joined.isprintable() and _CONTROL.search(joined)
                    if suspect and (problem := self._check_fields(row, start, lines.row_text(start, joined))):
                        self.invalid.append(problem)
                        continue
                    row = [v.strip() for v in row]
                    status = (row[i_status] if i_status is not None else "") or "subscribed"
                    if status != "subscribed":
                        written, status = status, status.lower()
                        if status not in STATUSES:
                            self.invalid.append(self._problem(
                                start, f"status {written!r} is not one of {', '.join(STATUSES)}"))
                            continue
                    try:
                        valid = check(row[i_email])
                    except EmailNotValidError as e:
                        self.invalid.append(self._problem(start, f"{row[i_email]!r}: {e}"))
                        continue
                    email = valid.normalized
                    if not self.allow_utf8_local and not valid.local_part.isascii():
                        self.invalid.append(self._problem(start, (
                            f"{email!r}: non-ASCII characters before the @ need SMTPUTF8, which "
                            "this provider cannot deliver (SendGrid never can): ask the reader for "
                            "another address, or send through an SMTP server that offers SMTPUTF8")))
                        continue
                    row[i_email] = email
                    pending.append(Subscriber(email, row[i_name] if i_name is not None else "",
                                              status, dict(zip(names, row)), start, valid.key))
                    if len(pending) >= _DEDUP_BATCH:
                        yield from self._unique(seen, pending)
                        pending = []
                yield from self._unique(seen, pending)
        except UnicodeDecodeError as e:
            line = lines.lineno + 1 if lines else 1
            raise SubscriberListError(f"{self.path}:{line}: not UTF-8 ({e.reason}); save the list as UTF-8") from None
        finally:
            seen.close()

    def _unique(self, seen: SeenKeys, batch: list[Subscriber]) -> list[Subscriber]:
        """The rows of `batch` whose address no earlier row had, in order; the others are reported
        as duplicates. One statement per batch, not per row (see seen.py)."""
        if not batch:
            return []
        first = seen.add([(sub.key, sub.line) for sub in batch])
        if first:
            for sub in batch:
                if (line := first.get(sub.line)) is not None:
                    self.duplicates.append(self._problem(
                        sub.line, f"{sub.email} duplicates line {line} (case-insensitive); the first row wins"))
            batch = [sub for sub in batch if sub.line not in first]
        by_status = self.by_status
        for sub in batch:
            by_status[sub.status] += 1
        return batch
