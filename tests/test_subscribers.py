"""Subscriber lists: every row is sent, skipped with a located reason, or refused; none vanish."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import pytest

from newsletter.errors import SubscriberListError
from newsletter.seen import SeenKeys
from newsletter.subscribers import SubscriberList, _Lines, _RowTooLong, resolve_list

LIST = """\
email,name,status,company
anna@example.com,Анна,,Lab
Bob@Example.ORG,Bob,subscribed,
carol@example.com,Carol,unsubscribed,
not-an-address,Nobody,,
bob@example.org,Bob again,subscribed,
dave@example.com,"Dave, Jr.",bounced,
erin@example.com,Erin,maybe,
"frank@example.com","Frank
Multiline",complained,
gina@example.com,Gina,subscribed,"Acme, Inc."
"""


def test_rows_are_validated_deduplicated_and_accounted_for(project):
    path = project.write_list(LIST)
    subs = SubscriberList(path)
    got = list(subs)
    assert [s.email for s in got] == ["anna@example.com", "Bob@example.org", "carol@example.com",
                                      "dave@example.com", "gina@example.com"]
    assert [s.line for s in got] == [2, 3, 4, 7, 11]
    assert [s.status for s in got] == ["subscribed", "subscribed", "unsubscribed", "bounced", "subscribed"]
    assert [str(p).split(": ")[0] for p in subs.invalid] == [f"{path}:5", f"{path}:8", f"{path}:9"]
    assert "An email address must have an @-sign" in str(subs.invalid[0])
    assert "status 'maybe' is not one of" in str(subs.invalid[1])
    # a line break in a name is refused, not quietly altered: it would break the To: header
    assert str(subs.invalid[2]).startswith(f"{path}:9: name: contains a line break (U+000A) at character 6")
    assert [str(p) for p in subs.duplicates] == [
        f"{path}:6: bob@example.org duplicates line 3 (case-insensitive); the first row wins"]
    # every data row is accounted for: yielded, invalid or duplicate
    assert subs.rows == 9 == len(got) + len(subs.invalid) + len(subs.duplicates)  # Frank spans 2 lines, 1 row
    assert subs.by_status == {"subscribed": 3, "unsubscribed": 1, "bounced": 1}


def test_extra_columns_become_merge_fields(project):
    subs = list(SubscriberList(project.write_list(LIST)))
    assert subs[0].fields["company"] == "Lab"
    assert subs[-1].fields["company"] == "Acme, Inc."
    assert subs[0].name == "Анна"


def test_a_row_with_the_wrong_number_of_fields_is_reported(project):
    path = project.write_list("email,name\na@example.com,A,extra\nb@example.com,B\n")
    subs = SubscriberList(path)
    assert [s.email for s in subs] == ["b@example.com"]
    assert str(subs.invalid[0]).startswith(f"{path}:2: 3 fields where the header has 2")


def test_header_without_email_column_is_refused(project):
    with pytest.raises(SubscriberListError, match=r"readers.csv:1: the header row needs an `email` column"):
        SubscriberList(project.write_list("mail,name\na@example.com,A\n"))


def test_missing_list_says_what_to_do(project):
    with pytest.raises(SubscriberListError, match="no such subscriber list"):
        SubscriberList(project.root / "subscribers" / "nope.csv")


def test_list_names_resolve_under_subscribers(project):
    assert resolve_list("digest", project.root) == project.root / "subscribers" / "digest.csv"
    assert str(resolve_list("elsewhere/list.csv", project.root)) == "elsewhere/list.csv"


def test_bom_and_blank_lines_are_tolerated(project):
    path = project.root / "subscribers" / "bom.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes("\ufeffemail,name\r\na@example.com,A\r\n\r\nb@example.com,B\r\n".encode())
    subs = SubscriberList(path)
    assert [(s.email, s.line) for s in subs] == [("a@example.com", 2), ("b@example.com", 4)]


def test_a_list_that_is_not_utf8_is_refused_with_a_hint(project):
    path = project.root / "subscribers" / "latin1.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes("email,name\njérôme@example.com,Jérôme\n".encode("latin-1"))
    with pytest.raises(SubscriberListError, match=r"latin1.csv: not UTF-8 .*save the list as UTF-8"):
        list(SubscriberList(path))


# --- the reader at list speed: the same rows, the same duplicates -------------------------------

_PIECES = ["a", "b@example.com", "Ann", " ", ",", ",", '"', '""', "\n", "\r\n", "\r", "\t", "\x00", "é", "Я",
           "=1+1", "x" * 40]


def _csv_reader_rows(path: Path) -> list[tuple[int, list[str] | None]]:
    """What csv.reader alone makes of a list, row by row with each row's first line (None: a row
    it cannot read): the reference the list's own reading must match."""
    rows: list[tuple[int, list[str] | None]] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        lines = _Lines(f)
        reader = csv.reader(lines)
        lines.begin()
        next(reader)
        while True:
            lines.begin()
            try:
                row = next(reader)
            except StopIteration:
                return rows
            except (csv.Error, _RowTooLong):
                rows.append((lines.start, None))
                continue
            rows.append((lines.start, row))


