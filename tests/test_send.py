"""`newsletter send` end to end, through the command line, to a real SMTP server (aiosmtpd).

What the editor relies on: a dry run sends and records nothing; a real send reaches every subscribed
reader exactly once, even when the process is killed, interrupted or the server fails halfway."""

from __future__ import annotations

import email
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from email import policy
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import SMALL_ISSUE, Project, run_cli, run_process
from newsletter.personalize import verify_unsubscribe_token
from smtp_server import Recorder

SECRET = "test-secret-key-that-is-long-enough-0123456789"


def readers(n: int) -> str:
    return "email,name,company\n" + "".join(f"reader{i}@example.com,Reader {i},Co {i}\n" for i in range(n))


def setup(project: Project, serve, handler: Recorder, n: int = 6, list_text: str | None = None,
          database_url: str | None = None):
    port = serve(handler)
    issue = SMALL_ISSUE if list_text else SMALL_ISSUE.replace("Hi {{", "Hi {{ subscriber.company }} {{")
    project.write_issue(issue, "2021-03.yaml")
    project.write_list(list_text or readers(n))
    env = {"NEWSLETTER_SMTP_PORT": str(port), "NEWSLETTER_SECRET": SECRET,
           "NEWSLETTER_RETRY_BACKOFF": "0.05", "NEWSLETTER_RETRY_ATTEMPTS": "3"}
    if database_url:  # the state store on PostgreSQL (see the database_url fixture); else SQLite
        env["NEWSLETTER_DATABASE_URL"] = database_url
    return env


def send(project: Project, env: dict[str, str], *extra: str):
    return run_cli("send", "issues/2021-03.yaml", "--list", "readers", "--provider", "smtp", *extra,
                   cwd=project.root, env=env)


def copies(handler: Recorder, n: int) -> list[int]:
    return [handler.received(f"reader{i}@example.com") for i in range(n)]


def test_dry_run_sends_and_records_nothing_but_shows_everything(project, serve):
    handler = Recorder()
    env = setup(project, serve, handler, list_text="""\
email,name,status
a@example.com,Ann,
B@Example.com,Bob,subscribed
c@example.com,Cy,unsubscribed
nonsense,X,
b@example.com,Bob again,
d@example.com,Di,bounced
""")
    r = send(project, env)
    assert r.code == 0, r.output
    assert gc.get_freeze_count() == 0  # in-process, the command leaves the garbage collector as it was
    assert handler.messages == []
    assert not (project.root / ".newsletter").exists()
    assert "would receive it        2" in r.out
    assert "skipped by status       2  bounced 1, unsubscribed 1" in r.out
    assert re.search(r"readers.csv:5: 'nonsense': .*@-sign", r.err)
    assert "readers.csv:6: b@example.com duplicates line 3" in r.err
    assert "This was a dry run. To send" in r.out and "--send" in r.out
    outbox = project.root / "outbox" / "2021-03"
    assert (outbox / "recipients.csv").read_text().splitlines() == [
        "email,name,line", "a@example.com,Ann,2", "B@example.com,Bob,3"]
    samples = sorted(outbox.glob("sample-*.eml"))
    assert len(samples) == 2
    msg = email.message_from_bytes(samples[0].read_bytes(), policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    report = json.loads((outbox / "report-dry-run.json").read_text())
    assert report["would_send"] == 2 and "sent" not in report  # a dry run sends nothing
    assert (outbox / "2021-03.html").is_file() and (outbox / "2021-03.txt").is_file()


def test_send_reaches_everyone_once_with_personal_unsubscribe_links(project, serve, database_url):
    handler = Recorder()
    env = setup(project, serve, handler, n=6, database_url=database_url)
    r = send(project, env, "--send", "--yes")
    assert r.code == 0, r.output
    assert copies(handler, 6) == [1] * 6
    assert "✓ done: 6 sent" in r.out
    for _, (rcpt,), msg, _ in handler.messages:
        i = int(re.search(r"\d+", rcpt).group())
        assert msg["Subject"] == f"Hello Reader {i}: the March digest"
        text, html = msg.iter_parts()
        assert f"Hi Co {i} Reader {i}!" in text.get_content()
        https, mailto = [u.strip(" <>") for u in msg["List-Unsubscribe"].split(",")]
        assert mailto.startswith("mailto:unsubscribe@example.org")
        query = parse_qs(urlparse(https).query)
        assert query["email"] == [rcpt]
        assert verify_unsubscribe_token(SECRET, rcpt, query["token"][0])
        assert not verify_unsubscribe_token(SECRET, "someone.else@example.com", query["token"][0])
        assert https.replace("&", "&amp;") in html.get_content()  # the footer link is the same URL
    # a second run sends nothing and says so
    again = send(project, env, "--send", "--yes")
    assert again.code == 0 and "Nothing to send" in again.out
    assert len(handler.messages) == 6


def test_real_send_needs_confirmation_and_a_secret(project, serve):
    handler = Recorder()
    env = setup(project, serve, handler, n=2)
    r = send(project, env, "--send")  # no terminal, no --yes
    assert r.code == 2 and "refusing to send without confirmation" in r.err and "--yes" in r.err
    no_secret = {k: v for k, v in env.items() if k != "NEWSLETTER_SECRET"}
    r = send(project, no_secret, "--send", "--yes")
    assert r.code == 1 and "NEWSLETTER_SECRET is not set" in r.err
    assert handler.messages == []


def _send_on_a_terminal(project: Project, env: dict[str, str], answer: str) -> tuple[int, str]:
    """Run a real send with a pseudo-terminal as stdin, answering the confirmation question."""
    import pty

    master, slave = pty.openpty()
    full = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | env
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "send", "issues/2021-03.yaml", "--list",
                             "readers", "--provider", "smtp", "--send"], cwd=project.root, env=full,
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    os.write(master, answer.encode() + b"\n")
    out, err = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, out + err


