"""Suppressions for the operator: `newsletter suppressions list/add/remove/export/sync`, SendGrid's
lists pulled in (Prism serving SendGrid's published suppressions spec, and a local stand-in for
paging, incrementality and errors), and the whole walkthrough from a suppression to the CSV."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from conftest import SMALL_ISSUE, Project, run_cli, run_process
from prism_server import prism_mock
from newsletter.errors import ConfigError, NewsletterError
from newsletter.providers.sendgrid import SendGridSettings
from newsletter.providers.sendgrid.sync import SuppressionsClient, sync_suppressions
from newsletter.store import open_store

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests" / "data" / "sendgrid" / "tsg_suppressions_v3.json"
KEY = "SG.sync-test-key.Qw7-DoNotLeak"
LISTS = ("spam_reports", "unsubscribes", "bounces", "invalid_emails", "blocks")
TRICKLE, TRICKLE_FOR = 0.3, 15.0  # the trickling stand-in: a byte every TRICKLE s, for at most TRICKLE_FOR s
FLOOD = 100 * 2**20  # the flooding stand-in sends at most this much
CAP = 16 * 2**20  # the most the sync reads of one page's answer


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def env_for(database_url: str | None, **extra: str) -> dict[str, str]:
    return ({"NEWSLETTER_DATABASE_URL": database_url} if database_url else {}) | extra


# --- a local stand-in for SendGrid's suppression lists ---------------------------------------------


class StandIn(ThreadingHTTPServer):
    """Serves `lists` (path -> entries) with limit/offset/start_time as SendGrid does; records each
    request; answers `replies` first, and `failing` (path, offset) always with a 500. `trickling`
    (path, offset, headers too) sends that answer a byte every TRICKLE seconds; `flooding` (path, offset,
    with a Content-Length) answers with an endless body, and notes in `flooded` how much of it went out.
    An offset of None: every request of that path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lists: dict[str, list[Any]] = {}
        self.requests: list[tuple[str, dict[str, str], Message]] = []
        self.replies: list[tuple[int, dict[str, str], bytes]] = []
        self.failing: tuple[str, str] | None = None
        self.trickling: tuple[str, str | None, bool] | None = None
        self.flooding: tuple[str, str | None, bool] | None = None
        self.flooded: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def queries(self, name: str) -> list[dict[str, str]]:
        return [q for p, q, _ in self.requests if p == f"/v3/suppression/{name}"]


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        self.server.requests.append((parts.path, query, self.headers))

        def matches(special: tuple[str, str | None, bool] | None) -> bool:
            return special is not None and special[:2] in ((parts.path, query.get("offset")), (parts.path, None))

        if matches(self.server.flooding):
            assert self.server.flooding
            self._flood(self.server.flooding[2])
            return
        if self.server.replies:
            status, headers, body = self.server.replies.pop(0)
        elif self.server.failing == (parts.path, query.get("offset")):
            status, headers, body = 500, {}, b""
        else:
            entries = self.server.lists.get(parts.path, [])
            if "start_time" in query:
                entries = [e for e in entries if e["created"] >= int(query["start_time"])]
            if "limit" in query:
                offset = int(query.get("offset", 0))
                entries = entries[offset : offset + int(query["limit"])]
            status, headers, body = 200, {"Content-Type": "application/json"}, json.dumps(entries).encode()
        if matches(self.server.trickling):
            assert self.server.trickling
            self._trickle(status, headers, body, self.server.trickling[2])
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, status: int, headers: dict[str, str], body: bytes, head_too: bool) -> None:
        """The answer a byte every TRICKLE s, each well within any read timeout; given up after
        TRICKLE_FOR s (before the fix, each try took that long)."""
        head = f"HTTP/1.1 {status} OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        answer, start = head.encode() + body, time.monotonic()
        self.close_connection = True
        try:
            if not head_too:
                self.wfile.write(answer[: len(head)])
                answer = answer[len(head):]
            for i in range(len(answer)):
                if time.monotonic() - start > TRICKLE_FOR:
                    return
                self.wfile.write(answer[i : i + 1])
                time.sleep(TRICKLE)
        except OSError:
            return  # the client hung up

    def _flood(self, say_length: bool) -> None:
        """200 and JSON whitespace without end (600 MB said, or no length: until the connection closes);
        given up after FLOOD bytes, so that a client reading it all does not take the machine's memory."""
        self.close_connection = True
        sent, chunk = 0, b" " * 65536
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             + (b"Content-Length: 629145600\r\n" if say_length else b"") + b"\r\n")
            while sent < FLOOD:
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the client hung up
        self.server.flooded.append(sent)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn()
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def settings(url: str, asm_group_id: int | None = None, key: str | None = KEY) -> SendGridSettings:
    return SendGridSettings(api_url=url, api_key=key, asm_group_id=asm_group_id)