@pytest.mark.parametrize("seed", range(40))
def test_rows_are_read_exactly_as_csv_reader_reads_them(tmp_path, seed):
    """A line without a quote is split at its commas without csv.reader: quotes, line breaks inside
    quotes, CR, CRLF, NUL and blank lines must come out exactly as csv.reader has them, lines included."""
    rng = random.Random(seed)
    text = "email,name,note\n" + "".join(rng.choice(_PIECES) for _ in range(400))
    path = tmp_path / "list.csv"
    path.write_text(text, encoding="utf-8", newline="")
    with path.open(newline="", encoding="utf-8-sig") as f:
        lines = _Lines(f)
        lines.begin()
        next(csv.reader(lines))
        ours = [(start, row) for start, row, _ in lines.rows()]
    assert ours == _csv_reader_rows(path)


def test_duplicates_are_found_across_batches_whatever_lies_between(tmp_path):
    """Each duplicate names the line of the first row with its address, also thousands of rows
    later, whether the rows between are consecutive or broken by blank, invalid or quoted rows."""
    rng = random.Random(7)
    lines_out, first_line, want_dups, line = ["email,name"], {}, [], 1
    for i in range(5_000):
        who = rng.randrange(3_000)
        kind = rng.random() if i >= 2_500 else 1.0  # 2,500 rows on consecutive lines, then a mix
        line += 1
        if kind < 0.02:
            lines_out.append("")  # blank: not a reader
            continue
        address = f"Reader{who}@Example.com" if rng.random() < 0.5 else f"reader{who}@example.com"
        if kind < 0.04:
            lines_out.append(f"not-an-address-{i},X")
            continue
        if kind < 0.06:  # a value over two lines: refused (not one line of text), and one line more
            lines_out.append(f'{address},"Two\nlines"')
            line += 1
            continue
        lines_out.append(f'{address},"R, {i}"' if kind < 0.1 else f"{address},R {i}")  # quoted or not
        key = f"reader{who}@example.com"
        if key in first_line:
            want_dups.append((line, first_line[key]))
        else:
            first_line[key] = line
    path = tmp_path / "list.csv"
    path.write_text("\n".join(lines_out) + "\n", encoding="utf-8")
    subs = SubscriberList(path)
    got = list(subs)
    assert [(p.line, int(re.search(r"duplicates line (\d+)", p.message).group(1))) for p in subs.duplicates] \
        == want_dups
    assert [s.line for s in got] == sorted(first_line.values())
    assert subs.rows == len(got) + len(subs.invalid) + len(subs.duplicates)


def test_seen_keys_agree_with_or_without_sqlite_json():
    """Batches on consecutive lines go to SQLite as one JSON array: the same answers as one row at
    a time, a key with a NUL character included."""
    batches = [[("a", 2), ("b", 3), ("a", 4)], [("b", 5), ("c", 7), ("a\x00", 8), ("a", 9)],
               [("a\x00", 10), ("a", 11), ("d", 12)], [("d", 13), ("e", 14)]]
    answers = []
    for use_json in (True, False):
        seen = SeenKeys()
        seen._json = seen._json and use_json
        answers.append([seen.add(b) for b in batches])
        seen.close()
    assert answers[0] == answers[1] == [{4: 2}, {5: 3, 9: 2}, {10: 8, 11: 2}, {13: 12}]