def test_a_terminal_is_asked_before_sending(project, serve):
    handler = Recorder()
    env = setup(project, serve, handler, n=3)
    code, output = _send_on_a_terminal(project, env, "n")
    assert code == 1 and "to 3 readers via smtp?" in output and "Nothing was sent" in output
    assert handler.messages == []
    code, output = _send_on_a_terminal(project, env, "y")
    assert code == 0, output
    assert copies(handler, 3) == [1, 1, 1]


def test_check_errors_stop_a_real_send(project, serve):
    handler = Recorder()
    env = setup(project, serve, handler, n=2)
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace('postal_address = "1 Example Street, Springfield"\n', ""))
    r = send(project, env, "--send", "--yes")
    assert r.code == 1 and "no postal address" in r.err and "nothing was sent" in r.err
    assert handler.messages == []


def test_limit_sends_in_stages(project, serve, database_url):
    handler = Recorder()
    env = setup(project, serve, handler, n=5, database_url=database_url)
    assert send(project, env, "--send", "--yes", "--limit", "2").code == 0
    assert copies(handler, 5) == [1, 1, 0, 0, 0]
    r = send(project, env, "--send", "--yes", "--limit", "2")
    assert r.code == 0 and "already sent            2" in r.out
    assert copies(handler, 5) == [1, 1, 1, 1, 0]
    send(project, env, "--send", "--yes")
    assert copies(handler, 5) == [1] * 5


def test_test_send_goes_to_preview_only_and_does_not_count(project, serve):
    handler = Recorder()
    env = setup(project, serve, handler, n=3)
    r = send(project, {**env, "NEWSLETTER_PREVIEW_TO": "ed@example.org, pat@example.org"}, "--test")
    assert r.code == 0, r.output
    assert [m[1] for m in handler.messages] == [["ed@example.org"], ["pat@example.org"]]
    msg = handler.messages[0][2]
    assert msg["Subject"] == "[TEST] Hello Reader 0: the March digest"  # the first reader's fields
    assert "Hi Co 0 Reader 0!" in msg.iter_parts().__next__().get_content()
    r = send(project, env, "--send", "--yes")
    assert r.code == 0 and copies(handler, 3) == [1, 1, 1]


def _list_id(msg: email.message.EmailMessage) -> str:
    """The List-Id header as it arrived: its raw text, folding included."""
    [raw] = [v for k, v in msg.raw_items() if k.lower() == "list-id"]
    return raw


