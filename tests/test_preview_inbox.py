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
import urllib.error
import urllib.request
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from ruamel.yaml import YAML

from conftest import EXAMPLE, REPO, Project, run_cli
from newsletter.personalize import verify_unsubscribe_token

pytestmark = pytest.mark.maildev

MAILDEV = REPO / ".tools" / "node_modules" / ".bin" / "maildev"
SECRET = "x"
EDITOR = "editor@example.org"
ISSUE = "issues/2021-03.yaml"
SUBJECT = YAML(typ="safe").load(EXAMPLE.read_text(encoding="utf-8"))["subject"]
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

    def message(self, email_id: str) -> EmailMessage:
        """The raw message as received, parsed as a mail client would."""
        return email.message_from_bytes(self.source(email_id), policy=policy.default)

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
    """The raw message is plain RFC 5322: ASCII headers, lines within 998 octets, CRLF-free bodies ok."""
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


