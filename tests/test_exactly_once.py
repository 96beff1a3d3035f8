"""Exactly once through the command line when an SMTP reply is lost: the server kept the message but
its "250" never arrived (hang-up, timeout). Such a reader is unknown: counted, reported, left in
flight in the send record, never resent unless the editor says --resend-unknown.

NEWSLETTER_EXACTLY_ONCE_READERS=2000 runs the list at the size the problem was measured at."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import time

from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import SMALL_ISSUE, Project, run_cli
from smtp_server import Recorder

READERS = int(os.environ.get("NEWSLETTER_EXACTLY_ONCE_READERS", "500"))
EVERY = 50  # the server loses the reply to 1 message in 50 (2%)


def setup(project: Project, port: int, n: int, *, timeout: float | None = None) -> dict[str, str]:
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    project.write_list("email,name\n" + "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(n)))
    if timeout is not None:  # [smtp] is the last section of the test config
        config = project.root / "newsletter.toml"
        config.write_text(config.read_text() + f"timeout = {timeout}\n")
    return {"NEWSLETTER_SMTP_PORT": str(port), "NEWSLETTER_SECRET": "exactly-once-test-secret-0123456789abcdef",
            "NEWSLETTER_RETRY_BACKOFF": "0.05", "NEWSLETTER_RETRY_ATTEMPTS": "5"}


def send(project: Project, env: dict[str, str], *extra: str):
    return run_cli("send", "issues/2021-03.yaml", "--list", "readers", "--provider", "smtp", "--send",
                   "--yes", *extra, cwd=project.root, env=env)


def record(project: Project) -> dict[str, tuple[str, str]]:
    """email -> (state, answer) from the send record."""
    db = sqlite3.connect(project.root / ".newsletter" / "sends.sqlite3")
    try:
        return {e: (s, a) for e, s, a in db.execute("SELECT email, state, answer FROM deliveries")}
    finally:
        db.close()


def report(project: Project) -> dict:
    return json.loads((project.root / "outbox" / "2021-03" / "report-send.json").read_text())


def test_lost_replies_are_unknown_never_resent_unless_asked(project, serve):
    handler = Recorder(lose_reply_every=EVERY)
    env = setup(project, serve(handler), READERS)
    started = time.monotonic()
    r = send(project, env)
    seconds = time.monotonic() - started
    lost = set(handler.lost_replies)
    print(f"\n{READERS} readers: {len(handler.messages)} copies kept, {len(lost)} unknown, "
          f"{handler.sessions} connections, {seconds:.1f} s")
    assert len(lost) == READERS // EVERY
    # everyone has exactly one copy, those whose reply was lost included: nothing was retried
    assert set(handler.copies().values()) == {1} and len(handler.copies()) == READERS
    assert r.code == 3, r.output
    assert re.search(rf"sent\s+{READERS - len(lost):,}\b", r.out)
    assert re.search(rf"unknown\s+{len(lost)}\b", r.out)
    assert f"{len(lost)} readers were handed to the provider with no answer recorded" in r.err
    assert "--resend-unknown" in r.err and "run the same command again" in r.err
    saved = report(project)
    assert set(saved["unknown"]) == lost and saved["sent"] == READERS - len(lost)
    assert saved["complete"] is False and not saved["unsent"] and not saved["failed"]
    states = record(project)
    assert {e for e, (state, _) in states.items() if state == "in_flight"} == lost
    kept_ids = {rcpts[0]: msg["Message-ID"] for _, rcpts, msg, _ in handler.messages}
    for email in lost:  # the record names the message, so that the server's log can settle it
        assert f"Message-ID {kept_ids[email]}" in states[email][1]

    # a rerun sends nothing to them (nor to anyone else), and still says the run is incomplete
    again = send(project, env)
    assert again.code == 3, again.output
    assert len(handler.messages) == READERS
    assert re.search(rf"unknown\s+{len(lost)}\b", again.out) and "already sent" in again.out
    assert set(report(project)["unknown"]) == lost

    # the editor finds half of them in the server's log and records them as sent (README's SQL)...
    confirmed = set(sorted(lost)[: len(lost) // 2])
    db = sqlite3.connect(project.root / ".newsletter" / "sends.sqlite3")
    with db:
        db.executemany("update deliveries set state='sent', answer='confirmed in the server log' "
                       "where issue='2021-03' and email_key=lower(?)", [(e,) for e in confirmed])
    db.close()
    # ...and resends the rest: only they get another copy (this server had kept the first one too,
    # which is exactly why that is never done without being asked)
    handler.lose_reply_every = None
    resent = send(project, env, "--resend-unknown")
    assert resent.code == 0, resent.output
    assert f"✓ done: {len(lost - confirmed)} sent" in resent.out
    copies = handler.copies()
    assert {e for e, n in copies.items() if n == 2} == lost - confirmed and set(copies.values()) == {1, 2}
    assert {state for state, _ in record(project).values()} == {"sent"}
    assert "Nothing to send" in send(project, env).out

def test_reply_after_the_timeout_makes_one_copy_and_stays_in_flight(project, serve):
    # the server keeps reader1's message and answers only after the client's timeout
    handler = Recorder(late_reply={"reader1@example.com": 2.0})
    env = setup(project, serve(handler), 3, timeout=0.5)
    r = send(project, env)
    assert r.code == 3, r.output
    assert handler.copies() == {f"reader{i}@example.com": 1 for i in range(3)}  # not 10, not 2
    state, answer = record(project)["reader1@example.com"]
    assert state == "in_flight" and "timed out" in answer and "Message-ID <" in answer
    assert report(project)["unknown"] == ["reader1@example.com"]
    again = send(project, env)
    assert again.code == 3 and len(handler.messages) == 3
    assert record(project)["reader1@example.com"][0] == "in_flight"


USER, PASSWORD = "alice", "Echo-Me-9f3K"
FORMS = (PASSWORD, base64.b64encode(PASSWORD.encode()).decode(),
         base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode())


def _nowhere(project: Project, *outputs: str) -> None:
    """None of the password's forms in the output, the outbox or the send record's files."""
    files = [p for d in ("outbox", ".newsletter") for p in (project.root / d).rglob("*") if p.is_file()]
    assert any(p.name.startswith("sends.sqlite3") for p in files)
    for form in FORMS:
        assert all(form not in text for text in outputs), form
        for path in files:
            assert form.encode() not in path.read_bytes(), (form, path)


def test_a_server_echoing_the_password_in_replies_never_gets_it_shown_or_stored(project, serve):
    def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    handler = Recorder(refuse_rcpt={"reader1@example.com": f"550 5.7.1 {USER}:{PASSWORD} may not relay"},
                       refuse_data={"reader2@example.com": f"451 4.3.0 {PASSWORD} busy"},
                       garbled_reply={"reader3@example.com": f"what {PASSWORD}"})  # fmt: skip
    port = serve(handler, authenticator=authenticator, auth_require_tls=False)
    env = setup(project, port, 5) | {"NEWSLETTER_SMTP_USERNAME": USER, "NEWSLETTER_SMTP_PASSWORD": PASSWORD}
    r = send(project, env)
    assert r.code == 3, r.output
    assert f"550 5.7.1 {USER}:*** may not relay" in r.err  # the refusal itself still shows
    saved = report(project)
    assert "reader2@example.com" in saved["unsent"] and saved["unknown"] == ["reader3@example.com"]
    _nowhere(project, r.out, r.err)


def test_an_auth_failure_echoing_the_password_never_gets_it_shown_or_stored(project, serve):
    plain = FORMS[2]

    def echo(server, session, envelope, mechanism, auth_data):  # noqa: ANN001
        return AuthResult(success=False, handled=False,
                          message=f"535 5.7.8 {auth_data.password.decode()} ({plain}) is not it")

    port = serve(Recorder(), authenticator=echo, auth_require_tls=False)
    env = setup(project, port, 3) | {"NEWSLETTER_SMTP_USERNAME": USER, "NEWSLETTER_SMTP_PASSWORD": PASSWORD}
    r = send(project, env)
    assert r.code == 1, r.output
    assert "refused the login for 'alice' (535 5.7.8 *** (***) is not it)" in r.err
    assert "NEWSLETTER_SMTP_PASSWORD" in r.err
    # it was recorded as "retry" with that message: the record must not have it either
    assert {state for state, _ in record(project).values()} == {"retry"}
    _nowhere(project, r.out, r.err)