def test_every_message_of_every_path_carries_the_same_list_id(project, serve):
    # RFC 2919: one List-Id for the list, whoever reads it and however it went out; the name in
    # it RFC 2047-encoded (Cyrillic), the id derived from from_email (its local part: the name has
    # no ASCII letters for a slug)
    handler = Recorder()
    env = {**setup(project, serve, handler, n=4), "NEWSLETTER_NAME": "Нейродайджест"}
    assert send(project, env).code == 0  # dry run: the sample .eml files
    samples = [email.message_from_bytes(f.read_bytes(), policy=policy.default)
               for f in sorted((project.root / "outbox" / "2021-03").glob("sample-*.eml"))]
    assert send(project, {**env, "NEWSLETTER_PREVIEW_TO": "ed@example.org"}, "--test").code == 0
    assert send(project, env, "--send", "--yes").code == 0
    sent = [m[2] for m in handler.messages]
    assert len(samples) == 3 and len(sent) == 1 + 4
    for msg in samples + sent:
        assert msg["List-Id"] == "Нейродайджест <digest.example.org>"
        assert _list_id(msg) == _list_id(sent[0])  # byte for byte, for every reader
    assert _list_id(sent[0]).startswith("=?utf-8?")  # encoded, not raw UTF-8


def test_list_id_setting_is_used_as_written(project, serve):
    handler = Recorder()
    env = {**setup(project, serve, handler, n=2), "NEWSLETTER_LIST_ID": "march.digest.example.org"}
    assert send(project, env, "--send", "--yes").code == 0
    assert [m[2]["List-Id"] for m in handler.messages] == ["Test Digest <march.digest.example.org>"] * 2


def test_transient_refusals_are_retried_and_permanent_ones_reported(project, serve):
    class Flaky(Recorder):
        tries = 0

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address == "reader1@example.com" and Flaky.tries < 2:
                Flaky.tries += 1
                return "451 4.7.1 Greylisted, try again"
            return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    handler = Flaky(refuse_rcpt={"reader3@example.com": "550 5.1.1 No such user"})
    env = setup(project, serve, handler, n=5)
    r = send(project, env, "--send", "--yes")
    assert r.code == 3, r.output
    assert copies(handler, 5) == [1, 1, 1, 0, 1]
    assert "reader3@example.com: 127.0.0.1" in r.err and "550 5.1.1 No such user" in r.err
    assert "run the same command again to resume" in r.err
    report = json.loads((project.root / "outbox" / "2021-03" / "report-send.json").read_text())
    assert report["sent"] == 4 and list(report["failed"]) == ["reader3@example.com"] and report["complete"] is False


def test_server_down_halfway_then_rerun_finishes_exactly_once(project, serve, database_url):
    handler = Recorder(refuse_rcpt={})
    env = setup(project, serve, handler, n=8, database_url=database_url)

    class DiesAfterThree(Recorder):
        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            if len(self.messages) >= 3:
                server.transport.abort()
                return "421 gone"
            return await super().handle_MAIL(server, session, envelope, address, mail_options)

    dying = DiesAfterThree()
    env["NEWSLETTER_SMTP_PORT"] = str(serve(dying))
    env["NEWSLETTER_SMTP_CONNECTIONS"] = "1"  # one connection: exactly 3 get through (see test_parallel)
    r = send(project, env, "--send", "--yes")
    assert r.code == 3, r.output
    assert len(dying.messages) == 3
    assert "connection to 127.0.0.1" in r.err
    # the provider is back (a fresh server): the rerun sends the rest, nobody twice
    env["NEWSLETTER_SMTP_PORT"] = str(serve(handler))
    r = send(project, env, "--send", "--yes")
    assert r.code == 0, r.output
    got = [dying.received(f"reader{i}@example.com") + handler.received(f"reader{i}@example.com") for i in range(8)]
    assert got == [1] * 8