def bounce(email: str, created: int) -> dict[str, Any]:
    return {"created": created, "email": email, "reason": "550 5.1.1 no such user", "status": "5.1.1"}


def test_sync_reads_pages_and_then_only_what_is_new(tmp_path: Path, standin: StandIn, database_url: str | None) -> None:
    standin.lists["/v3/suppression/bounces"] = [bounce("a@example.com", 1700000100), bounce("B@Example.com", 1700000300),
                                                bounce("c@example.com", 1700000200)]
    with open_store(tmp_path, database_url) as store:
        report = sync_suppressions(store, settings(standin.url), page_size=2, backoff=0)
        # two pages (a full one, then a short one); the other lists: one empty page each
        assert standin.queries("bounces") == [{"limit": "2", "offset": "0"}, {"limit": "2", "offset": "2"}]
        assert all(standin.queries(name) == [{"limit": "2", "offset": "0"}] for name in LISTS if name != "bounces")
        _, _, headers = standin.requests[0]
        assert headers["Authorization"] == f"Bearer {KEY}" and headers["Accept"] == "application/json"
        assert [(r.name, r.read, r.new, r.cursor) for r in report.lists if r.read] == [("bounces", 3, 3, 1700000300)]
        got = store.suppressions.get("b@example.com")
        assert got and (got.reason, got.source, got.created_at) == ("bounced", "sendgrid-sync", iso(1700000300))
        assert got.detail == "SendGrid bounce: 5.1.1 550 5.1.1 no such user"
        assert store.events.cursor("sendgrid:bounces") == "1700000300"
        assert store.events.cursor("sendgrid:spam_reports") is None  # nothing seen: no cursor yet

        # the next sync asks from the newest entry seen (inclusive: that second may have more)
        standin.lists["/v3/suppression/bounces"].append(bounce("d@example.com", 1700000400))
        standin.requests.clear()
        report = sync_suppressions(store, settings(standin.url), page_size=2, backoff=0)
        assert standin.queries("bounces") == [{"limit": "2", "offset": "0", "start_time": "1700000300"},
                                              {"limit": "2", "offset": "2", "start_time": "1700000300"}]
        assert standin.queries("spam_reports") == [{"limit": "2", "offset": "0"}]
        bounces = next(r for r in report.lists if r.name == "bounces")
        assert (bounces.read, bounces.new, bounces.since, bounces.cursor) == (2, 1, 1700000300, 1700000400)
        assert store.suppressions.count() == {"bounced": 4}

        # --full reads everything again, and never moves a cursor back
        standin.requests.clear()
        sync_suppressions(store, settings(standin.url), page_size=2, backoff=0, full=True)
        assert standin.queries("bounces")[0] == {"limit": "2", "offset": "0"}
        assert store.events.cursor("sendgrid:bounces") == "1700000400"


