"""What the editor sees in a real preview inbox: the CLI sends through SMTP to MailDev, and the
tests read the messages back through MailDev's REST API (JSON and the raw source), as a mail client
would show them.

MailDev is an npm tool installed by bench/setup-tools.sh into .tools/; without it these tests skip.
"""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from conftest import EXAMPLE, REPO, Project, Result, run_cli
from newsletter.personalize import verify_unsubscribe_token

pytestmark = pytest.mark.maildev

MAILDEV = REPO / ".tools" / "node_modules" / ".bin" / "maildev"
SECRET = "preview-inbox-test-secret-0123456789abcdef"
EDITOR = "editor@example.org"
ISSUE = "issues/2021-03.yaml"
SUBJECT = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["subject"]
# the list: an unsubscribed reader first, so "the first subscribed row" is not merely row 1
READERS = """\
email,name,status
gone@example.com,Ушедший Читатель,unsubscribed
anna@example.com,Анна Петрова,subscribed
boris@example.org,Борис,subscribed
chen.wei@example.net,Chen Wei,
"""
SUBSCRIBED = {"anna@example.com": "Анна Петрова", "boris@example.org": "Борис",
              "chen.wei@example.net": "Chen Wei"}
START_TIMEOUT = 30.0
MAIL_TIMEOUT = 15.0


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (all sockets held open together, so they cannot coincide)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class MailDev:
    """A running MailDev: its SMTP port and a small client for its REST API."""

    def __init__(self, proc: subprocess.Popen, smtp_port: int, web_port: int, log: Path):
        self.proc = proc
        self.smtp_port = smtp_port
        self.web_port = web_port
        self.log = log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/api"

    def request(self, path: str, method: str = "GET", timeout: float = 10.0) -> bytes:
        req = urllib.request.Request(self.base + path, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()

    def emails(self) -> list[dict]:
        return json.loads(self.request("/email"))

    def source(self, email_id: str) -> bytes:
        return self.request(f"/email/{email_id}/source")

    def clear(self) -> None:
        self.request("/email/all", method="DELETE")
        assert self.emails() == []

    def wait_for(self, count: int, timeout: float = MAIL_TIMEOUT) -> list[dict]:
        """Exactly `count` messages: waits for them to arrive, then a moment for any extra."""
        deadline = time.monotonic() + timeout
        while len(found := self.emails()) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # a stray extra copy would show up now
        found = self.emails()
        assert len(found) == count, (
            f"expected {count} messages in MailDev, found {len(found)}: "
            f"{[(m.get('subject'), [t['address'] for t in m.get('to', [])]) for m in found]}")
        return found

    def describe(self) -> str:
        code = self.proc.poll()
        log = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return f"MailDev (pid {self.proc.pid}, exit code {code}); its output:\n{log}"


def _stop(proc: subprocess.Popen) -> None:
    """Stop MailDev's whole process group: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    else:  # the leader exited: make sure no child is left holding a port
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_until_up(md: MailDev) -> None:
    """Until /api/healthz answers and the SMTP port greets; fails with MailDev's output."""
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if md.proc.poll() is not None:
            raise RuntimeError(f"MailDev exited during start-up: {md.describe()}")
        try:
            if json.loads(md.request("/healthz", timeout=2)) is True:
                with smtplib.SMTP("127.0.0.1", md.smtp_port, timeout=2) as smtp:
                    assert smtp.noop()[0] == 250
                return
        except (OSError, ValueError, smtplib.SMTPException) as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"MailDev did not come up within {START_TIMEOUT:.0f} s (last error: {last}); "
                       f"{md.describe()}")


@pytest.fixture(scope="module")
def maildev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailDev]:
    if not os.access(MAILDEV, os.X_OK):
        pytest.skip(f"MailDev is not installed ({MAILDEV} missing): run bench/setup-tools.sh")
    if shutil.which("node") is None:
        pytest.skip("MailDev needs Node.js 20+ (node not on PATH)")
    work = tmp_path_factory.mktemp("maildev")
    mails = work / "mails"  # its own folder: without one MailDev keeps sources in a shared /tmp/maildev
    mails.mkdir()
    for attempt in range(3):  # another process may grab a port between choosing and binding it
        smtp_port, web_port = _free_ports(2)
        log = work / f"maildev-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(MAILDEV), "--smtp", str(smtp_port), "--ip", "127.0.0.1",
                 "--web", str(web_port), "--web-ip", "127.0.0.1", "--mail-directory", str(mails)],
                cwd=work,  # MailDev looks for .maildevrc.json etc. in the cwd and its parents
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole below
            )
        md = MailDev(proc, smtp_port, web_port, log)
        try:
            _wait_until_up(md)
        except RuntimeError:
            _stop(proc)
            if attempt == 2 or "EADDRINUSE" not in md.describe():
                raise
            continue
        except BaseException:
            _stop(proc)
            raise
        break
    try:
        yield md
    finally:
        _stop(proc)