def _start_send(project: Project, env: dict[str, str]) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | env
    return subprocess.Popen([sys.executable, "-m", "newsletter", "send", "issues/2021-03.yaml", "--list",
                             "readers", "--provider", "smtp", "--send", "--yes"], cwd=project.root, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_mid_send_rerun_reports_unknown_and_never_duplicates(project, serve, database_url):
    handler = Recorder(hold_at=5)
    env = setup(project, serve, handler, n=10, database_url=database_url)
    env["NEWSLETTER_SMTP_CONNECTIONS"] = "1"  # in order; several connections: see test_parallel
    proc = _start_send(project, env)
    assert handler.holding.wait(60), "the send never reached the 5th message"
    proc.kill()  # SIGKILL: no cleanup, no last words
    proc.communicate(timeout=30)
    handler.release.set()
    assert copies(handler, 10) == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    # the rerun sends the rest, but not the one whose fate is unknown
    r = send(project, env, "--send", "--yes")
    assert r.code == 3, r.output
    assert "1 readers were handed to the provider with no answer recorded" in r.err
    assert "--resend-unknown" in r.err
    assert copies(handler, 10) == [1, 1, 1, 1, 0, 1, 1, 1, 1, 1]
    # the editor checked the server's log: it never arrived, so resend it
    r = send(project, env, "--send", "--yes", "--resend-unknown")
    assert r.code == 0, r.output
    assert copies(handler, 10) == [1] * 10


def test_ctrl_c_finishes_the_batch_records_it_and_resumes(project, serve, database_url):
    handler = Recorder(delay=0.1)
    env = setup(project, serve, handler, n=20, database_url=database_url)
    proc = _start_send(project, env)
    deadline = time.monotonic() + 60
    while len(handler.messages) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    assert "stopping after the current batch" in err
    stopped_at = len(handler.messages)
    assert 3 <= stopped_at < 20
    report = json.loads((project.root / "outbox" / "2021-03" / "report-send.json").read_text())
    assert report["interrupted"] and report["sent"] == stopped_at
    assert report["left_for_later"] == 20 - stopped_at
    r = send(project, env, "--send", "--yes")
    assert r.code == 0, r.output
    assert copies(handler, 20) == [1] * 20


def test_a_second_ctrl_c_aborts_and_says_who_is_unknown_and_what_to_do(project, serve, database_url):
    handler = Recorder(hold_at=3)  # the 3rd message hangs at the server: its batch cannot finish
    env = setup(project, serve, handler, n=10, database_url=database_url)
    env["NEWSLETTER_SMTP_CONNECTIONS"] = "1"
    proc = _start_send(project, env)
    assert handler.holding.wait(60), "the send never reached the 3rd message"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # "Ctrl-C again to abort at once"
    out, err = proc.communicate(timeout=60)
    handler.release.set()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert "aborted mid-send" in err and "unknown" in err and "run the same command again" in err, err
    r = send(project, env, "--send", "--yes")  # the one in hand is unknown, never sent twice
    assert r.code == 3 and "1 readers were handed to the provider with no answer recorded" in r.err, r.output
    # the 3rd never completed at the server (the process died holding it) and, unknown, is not resent
    assert copies(handler, 10) == [1, 1, 0, 1, 1, 1, 1, 1, 1, 1]


def test_two_sends_of_one_issue_cannot_run_at_once(project, serve, database_url):
    from newsletter.errors import NewsletterError
    from newsletter.store import open_store

    with open_store(project.root / ".newsletter", database_url) as one, one.send_record("2021-03"):
        with open_store(project.root / ".newsletter", database_url) as two:
            with pytest.raises(NewsletterError, match="another `newsletter send` of 2021-03 is running"):
                two.send_record("2021-03")
            two.send_record("2021-04").close()  # another issue is free


def test_a_second_send_process_refuses_while_the_first_runs(project, serve, database_url):
    """Two machines (here: two processes) sending the same issue against one state store: the second
    refuses at once, the first finishes, and nobody gets two copies."""
    handler = Recorder(hold_at=3)
    env = setup(project, serve, handler, n=6, database_url=database_url)
    first = _start_send(project, env)
    try:
        assert handler.holding.wait(60), "the first send never reached the 3rd message"
        second = run_process("send", "issues/2021-03.yaml", "--list", "readers", "--provider", "smtp", "--send",
                             "--yes", cwd=project.root, env=env)
        assert second.code == 1, second.output
        assert "another `newsletter send` of 2021-03 is running" in second.err
    finally:
        handler.release.set()  # the held message is refused (451) and retried by the first send
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert copies(handler, 6) == [1] * 6