def test_each_list_has_its_reason_and_a_reader_keeps_the_first(tmp_path: Path, standin: StandIn) -> None:
    standin.lists = {
        "/v3/suppression/spam_reports": [{"created": 1700000001, "email": "both@example.com", "ip": "10.0.0.1"}],
        "/v3/suppression/unsubscribes": [{"created": 1700000002, "email": "u@example.com"}],
        "/v3/suppression/bounces": [bounce("both@example.com", 1700000003)],
        "/v3/suppression/invalid_emails": [{"created": 1700000004, "email": "not an address", "reason": "bad"}],
        "/v3/suppression/blocks": [{"created": 1700000005, "email": "blk@example.com", "reason": "no route", "status": "4.0.0"}],
        "/v3/asm/groups/42/suppressions": ["grp@example.com", "u@example.com"],
    }
    with open_store(tmp_path) as store:
        report = sync_suppressions(store, settings(standin.url, asm_group_id=42), backoff=0)
        assert {s.email: s.reason for s in store.suppressions} == {
            "both@example.com": "complained", "u@example.com": "unsubscribed", "not an address": "invalid",
            "blk@example.com": "bounced", "grp@example.com": "unsubscribed"}
        assert report.lists[-1].name == "group 42" and (report.lists[-1].read, report.lists[-1].new) == (2, 1)
        assert store.suppressions.get("grp@example.com").detail == "SendGrid unsubscribe group 42"
        assert report.new == 5 and report.read == 7
    # the group's list has no paging parameters in SendGrid's spec: none are sent
    assert [q for p, q, _ in standin.requests if p.startswith("/v3/asm/")] == [{}]


def test_rate_limits_and_server_errors_are_retried_politely(tmp_path: Path, standin: StandIn) -> None:
    standin.replies = [(429, {"Retry-After": "3"}, b""), (503, {}, b""), (502, {}, b"")]
    standin.lists["/v3/suppression/spam_reports"] = [{"created": 1700000001, "email": "s@example.com", "ip": "x"}]
    waits: list[float] = []
    client = SuppressionsClient(settings(standin.url), attempts=4, backoff=0.5, sleep=waits.append)
    with open_store(tmp_path) as store:
        report = sync_suppressions(store, settings(standin.url), client=client)
        assert report.new == 1
    assert waits == [3.0, 1.0, 2.0]  # as SendGrid asked, then doubling


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_a_config_error_that_never_shows_the_key(project: Project, standin: StandIn, status: int) -> None:
    body = json.dumps({"errors": [{"field": None, "message": f"authorization required ({KEY})"}]}).encode()
    standin.replies = [(status, {}, body)]
    r = run_cli("suppressions", "sync", cwd=project.root,
                env={"SENDGRID_API_URL": standin.url, "SENDGRID_API_KEY": KEY})
    assert r.code == 1
    assert f"SendGrid: {status}" in r.err and "check SENDGRID_API_KEY" in r.err and "Suppressions" in r.err
    assert KEY not in r.output and "[SENDGRID_API_KEY]" in r.err
    assert len(standin.requests) == 1  # not retried
    r = run_cli("suppressions", "sync", cwd=project.root, env={"SENDGRID_API_URL": standin.url})
    assert r.code == 1 and "SENDGRID_API_KEY is not set" in r.err


def test_a_sync_that_fails_midway_keeps_what_it_read_and_reads_the_rest_next_time(
        tmp_path: Path, standin: StandIn) -> None:
    standin.lists["/v3/suppression/bounces"] = [bounce(f"b{i}@example.com", 1700000000 + i) for i in range(3)]
    standin.failing = ("/v3/suppression/bounces", "2")
    with open_store(tmp_path) as store:
        with pytest.raises(NewsletterError, match=r"GET /v3/suppression/bounces: SendGrid: 500 Internal Server "
                                                  r"Error \(still, after 2 tries\); run `newsletter suppressions sync` again"):
            sync_suppressions(store, settings(standin.url), page_size=2, attempts=2, backoff=0)
        assert store.suppressions.count() == {"bounced": 2}  # the first page is kept...
        assert store.events.cursor("sendgrid:bounces") is None  # ...but the list starts over
        standin.failing = None
        standin.requests.clear()
        report = sync_suppressions(store, settings(standin.url), page_size=2, backoff=0)
        assert standin.queries("bounces")[0] == {"limit": "2", "offset": "0"}
        assert next(r for r in report.lists if r.name == "bounces").new == 1
        assert store.events.cursor("sendgrid:bounces") == "1700000002"


