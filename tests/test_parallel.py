"""Several SMTP connections at once ([smtp] connections), the message rate and the daily quota,
and several `--worker` processes splitting one send (PostgreSQL): everyone exactly once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import SMALL_ISSUE, Project, run_cli
from smtp_server import Recorder

SECRET = "parallel-test-secret-0123456789abcdefghij"


def setup(project: Project, port: int, n: int, *, database_url: str | None = None, **smtp: object) -> dict[str, str]:
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    project.write_list("email,name\n" + "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(n)))
    config = project.root / "newsletter.toml"  # [smtp] is the last table of the test config
    config.write_text(config.read_text() + "".join(f"{k} = {json.dumps(v)}\n" for k, v in smtp.items()))
    env = {"NEWSLETTER_SMTP_PORT": str(port), "NEWSLETTER_SECRET": SECRET,
           "NEWSLETTER_RETRY_BACKOFF": "0.05", "NEWSLETTER_RETRY_ATTEMPTS": "5"}
    if database_url:
        env["NEWSLETTER_DATABASE_URL"] = database_url
    return env


ARGS = ("send", "issues/2021-03.yaml", "--list", "readers", "--provider", "smtp", "--send", "--yes")


def send(project: Project, env: dict[str, str], *extra: str):
    return run_cli(*ARGS, *extra, cwd=project.root, env=env)


def report(project: Project) -> dict:
    return json.loads((project.root / "outbox" / "2021-03" / "report-send.json").read_text())


def sqlite_record(project: Project) -> sqlite3.Connection:
    return sqlite3.connect(project.root / ".newsletter" / "sends.sqlite3", isolation_level=None)


def states(project: Project) -> dict[str, str]:
    db = sqlite_record(project)
    try:
        return dict(db.execute("SELECT email, state FROM deliveries"))
    finally:
        db.close()


def test_four_connections_reach_everyone_once_and_never_more_at_once(project, serve):
    n = 300
    handler = Recorder(delay=0.002)
    env = setup(project, serve(handler), n, connections=4)
    r = send(project, env)
    assert r.code == 0, r.output
    assert f"✓ done: {n} sent" in r.out
    assert handler.copies() == {f"reader{i}@example.com": 1 for i in range(n)}
    assert 2 <= handler.max_open <= 4 and handler.sessions == 4  # in parallel, never beyond the setting
    assert set(states(project).values()) == {"sent"}
    saved = report(project)
    assert saved["sent"] == n and saved["complete"] and saved["requests"] == n


def test_lost_replies_with_four_connections_never_make_a_second_copy(project, serve):
    n, every = 400, 25
    handler = Recorder(lose_reply_every=every)
    env = setup(project, serve(handler), n, connections=4)
    r = send(project, env)
    lost = set(handler.lost_replies)
    assert r.code == 3, r.output
    assert len(lost) == n // every
    assert set(report(project)["unknown"]) == lost
    assert {e for e, s in states(project).items() if s == "in_flight"} == lost
    for _ in range(2):  # reruns send nobody anything
        again = send(project, env)
        assert again.code == 3, again.output
    copies = handler.copies()
    assert len(copies) == n and set(copies.values()) == {1}  # 0 second copies


def test_the_rate_holds_over_all_connections(project, serve):
    n, rate = 30, 20
    handler = Recorder()
    env = setup(project, serve(handler), n, connections=4, rate=f"{rate}/s")
    started = time.monotonic()
    r = send(project, env)
    took = time.monotonic() - started
    assert r.code == 0, r.output
    assert len(handler.messages) == n
    assert (n - 1) / rate <= took < (n - 1) / rate + 5  # the slots are 1/rate apart; bounded overhead
    # the handover times themselves: no window of one second holds more than `rate` + 1 messages
    db = sqlite_record(project)
    db.close()


def test_a_bad_rate_is_a_config_error(project, serve):
    env = setup(project, serve(Recorder()), 2, rate="fast")
    r = send(project, env)
    assert r.code == 1 and "'fast' is not a rate" in r.err and "14/s" in r.err


def test_the_daily_quota_stops_the_send_and_the_next_day_goes_on(project, serve):
    n, daily = 12, 5
    handler = Recorder()
    env = setup(project, serve(handler), n, connections=2, daily=daily)
    r = send(project, env)
    assert r.code == 3, r.output
    assert "daily quota reached" in r.err and "daily = 5" in r.err
    assert len(handler.messages) == daily
    saved = report(project)
    assert saved["sent"] == daily and saved["left_for_later"] == n - daily and saved["quota_reached"]
    assert not saved["interrupted"] and not saved["unknown"]
    # the same day: the record says 5 went out in the last 24 h, across runs
    again = send(project, env)
    assert again.code == 3 and "daily quota reached" in again.err and len(handler.messages) == daily
    # the next day (the record's times moved back 25 h): another 5, then the last 2
    for expected in (2 * daily, n):
        db = sqlite_record(project)
        db.execute("UPDATE deliveries SET updated_at = '2000-01-01T00:00:00+00:00'")
        db.close()
        r = send(project, env)
        assert len(handler.messages) == expected, r.output
    assert r.code == 0 and handler.copies() == {f"reader{i}@example.com": 1 for i in range(n)}


def _start(project: Project, env: dict[str, str], *extra: str) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | env
    return subprocess.Popen([sys.executable, "-m", "newsletter", *ARGS, *extra], cwd=project.root, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_leaves_at_most_one_unknown_reader_per_connection(project, serve):
    n = 200
    handler = Recorder(delay=0.01)
    env = setup(project, serve(handler), n, connections=4)
    proc = _start(project, env)
    deadline = time.monotonic() + 60
    while len(handler.messages) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=30)
    time.sleep(0.3)  # the server finishes what it was handed
    unknown = {e for e, s in states(project).items() if s == "in_flight"}
    assert 1 <= len(unknown) <= 4
    r = send(project, env)
    assert r.code == 3, r.output
    copies = handler.copies()
    assert all(copies.get(f"reader{i}@example.com") == 1 for i in range(n) if f"reader{i}@example.com" not in unknown)
    assert all(copies.get(e, 0) <= 1 for e in unknown)
    assert set(report(project)["unknown"]) == unknown


def test_ctrl_c_with_four_connections_records_everything_and_resumes(project, serve):
    n = 120
    handler = Recorder(delay=0.02)
    env = setup(project, serve(handler), n, connections=4)
    proc = _start(project, env)
    deadline = time.monotonic() + 60
    while len(handler.messages) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    saved = report(project)
    assert saved["interrupted"] and saved["sent"] == len(handler.messages) < n
    assert saved["sent"] + saved["left_for_later"] == n and not saved["unknown"]
    assert "in_flight" not in states(project).values()
    r = send(project, env)
    assert r.code == 0, r.output
    assert handler.copies() == {f"reader{i}@example.com": 1 for i in range(n)}


def test_a_state_store_failing_mid_send_is_a_message_and_loses_nobody(project, serve, monkeypatch):
    """A full disk (or a read-only folder) while the connections write the record: one message, no
    thread's traceback, exit 1; the rerun sends everyone else once and reports the unknown."""
    import threading

    from newsletter.ledger import DeliveryRecord

    n = 60
    handler = Recorder()
    env = setup(project, serve(handler), n, connections=4)
    real_step, calls, hooked = DeliveryRecord.step, [0], []

    def step(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls[0] += 1
        if calls[0] > 20:
            raise sqlite3.OperationalError("database or disk is full")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(DeliveryRecord, "step", step)
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    r = send(project, env)
    assert r.code == 1, r.output
    assert "error: the state store" in r.err and "sends.sqlite3 failed: database or disk is full" in r.err
    assert "run the same command again" in r.err
    assert "Traceback" not in r.output and "internal error" not in r.err and not hooked
    monkeypatch.setattr(DeliveryRecord, "step", real_step)
    unknown = {e for e, s in states(project).items() if s == "in_flight"}
    r = send(project, env)
    assert r.code == (3 if unknown else 0), r.output
    copies = handler.copies()
    assert all(copies.get(f"reader{i}@example.com") == 1 for i in range(n)
               if f"reader{i}@example.com" not in unknown)
    assert all(copies.get(e, 0) <= 1 for e in unknown) and set(report(project)["unknown"]) == unknown


def test_a_state_store_that_cannot_be_opened_is_a_message(project, serve):
    env = setup(project, serve(Recorder()), 3)
    (project.root / ".newsletter" / "sends.sqlite3").mkdir(parents=True)  # not a database file
    for extra in ((), ("--send", "--yes")):
        r = run_cli(*ARGS[:6], *extra, cwd=project.root, env=env)
        assert r.code == 1, r.output
        assert "sends.sqlite3 failed: unable to open database file" in r.err and "writable" in r.err
        assert "internal error" not in r.err


def test_a_state_folder_that_is_a_file_is_a_message(project, serve):
    env = setup(project, serve(Recorder()), 3)
    (project.root / "state").write_text("not a folder")
    env["NEWSLETTER_STATE_DIR"] = str(project.root / "state")
    for extra in ((), ("--send", "--yes")):
        r = run_cli(*ARGS[:6], *extra, cwd=project.root, env=env)
        assert r.code == 1, r.output
        assert "state folder" in r.err and "is a file: point it at a folder" in r.err, r.err
        assert "File exists" not in r.err and "internal error" not in r.err


def test_worker_needs_postgresql(project, serve):
    env = setup(project, serve(Recorder()), 3)
    r = send(project, env, "--worker")
    assert r.code == 2, r.output
    assert "--worker needs the state store in PostgreSQL" in r.err and "connections" in r.err


# ---------------------------------------------------------------------------------- --worker (PostgreSQL)


def pg_states(url: str) -> dict[str, tuple[str, str]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {e: (s, b) for e, s, b in conn.execute("SELECT email, state, batch FROM deliveries")}


@pytest.mark.postgres
def test_workers_and_a_plain_send_exclude_each_other(project, pg_cluster):
    from newsletter.errors import NewsletterError
    from newsletter.store import open_store

    url = pg_cluster.new_database()
    with open_store(project.root, url) as a, a.send_record("2021-03", worker=True):
        with open_store(project.root, url) as b, b.send_record("2021-03", worker=True):  # workers share
            with open_store(project.root, url) as c:
                with pytest.raises(NewsletterError, match="or `--worker` sends of it are"):
                    c.send_record("2021-03")
    with open_store(project.root, url) as a, a.send_record("2021-03"):
        with open_store(project.root, url) as b:
            with pytest.raises(NewsletterError, match="without --worker is running"):
                b.send_record("2021-03", worker=True)


@pytest.mark.postgres
def test_four_workers_split_the_list_without_a_second_copy(project, serve, pg_cluster):
    n = int(os.environ.get("NEWSLETTER_WORKER_READERS", "600"))
    handler = Recorder()
    env = setup(project, serve(handler), n, database_url=pg_cluster.new_database(), connections=2)
    procs = [_start(project, env, "--worker") for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    copies = handler.copies()
    assert len(copies) == n and set(copies.values()) == {1}  # 0 second copies
    assert sum(1 for out, _ in outs if "✓ done" in out) >= 2  # the list really was split
    assert {s for s, _ in pg_states(env["NEWSLETTER_DATABASE_URL"]).values()} == {"sent"}
    r = send(project, env)  # a plain send afterwards: nothing left
    assert r.code == 0 and "Nothing to send" in r.out


@pytest.mark.postgres
def test_a_worker_killed_mid_send_leaves_only_its_batch_unknown(project, serve, pg_cluster):
    n = 400
    handler = Recorder(delay=0.005)
    env = setup(project, serve(handler), n, database_url=pg_cluster.new_database(), connections=2)
    procs = [_start(project, env, "--worker") for _ in range(4)]
    deadline = time.monotonic() + 60
    while len(handler.messages) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    procs[0].kill()
    for p in procs[1:]:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err  # the others go on and finish
    procs[0].communicate(timeout=30)
    time.sleep(0.3)
    record = pg_states(env["NEWSLETTER_DATABASE_URL"])
    unknown = {e for e, (s, _) in record.items() if s == "in_flight"}
    runs = {batch.split("-")[0] for e, (s, batch) in record.items() if s == "in_flight"}
    # one worker's unfinished readers at most: the batch it had just taken (8 a connection) plus, from
    # the batch before, what waited in its queue (2 a connection) and what its connections held (1 each)
    assert len(runs) <= 1 and len(unknown) <= 11 * 2
    copies = handler.copies()
    for i in range(n):
        email = f"reader{i}@example.com"
        assert copies.get(email, 0) == (copies.get(email, 0) if email in unknown else 1), email
        assert copies.get(email, 0) <= 1
    r = send(project, env)  # a plain send afterwards reports them and resends nobody
    assert r.code == (3 if unknown else 0), r.output
    assert set(report(project)["unknown"]) == unknown
    assert set(handler.copies().values()) == {1}
