"""Subscriber lists: every row is sent, skipped with a located reason, or refused; none vanish."""

from __future__ import annotations

import pytest

from newsletter.errors import SubscriberListError
from newsletter.subscribers import SubscriberList, resolve_list

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