def test_an_unknown_unsubscribe_group_points_at_the_setting(tmp_path: Path, standin: StandIn) -> None:
    standin.lists["/v3/asm/groups/7/suppressions"] = []
    standin.replies = [(200, {}, b"[]")] * 5 + [(404, {}, b'{"errors":[{"message":"not found"}]}')]
    with open_store(tmp_path) as store, pytest.raises(ConfigError, match=r"no unsubscribe group 7: check \[sendgrid\] asm_group_id"):
        sync_suppressions(store, settings(standin.url, asm_group_id=7), backoff=0)


def test_hostile_entries_are_kept_and_a_bad_created_never_becomes_the_cursor(
        tmp_path: Path, standin: StandIn, database_url: str | None) -> None:
    """`created` out of range (or NaN) was an internal error; one in the far future (year 2100, or
    milliseconds) became the cursor, and every later entry was skipped from then on. A NUL or a
    lone surrogate in an address was an internal error (or PostgreSQL's refusal) mid-sync."""
    standin.replies = [(200, {}, b'[{"email": "nan@example.com", "created": NaN}, {"email": "true@example.com", '
                                 b'"created": true}, {"email": "ms@example.com", "created": 1700000000000}, '
                                 b'{"email": "far@example.com", "created": 4102444800}, {"email": "neg@example.com", '
                                 b'"created": -1e300}, {"email": "big@example.com", "created": 1e20}, '
                                 b'{"email": "ok@example.com", "created": 1700000005}, '
                                 b'{"email": "n\\u0000ul@example.com", "created": 1700000004, "reason": "x\\ud800"}, '
                                 b'{"email": "s\\udc80@example.com", "created": 1700000003}]')]
    with open_store(tmp_path, database_url) as store:
        report = sync_suppressions(store, settings(standin.url), backoff=0)
        assert report.lists[0].read == 9 and report.new == 9  # (spam_reports: the reply above)
        assert store.events.cursor("sendgrid:spam_reports") == "1700000005"
        times = {s.email: s.created_at for s in store.suppressions}
        assert times["ok@example.com"] == iso(1700000005)
        assert all(times[f"{w}@example.com"][:4] == str(datetime.now(timezone.utc).year)
                   for w in ("nan", "true", "ms", "far", "neg", "big"))  # dated by the sync
        assert {"n\ufffdul@example.com", "s\ufffd@example.com"} <= set(times)
        assert store.suppressions.get("n\ufffdul@example.com").detail == "SendGrid spam report: x\ufffd"