@pytest.fixture
def inbox(maildev: MailDev) -> MailDev:
    """MailDev, emptied before the test."""
    maildev.clear()
    return maildev


@pytest.fixture
def digest(project: Project) -> Project:
    """A project with the real March issue (Russian) and a four-row list."""
    (project.root / "issues").mkdir(exist_ok=True)
    shutil.copy(EXAMPLE, project.root / ISSUE)
    project.write_list(READERS)
    return project


def smtp_env(md: MailDev, **extra: str) -> dict[str, str]:
    return {"NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(md.smtp_port),
            "NEWSLETTER_SECRET": SECRET, **extra}


def sent_rows(project: Project) -> list[tuple[str, str]]:
    """(email, state) rows the send record holds for 2021-03; none when there is no record."""
    db = project.root / ".newsletter" / "sends.sqlite3"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT email, state FROM deliveries WHERE issue = '2021-03' "
                            "ORDER BY email").fetchall()


def unsubscribe_link(msg: EmailMessage) -> str:
    """The https link of List-Unsubscribe."""
    links = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
    https = [link for link in links if link.startswith("https://")]
    assert len(https) == 1, msg["List-Unsubscribe"]
    return https[0]


def check_source(raw: bytes) -> None:
    """The raw message is plain RFC 5322: ASCII-only headers (non-ASCII RFC 2047-encoded), every line
    within 998 octets."""
    head, _, _ = raw.partition(b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n")
    for line in head.splitlines():
        assert line.isascii(), f"non-ASCII header line (needs RFC 2047 encoding): {line!r}"
    for line in raw.splitlines():
        assert len(line) <= 998, f"line longer than 998 octets: {line[:80]!r}..."


def parts(msg: EmailMessage) -> list[EmailMessage]:
    assert msg.get_content_type() == "multipart/alternative", msg.get_content_type()
    found = list(msg.iter_parts())
    assert [p.get_content_type() for p in found] == ["text/plain", "text/html"]
    for p in found:
        assert p.get_content_charset() == "utf-8"
    return found


def greeting(name: str) -> str:
    return f"Привет, {name}!"


def html_attr(url: str) -> str:
    """A URL as it appears in an href (the renderer escapes & as &amp;)."""
    return url.replace("&", "&amp;")


def raw_header(raw: bytes, name: str) -> str:
    """A header exactly as it travelled (unfolded, nothing decoded)."""
    value = email.message_from_bytes(raw, policy=policy.compat32)[name]
    assert value is not None, f"no {name} header"
    return re.sub(r"\r?\n(?=[ \t])", "", str(value))


def send(project: Project, md: MailDev, *flags: str, **env: str) -> Result:
    result = run_cli("send", ISSUE, "--list", "readers", *flags, "--provider", "smtp",
                     cwd=project.root, env=smtp_env(md, **env))
    assert result.code == 0, result.output
    return result


def test_preview_copy_lands_in_the_editors_inbox(digest: Project, inbox: MailDev) -> None:
    result = send(digest, inbox, "--test", NEWSLETTER_PREVIEW_TO=EDITOR)
    assert f"[TEST] copy to {EDITOR}: sent" in result.out

    # one copy, to the editor only: not to preview@example.org from newsletter.toml (the
    # environment overrides it), and to none of the readers
    [mail] = inbox.wait_for(1)
    assert [t["address"] for t in mail["envelope"]["to"]] == [EDITOR]
    assert mail["to"] == [{"address": EDITOR, "name": ""}]
    assert mail["from"] == [{"address": "digest@example.org", "name": "Test Digest"}]
    assert mail["subject"] == f"[TEST] {SUBJECT}"  # MailDev decoded the RFC 2047 words to Cyrillic

    # as MailDev shows it: personalized with the first *subscribed* reader (Анна, not the
    # unsubscribed row above her), the whole document kept
    html, text = mail["html"], mail["text"]
    for body in (html, text):
        assert greeting("Анна Петрова") in body
        assert greeting("читатель") not in body  # the default for a reader without a name
        assert greeting("Ушедший Читатель") not in body
        assert "{{" not in body and "subscriber." not in body
    assert html.lstrip().lower().startswith("<!doctype html>"), html[:200]
    assert re.search(r'<html\b[^>]*\blang="ru"', html), html[:300]

    # as it travelled: a well-formed multipart/alternative, text first, HTML last
    raw = inbox.source(mail["id"])
    check_source(raw)
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == f"[TEST] {SUBJECT}"
    assert msg["To"] == EDITOR
    plain, rich = parts(msg)
    assert greeting("Анна Петрова") in plain.get_content()
    rich_html = rich.get_content()
    assert greeting("Анна Петрова") in rich_html
    assert rich_html.lstrip().lower().startswith("<!doctype html>")
    assert re.search(r'<html\b[^>]*\blang="ru"', rich_html)

    # RFC 8058 one-click unsubscribe (MailDev's JSON leaves out List-Unsubscribe, like From and To:
    # it keeps only the headers its parser returns as plain strings, so read the raw source).
    # The preview copy's link unsubscribes the editor's own address, never Анна's.
    link = unsubscribe_link(msg)
    query = parse_qs(urlsplit(link).query)
    assert link.startswith("https://example.org/unsubscribe?")
    assert query["email"] == [EDITOR]
    assert verify_unsubscribe_token(SECRET, EDITOR, query["token"][0])
    assert "<mailto:unsubscribe@example.org?subject=unsubscribe%20editor%40example.org>" \
        in msg["List-Unsubscribe"]
    assert "anna" not in msg["List-Unsubscribe"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert html_attr(link) in html and link in text  # the footer links match the header

    # a test send records nothing: the real send will still go to everyone
    assert sent_rows(digest) == []


def test_real_send_gives_each_reader_their_own_copy(digest: Project, inbox: MailDev) -> None:
    send(digest, inbox, "--send", "--yes")

    mails = inbox.wait_for(len(SUBSCRIBED))
    by_reader = {}
    for mail in mails:
        [rcpt] = mail["envelope"]["to"]
        by_reader[rcpt["address"]] = mail
    assert set(by_reader) == set(SUBSCRIBED)  # not the unsubscribed reader, not the editor

    tokens = {}
    for address, name in SUBSCRIBED.items():
        mail = by_reader[address]
        assert mail["to"] == [{"address": address, "name": name}]  # display name decoded
        # (the subject has its own test below: test_subject_decodes_as_written)
        for body in (mail["html"], mail["text"]):
            assert greeting(name) in body
            assert not [n for n in SUBSCRIBED.values() if n != name and greeting(n) in body]
        raw = inbox.source(mail["id"])
        check_source(raw)
        msg = email.message_from_bytes(raw, policy=policy.default)
        parts(msg)
        link = unsubscribe_link(msg)
        query = parse_qs(urlsplit(link).query)
        assert query["email"] == [address]
        token = query["token"][0]
        assert verify_unsubscribe_token(SECRET, address, token)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert html_attr(link) in mail["html"] and link in mail["text"]
        tokens[address] = token
    assert len(set(tokens.values())) == len(SUBSCRIBED), tokens

    assert sent_rows(digest) == sorted((address, "sent") for address in SUBSCRIBED)


def test_list_unsubscribe_travels_as_plain_urls(digest: Project, inbox: MailDev) -> None:
    """List-Unsubscribe (RFC 2369, RFC 8058) is a structured header: a list of <URL>s. RFC 2047
    encoded-words are not allowed in it; a receiver that (rightly) does not decode them finds no
    URL, and mailbox providers such as Gmail are reported to drop the one-click unsubscribe button
    then, which bulk senders must offer. A long header may be folded only at whitespace (after the
    comma between the URLs), never encoded."""
    send(digest, inbox, "--send", "--yes")

    for mail in inbox.wait_for(len(SUBSCRIBED)):
        raw = inbox.source(mail["id"])
        link = unsubscribe_link(email.message_from_bytes(raw, policy=policy.default))
        header = raw_header(raw, "List-Unsubscribe")
        assert "=?" not in header and f"<{link}>" in header, (
            f"List-Unsubscribe arrived RFC 2047-encoded (Python's email folds a token longer than "
            f"78 characters as encoded-words), so a receiver that does not decode it finds no "
            f"URL:\n{header}")
        assert raw_header(raw, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("flags", [("--test",), ("--send", "--yes")], ids=["preview", "real"])
def test_subject_decodes_as_written(digest: Project, inbox: MailDev, flags: tuple[str, ...]) -> None:
    """RFC 2047 §6.2: whitespace between two adjacent encoded-words is ignored when decoding, so a
    space the encoder leaves *between* encoded-words (rather than inside one) disappears in the
    inbox. Where the header folds depends on the subject's length, so the [TEST] copy can be fine
    while the readers' copies are not: both are checked, in MailDev and with Python's parser."""
    send(digest, inbox, *flags, NEWSLETTER_PREVIEW_TO=EDITOR)
    expected = f"[TEST] {SUBJECT}" if "--test" in flags else SUBJECT

    for mail in inbox.wait_for(1 if "--test" in flags else len(SUBSCRIBED)):
        raw = inbox.source(mail["id"])
        decoded = email.message_from_bytes(raw, policy=policy.default)["Subject"]
        assert (mail["subject"], decoded) == (expected, expected), (
            f"the subject shows as {mail['subject']!r} in MailDev and decodes as {decoded!r} with "
            f"Python's email; as sent:\nSubject: {raw_header(raw, 'Subject')}")


def test_list_id_arrives_the_same_in_every_copy(digest: Project, inbox: MailDev) -> None:
    """List-Id (RFC 2919) names the list, so that clients file and filter it: the same header, byte
    for byte, in the [TEST] copy and in every reader's, the Cyrillic name RFC 2047-encoded."""
    send(digest, inbox, "--test", NEWSLETTER_PREVIEW_TO=EDITOR, NEWSLETTER_NAME="Нейродайджест")
    send(digest, inbox, "--send", "--yes", NEWSLETTER_NAME="Нейродайджест")
    raws = [inbox.source(mail["id"]) for mail in inbox.wait_for(1 + len(SUBSCRIBED))]
    assert {raw_header(raw, "List-Id") for raw in raws} == {
        "=?utf-8?b?0J3QtdC50YDQvtC00LDQudC00LbQtdGB0YI=?= <digest.example.org>"}
    for raw in raws:
        assert email.message_from_bytes(raw, policy=policy.default)["List-Id"] == "Нейродайджест <digest.example.org>"


def test_the_preview_pages_send_test_button_lands_in_the_inbox(digest: Project, inbox: MailDev) -> None:
    # the studio's "send test" (what the button posts to) delivers the [TEST] copy to MailDev
    from newsletter.studio import Studio

    env = {**os.environ, **smtp_env(inbox, NEWSLETTER_PROVIDER="smtp")}
    studio = Studio(digest.root / ISSUE, digest.root / "newsletter.toml", "readers", env=env)
    studio.refresh()
    result = studio.send_test()
    assert result["ok"], result
    assert result["results"] == [{"address": "preview@example.org", "state": "sent"}]
    (found,) = inbox.wait_for(1)
    assert found["subject"] == "[TEST] " + SUBJECT
    assert [t["address"] for t in found["to"]] == ["preview@example.org"]
    assert sent_rows(digest) == []  # a test copy is never the real send


def test_a_reader_unsubscribes_from_the_copy_in_the_inbox_and_the_next_issue_skips_them(
        digest: Project, inbox: MailDev) -> None:
    # the walkthrough of `newsletter serve`: a real send lands in MailDev; Анна opens the footer link of
    # her copy (the page: nothing changes), confirms (the button: a POST to the same URL), and the
    # next issue's dry run skips her, with the reason
    from starlette.testclient import TestClient

    from newsletter.config import load_settings
    from newsletter.web import create_app

    send(digest, inbox, "--send", "--yes")
    anna = next(m for m in inbox.wait_for(len(SUBSCRIBED)) if m["envelope"]["to"][0]["address"] == "anna@example.com")
    msg = email.message_from_bytes(inbox.source(anna["id"]), policy=policy.default)
    link = unsubscribe_link(msg)
    assert link in anna["text"]  # the footer's link and the header's are one
    settings = load_settings(digest.root / "newsletter.toml", env=smtp_env(inbox))
    parts_ = urlsplit(link)
    with TestClient(create_app(settings), base_url=f"{parts_.scheme}://{parts_.netloc}") as client:
        page = client.get(f"{parts_.path}?{parts_.query}")
        assert page.status_code == 200 and "<form" in page.text and 'method="post"' in page.text.lower()
        with settings.open_store() as store:
            assert store.suppressions.get("anna@example.com") is None  # a GET changes nothing
        done = client.post(f"{parts_.path}?{parts_.query}")
        assert done.status_code == 200
    with settings.open_store() as store:
        got = store.suppressions.get("anna@example.com")
        assert got and got.reason == "unsubscribed" and got.source == "link"

    shutil.copy(EXAMPLE, digest.root / "issues" / "2021-04.yaml")
    dry = run_cli("send", "issues/2021-04.yaml", "--list", "readers", "--provider", "smtp",
                  cwd=digest.root, env=smtp_env(inbox))
    assert dry.code == 0, dry.output
    assert re.search(r"suppressed\s+1\s+unsubscribed 1", dry.out), dry.out
    recipients = (digest.root / "outbox" / "2021-04" / "recipients.csv").read_text(encoding="utf-8")
    assert "anna@example.com" not in recipients and "boris@example.org" in recipients