def test_a_list_that_does_not_page_or_does_not_parse_stops_with_a_message(tmp_path: Path, standin: StandIn) -> None:
    """A server that ignores offset sent the same full page forever (100,000 pages, over an hour), and
    then the cursor moved as if the list had been read; JSON nested too deep was an internal error."""
    page = json.dumps([bounce("a@example.com", 1700000001), bounce("b@example.com", 1700000002)]).encode()
    standin.replies = [(200, {}, b"[]")] * 2 + [(200, {}, page)] * 3
    with open_store(tmp_path) as store:
        with pytest.raises(NewsletterError, match=r"GET /v3/suppression/bounces: SendGrid answered offset 2 with "
                                                  r"the same 2 entries as offset 0, so the list does not page"):
            sync_suppressions(store, settings(standin.url), page_size=2, backoff=0)
        assert store.suppressions.count() == {"bounced": 2} and store.events.cursor("sendgrid:bounces") is None
        standin.replies = [(200, {}, b"[" * 100_000 + b"]" * 100_000)]
        with pytest.raises(NewsletterError, match="SendGrid answered 200 with something that is not JSON"):
            sync_suppressions(store, settings(standin.url), backoff=0)
        standin.replies = [(400, {}, b'{"errors": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")]
        with pytest.raises(NewsletterError, match=r"SendGrid: 400 Bad Request: \{\"errors\": \[\[\["):
            sync_suppressions(store, settings(standin.url), backoff=0)


@pytest.mark.parametrize("head_too", [True, False], ids=["whole-answer", "body"])
def test_an_answer_trickled_a_byte_at_a_time_is_cut_at_the_timeout(
        project: Project, standin: StandIn, database_url: str | None, monkeypatch: pytest.MonkeyPatch,
        head_too: bool) -> None:
    """The timeout bounded each read, not the answer: a server sending a valid answer a byte every
    0.3 s held the sync for as long as it kept sending (here 15 s a try, then it gives up)."""
    from newsletter.providers.sendgrid import sync

    monkeypatch.setattr(sync, "TIMEOUT", 1.0)
    standin.lists["/v3/suppression/spam_reports"] = [{"created": 1700000001, "email": "s@example.com", "ip": "x"}]
    standin.lists["/v3/suppression/bounces"] = [bounce("b@example.com", 1700000002)]
    standin.trickling = ("/v3/suppression/bounces", None, head_too)
    env = env_for(database_url, SENDGRID_API_URL=standin.url, SENDGRID_API_KEY=KEY, NEWSLETTER_RETRY_ATTEMPTS="2",
                  NEWSLETTER_RETRY_BACKOFF="0")
    start = time.monotonic()
    r = run_cli("suppressions", "sync", cwd=project.root, env=env)
    took = time.monotonic() - start
    assert r.code == 1, r.output
    assert ("GET /v3/suppression/bounces: SendGrid sent no whole answer within 1 s (still, after 2 tries); "
            "run `newsletter suppressions sync` again later: what was read so far is kept") in r.err
    assert "Traceback" not in r.output
    assert 2 <= took < 4.5, took  # two tries of 1 s each, not minutes
    assert len(standin.queries("bounces")) == 2
    with open_store(project.root / ".newsletter", database_url) as store:
        assert {s.email for s in store.suppressions} == {"s@example.com"}  # the list read before is kept...
        assert store.events.cursor("sendgrid:spam_reports") == "1700000001"
        assert store.events.cursor("sendgrid:bounces") is None  # ...and the one cut is read again next time

    standin.trickling = None  # a normal answer: the next sync reads the rest
    r = run_cli("suppressions", "sync", cwd=project.root, env=env)
    assert r.code == 0, r.output
    assert re.search(r"bounces\s+1 read\s+1 new \(bounced; everything\)", r.out)


@pytest.mark.parametrize("say_length", [True, False], ids=["600MB-said", "endless"])
def test_an_oversized_answer_is_refused_at_the_cap_without_reading_the_rest(
        tmp_path: Path, standin: StandIn, database_url: str | None, say_length: bool) -> None:
    """An answer was read whole: a 600 MB body took 600 MB of memory (and one without end, all of it)."""
    import tracemalloc

    standin.lists["/v3/suppression/bounces"] = [bounce(f"b{i}@example.com", 1700000000 + i) for i in range(3)]
    standin.flooding = ("/v3/suppression/bounces", "2", say_length)
    with open_store(tmp_path, database_url) as store:
        tracemalloc.start()
        try:
            with pytest.raises(NewsletterError, match=r"GET /v3/suppression/bounces: SendGrid's answer is (600 MB, )?over "
                                                      r"16 MB, more than a page of the list can be; the rest of it was "
                                                      r"not read \(still, after 2 tries\); "
                                                      r"run `newsletter suppressions sync` again later"):
                sync_suppressions(store, settings(standin.url), page_size=2, attempts=2, backoff=0)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2 * CAP + 8 * 2**20, peak  # never more than the cap (and a copy of it)
        assert store.suppressions.count() == {"bounced": 2}  # the first page is kept...
        assert store.events.cursor("sendgrid:bounces") is None  # ...but the list starts over
        deadline = time.monotonic() + 5
        while len(standin.flooded) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the stand-in notes what it sent once the client hangs up
        assert len(standin.flooded) == 2
        # cut at the cap: what went out is at most the cap and what the sockets' buffers took
        assert all(sent < CAP + 32 * 2**20 for sent in standin.flooded), standin.flooded

        standin.flooding = None  # a normal answer: the next sync reads the list
        report = sync_suppressions(store, settings(standin.url), page_size=2, backoff=0)
        assert next(r for r in report.lists if r.name == "bounces").read == 3
        assert store.events.cursor("sendgrid:bounces") == "1700000002"

        # the unsubscribe group comes unpaged, so it may be larger, but not without end
        standin.flooding = ("/v3/asm/groups/42/suppressions", None, say_length)
        with pytest.raises(NewsletterError, match=r"GET /v3/asm/groups/42/suppressions: SendGrid's answer is "
                                                  r"(600 MB, )?over 64 MB, the most read of an unsubscribe group"):
            sync_suppressions(store, settings(standin.url, asm_group_id=42), attempts=1, backoff=0)


# --- Prism: SendGrid's published suppressions contract ------------------------------------------------


@pytest.fixture(scope="session")
def prism_suppressions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Prism mock validating each request against tsg_suppressions_v3.json."""
    with prism_mock(SPEC, tmp_path_factory.mktemp("prism-suppressions") / "prism.log") as url:
        yield url


class CheckedClient(SuppressionsClient):
    """Notes what Prism says about each request: its status and its sl-violations header."""

    seen: list[tuple[str, int, list[dict]]]

    def _request(self, url: str, max_bytes: int = CAP) -> tuple[int, Any, bytes]:
        status, headers, body = super()._request(url, max_bytes)
        self.seen.append((url, status, json.loads(headers.get("sl-violations") or "[]")))
        return status, headers, body


@pytest.mark.prism
def test_prism_examples_land_as_suppressions_from_requests_the_spec_accepts(prism_suppressions: str, tmp_path: Path) -> None:
    client = CheckedClient(settings(prism_suppressions, asm_group_id=77), backoff=0)
    client.seen = []
    with open_store(tmp_path) as store:
        report = sync_suppressions(store, settings(prism_suppressions, asm_group_id=77), client=client)
        assert [(url.split("?")[0].removeprefix(prism_suppressions), status, v) for url, status, v in client.seen] == [
            ("/v3/suppression/spam_reports", 200, []), ("/v3/suppression/unsubscribes", 200, []),
            ("/v3/suppression/bounces", 200, []), ("/v3/suppression/invalid_emails", 200, []),
            ("/v3/suppression/blocks", 200, []), ("/v3/asm/groups/77/suppressions", 200, [])]
        # the spec's examples, each address once, with the first list's reason and SendGrid's time
        got = {s.email: (s.reason, s.created_at) for s in store.suppressions}
        assert got == {
            "user1@example.com": ("complained", iso(1443651141)),
            "user2@example.com": ("complained", iso(1443651154)),
            "example@example.com": ("bounced", iso(1250337600)),
            "example2@example.com": ("unsubscribed", got["example2@example.com"][1]),  # the group's: no time
        }
        assert report.new == 4  # (Prism serves the blocks schema's own example: example@ once)
        # the next sync is incremental, and still what the spec allows
        client.seen = []
        sync_suppressions(store, settings(prism_suppressions, asm_group_id=77), client=client)
        assert "start_time=1443651154" in client.seen[0][0]
        assert all(status == 200 and not v for _, status, v in client.seen)
    # the check is real: a page larger than the spec allows is refused, naming the rule
    with pytest.raises(NewsletterError, match="422"):
        client.get("/v3/suppression/bounces", {"limit": 1000})


# --- the operator's commands ------------------------------------------------------------------------


def test_add_remove_list_and_export(project: Project, database_url: str | None) -> None:
    env = env_for(database_url)

    def cli(*args: str):
        return run_cli("suppressions", *args, cwd=project.root, env=env)

    r = cli("add", "Ann@EXAMPLE.com")
    assert (r.code, r.out) == (0, "suppressed Ann@example.com (manual)\n")
    r = cli("add", "ann@example.com", "--reason", "bounced")
    assert r.code == 0 and "Ann@example.com was already suppressed (manual via cli," in r.out and "nothing changed" in r.out
    assert cli("add", "=1+2@example.com", "--reason", "complained", "--detail", "[bold]asked by phone").code == 0
    assert cli("add", "bob@example.com", "--reason", "unsubscribed").code == 0
    r = cli("add", "not-an-address")
    assert r.code == 1 and "'not-an-address' is not an email address" in r.err
    r = cli("add", "x@example.com", "--reason", "bored")
    assert r.code == 1 and "reason 'bored': use one of unsubscribed, bounced, complained, invalid, manual" in r.err

    r = cli("list")
    assert r.code == 0, r.output
    assert re.search(r"email\s+reason\s+source\s+since\s+issue\s+detail", r.out)
    assert re.search(r"Ann@example\.com\s+manual\s+cli\s+\d{4}-\d\d-\d\d \d\d:\d\d", r.out)
    assert "[bold]asked by phone" in r.out  # shown as written, never as markup
    assert r.out.rstrip().endswith("suppressed 3: complained 1, manual 1, unsubscribed 1")
    r = cli("list", "--reason", "manual")
    assert "Ann@example.com" in r.out and "bob@example.com" not in r.out
    assert "suppressed 3: complained 1, manual 1, unsubscribed 1; 1 manual shown" in r.out
    assert cli("list", "--reason", "nope").code == 1

    r = cli("export")
    assert r.code == 0
    rows = list(csv.reader(io.StringIO(r.out)))
    assert rows[0] == ["email", "reason", "source", "created_at", "issue", "detail"]
    assert sorted(row[0] for row in rows[1:]) == ["'=1+2@example.com", "Ann@example.com", "bob@example.com"]
    r = cli("export", "--out", "out.csv", "--reason", "unsubscribed")
    assert r.code == 0 and r.out == "wrote out.csv (1 suppression)\n"
    assert (project.root / "out.csv").read_text().splitlines()[1].startswith("bob@example.com,unsubscribed,cli,")

    r = cli("remove", "ANN@example.com")
    assert r.code == 0 and r.out.startswith("removed Ann@example.com from the suppressions (was manual via cli,")
    r = cli("remove", "ann@example.com")
    assert (r.code, r.out) == (0, "ann@example.com was not suppressed; nothing changed\n")


def test_list_into_a_pipe_keeps_each_row_on_one_line(project: Project) -> None:
    """Without a terminal (`| grep`, a CI log) rich would fold the table into 80 columns and split
    an address across lines; and a long list path in the send summary was cut short with '…'."""
    address = "a-very-long-address-of-a-reader@subdomain.example.com"
    assert run_cli("suppressions", "add", address, "--detail", "asked by phone on Tuesday, keep out of every list",
                   cwd=project.root).code == 0
    narrow = {"COLUMNS": ""}  # rich's default for a pipe: 80 columns
    r = run_process("suppressions", "list", cwd=project.root, env=narrow)
    assert r.code == 0, r.output
    assert re.search(rf"^{re.escape(address)}\s+manual\s+cli\s+.*asked by phone on Tuesday, keep out of every list",
                     r.out, re.M), r.out

    project.write_issue(SMALL_ISSUE)
    lists = project.root / "a-rather-long-folder-name-for-the-lists" / "and-another-level-below-it"
    lists.mkdir(parents=True)
    (lists / "readers.csv").write_text("email\nann@example.com\n")
    r = run_process("send", "issues/issue.yaml", "--list", str(lists / "readers.csv"), cwd=project.root, env=narrow)
    assert r.code == 0, r.output
    assert re.search(rf"^rows in the list +1  {re.escape(str(lists / 'readers.csv'))}\s*$", r.out, re.M), r.out


def test_list_and_export_of_an_empty_store_create_nothing(project: Project) -> None:
    r = run_cli("suppressions", "list", cwd=project.root)
    assert r.code == 0 and r.out == "suppressed 0: none\n"
    assert run_cli("suppressions", "export", cwd=project.root).out == "email,reason,source,created_at,issue,detail\n"
    assert not (project.root / ".newsletter").exists()


# --- the walkthrough --------------------------------------------------------------------------------


def test_walkthrough_from_suppressions_to_the_send_and_the_csv(project: Project, standin: StandIn,
                                                               database_url: str | None) -> None:
    """An unsubscribe by hand (standing in for the unsubscribe link) and a spam report synced from
    SendGrid: the dry run skips both with their reasons, and `subscribers apply` writes them into the
    list, after which the list itself says so."""
    env = env_for(database_url, SENDGRID_API_URL=standin.url, SENDGRID_API_KEY=KEY, NEWSLETTER_RETRY_BACKOFF="0")
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    path = project.write_list("email,name,status\nann@example.com,Ann,subscribed\nbob@example.com,Bob,\n"
                              "cy@example.com,Cy,subscribed\n")
    standin.lists["/v3/suppression/spam_reports"] = [{"created": 1764237600, "email": "bob@example.com", "ip": "10.1.2.3"}]

    def cli(*args: str):
        return run_cli(*args, cwd=project.root, env=env)

    assert cli("suppressions", "add", "ann@example.com").code == 0
    r = cli("suppressions", "sync")
    assert r.code == 0, r.output
    assert re.search(r"spam_reports\s+1 read\s+1 new \(complained; everything\)", r.out)
    assert "✓ 1 new suppression from SendGrid" in r.out

    r = cli("send", "issues/2021-03.yaml", "--list", "readers")
    assert r.code == 0, r.output
    assert re.search(r"would receive it\s+1 *\n", r.out)
    assert re.search(r"suppressed\s+2  complained 1, manual 1 *\n", r.out)

    r = cli("subscribers", "apply", "--list", "readers")
    assert r.code == 0, r.output
    assert r.out.splitlines() == [
        f"subscribers/readers.csv:2: ann@example.com: subscribed -> unsubscribed (manual via cli, {iso(int(time.time()))[:10]})",
        "subscribers/readers.csv:3: bob@example.com: subscribed -> complained (complained via sendgrid-sync, 2025-11-27)",
        "2 rows changed in subscribers/readers.csv",
    ]
    assert path.read_text() == ("email,name,status\nann@example.com,Ann,unsubscribed\nbob@example.com,Bob,complained\n"
                                "cy@example.com,Cy,subscribed\n")
    r = cli("send", "issues/2021-03.yaml", "--list", "readers")
    assert re.search(r"skipped by status\s+2  complained 1, unsubscribed 1 *\n", r.out)
    assert re.search(r"would receive it\s+1 *\n", r.out)


def test_a_suppression_however_its_address_is_written_keeps_the_reader_from_the_send(
        project: Project, database_url: str | None) -> None:
    """The webhook and the unsubscribe service add what they are given: SendGrid may report an IDN
    reader's domain in its IDNA form, which the list reads in Unicode. It used to be keyed as given,
    so a bounce or a spam report of anna@xn--e1afmkfd.xn--p1ai never kept anna@пример.рф from a send."""
    project.write_issue(SMALL_ISSUE)
    project.write_list("email,name\nanna@пример.рф,Anna\nbob@example.com,Bob\ncy@example.com,Cy\n")
    with open_store(project.root / ".newsletter", database_url) as store:
        assert store.suppressions.add("anna@xn--e1afmkfd.xn--p1ai", "complained", "webhook")
        assert store.suppressions.add(" BOB@EXAMPLE.COM ", "bounced", "webhook")
        assert not store.suppressions.add("Anna@ПРИМЕР.РФ", "bounced", "webhook")  # the same reader
        assert store.suppressions.get("anna@пример.рф") is not None
    r = run_cli("send", "issues/issue.yaml", "--list", "readers", cwd=project.root, env=env_for(database_url))
    assert r.code == 0, r.output
    assert re.search(r"would receive it\s+1 *\n", r.out)
    assert re.search(r"suppressed\s+2  bounced 1, complained 1 *\n", r.out)
    r = run_cli("suppressions", "remove", "anna@пример.рф", cwd=project.root, env=env_for(database_url))
    assert r.out.startswith("removed anna@xn--e1afmkfd.xn--p1ai from the suppressions"), r.output
