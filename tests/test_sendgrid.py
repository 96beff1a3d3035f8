"""The SendGrid provider against real HTTP: Prism validating SendGrid's published spec, and a tiny
local stand-in server that records each request and answers what a test asks for. No mocks.

Run: .venv/bin/python -m pytest tests/test_sendgrid.py -q   (Prism tests: -m prism)
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from prism_server import prism_mock
from newsletter.providers.sendgrid import SendGridSettings
from newsletter.errors import ConfigError
from newsletter.providers.sendgrid import client as sendgrid_module
from newsletter.message import BatchResult, Envelope, Personalization
from newsletter.providers.sendgrid.client import SendGridProvider

ROOT = Path(__file__).resolve().parent.parent
KEY = "SG.test-only-key.Zx9-DoNotLeak"
UNSUBSCRIBE = "https://example.org/unsubscribe?email={email}&token=t0k{n}"


def spec_path() -> Path:
    """An explicit NEWSLETTER_SENDGRID_SPEC wins; else the copy in the repo; else ../shared."""
    if os.environ.get("NEWSLETTER_SENDGRID_SPEC"):
        return Path(os.environ["NEWSLETTER_SENDGRID_SPEC"])
    copy = ROOT / "tests" / "data" / "sendgrid" / "tsg_mail_v3.json"
    return copy if copy.is_file() else ROOT.parent / "shared" / "sendgrid" / "tsg_mail_v3.json"


def envelope(**changes: object) -> Envelope:
    """Slot 0 is the unsubscribe URL, slot 1 the name; slot 2 exists but no text uses it."""
    base = Envelope(
        issue_id="2021-03",
        from_email="digest@example.com",
        from_name="Дайджест ML",
        reply_to="editor@example.com",
        subject="NLMF1T, мартовский выпуск",
        html='<p>Привет, NLMF1H!</p><p><a href="NLMF0H">Отписаться</a></p>',
        text="Привет, NLMF1T!\n\nОтписаться: NLMF0T\n",
        slots=3,
        categories=("newsletter", "2021-03"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def person(n: int, name: str = "Анна Петрова") -> Personalization:
    email = f"reader{n}@example.com"
    raw = (UNSUBSCRIBE.format(email=email, n=n), name, "не используется")
    return Personalization(
        email=email,
        name=name,
        raw=raw,
        escaped=tuple(html.escape(v) for v in raw),
        headers={
            "List-Unsubscribe": f"<{raw[0]}>, <mailto:unsubscribe@example.com?subject={n}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        line=n + 2,
    )


def provider(url: str, key: str | None = KEY, asm_group_id: int | None = None, compress: bool = False
             ) -> SendGridProvider:
    return SendGridProvider(SendGridSettings(api_url=url, api_key=key, asm_group_id=asm_group_id,
                                             compress=compress))


def messages(result: BatchResult) -> list[str]:
    return [*result.sent.values(), *result.failed.values(), *result.retry.values()]


# --- the local stand-in ---------------------------------------------------------------------------


@dataclass
class Recorded:
    path: str
    headers: Message
    body: bytes
    status: int = 0

    def json(self) -> dict:
        body = self.body
        if self.headers.get("Content-Encoding") == "gzip":  # what SendGrid's front end undoes
            body = gzip.decompress(body)
        return json.loads(body.decode("utf-8"))


class StandIn(ThreadingHTTPServer):
    """Records every request; answers 413 to a request naming more than max_personalizations,
    else with the queued replies in order, then 202 Accepted."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Recorded] = []
        self.replies: list[tuple[int, dict[str, str], bytes]] = []
        self.delay = 0.0
        self.max_personalizations: int | None = None

    def accepted(self) -> list[list[str]]:
        """The addresses of each request that was not refused as too large, in order."""
        return [[p["to"][0]["email"] for p in r.json()["personalizations"]]
                for r in self.requests if r.status != 413]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out and hung up is what the timeout test wants


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        recorded = Recorded(self.path, self.headers, body)
        self.server.requests.append(recorded)
        time.sleep(self.server.delay)
        n = len(self.server.requests)
        limit = self.server.max_personalizations
        if limit is not None and len(recorded.json()["personalizations"]) > limit:
            status, headers, payload = 413, {}, error_json(("content too large", "null"))
        else:
            status, headers, payload = (
                self.server.replies.pop(0) if self.server.replies else (202, {"X-Message-Id": f"msg{n}"}, b"")
            )
        recorded.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def error_json(*errors: tuple[str, str | None]) -> bytes:
    return json.dumps({"errors": [{"message": m, "field": f} for m, f in errors]}).encode()


def delivered(body: dict, index: int) -> tuple[str, str, str]:
    """(subject, html, text) as SendGrid builds them for one personalization: tags replaced."""
    subs = body["personalizations"][index].get("substitutions", {})
    parts = [body["subject"], *(c["value"] for c in body["content"])]
    for tag, value in subs.items():
        parts = [p.replace(tag, value) for p in parts]
    subject, text, html_part = parts  # content is text/plain first, then text/html
    return subject, html_part, text


def delivered_headers(body: dict, index: int, *, merged: bool = False) -> dict[str, str]:
    """The reader's headers: its personalization's own, else the top-level ones with its tags
    replaced (what substitute_headers counts on SendGrid doing). merged: the top-level ones with
    the personalization's over them, key by key (what SendGrid's documentation says it does)."""
    item = body["personalizations"][index]
    if "headers" in item and not merged:
        return item["headers"]
    headers = dict(body.get("headers", {}))
    for tag, value in item.get("substitutions", {}).items():
        headers = {k: v.replace(tag, value) for k, v in headers.items()}
    return {**headers, **item.get("headers", {})}


def test_body_is_compact_utf8_json_with_the_key_as_bearer(standin: StandIn) -> None:
    result = provider(standin.url).send(envelope(), [person(1), person(2, "Борис"), person(3)])
    assert len(standin.requests) == 1
    req = standin.requests[0]
    assert req.path == "/v3/mail/send"
    assert req.headers["Content-Type"] == "application/json; charset=utf-8"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert "Анна Петрова".encode() in req.body and "мартовский".encode() in req.body
    assert b"\\u04" not in req.body  # Cyrillic as UTF-8 bytes, not \uXXXX escapes
    assert b'", "' not in req.body and b'": ' not in req.body  # no padding separators
    first = req.json()["personalizations"][0]
    assert first["to"] == [{"email": "reader1@example.com", "name": "Анна Петрова"}]
    assert result.sent == {f"reader{n}@example.com": "msg1" for n in (1, 2, 3)}
    assert not result.failed and not result.retry


def test_each_recipient_gets_own_personalization_and_html_escaped_tags(standin: StandIn) -> None:
    env = envelope()
    batch = [person(1, "Tom & <Jerry>"), person(2, "Ёжик"), person(3, "")]
    provider(standin.url, asm_group_id=4242).send(env, batch)
    body = standin.requests[0].json()

    assert body["subject"] == env.subject and "NLMF1T" in body["subject"]  # once, tokens left in
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert [c["value"] for c in body["content"]] == [env.text, env.html]
    assert body["from"] == {"email": "digest@example.com", "name": "Дайджест ML"}
    assert body["reply_to"] == {"email": "editor@example.com"}
    assert body["categories"] == ["newsletter", "2021-03"]
    assert body["asm"] == {"group_id": 4242}
    assert "custom_args" not in body  # the spec types the top-level one as a string

    items = body["personalizations"]
    assert [item["to"] for item in items] == [
        [{"email": "reader1@example.com", "name": "Tom & <Jerry>"}],
        [{"email": "reader2@example.com", "name": "Ёжик"}],
        [{"email": "reader3@example.com"}],  # no empty name
    ]
    tom = items[0]["substitutions"]
    assert set(tom) == {"NLMF0H", "NLMF0T", "NLMF1H", "NLMF1T"}  # slot 2 is used nowhere
    assert tom["NLMF1H"] == "Tom &amp; &lt;Jerry&gt;" and tom["NLMF1T"] == "Tom & <Jerry>"
    assert tom["NLMF0H"] == html.escape(batch[0].raw[0]) and "&amp;token" in tom["NLMF0H"]
    for item, p in zip(items, batch):
        assert item["headers"] == p.headers
        assert "custom_args" not in item  # the issue is the same for all: its category says it once
    # what SendGrid would deliver to each reader is exactly what our own filler produces
    for i, p in enumerate(batch):
        assert delivered(body, i) == env.fill(p)
    subject, html_part, text = delivered(body, 0)
    assert "Привет, Tom &amp; &lt;Jerry&gt;!" in html_part and "Привет, Tom & <Jerry>!" in text


def test_1000_recipients_make_one_request(standin: StandIn) -> None:
    sg = provider(standin.url)
    assert sg.max_batch == 1000
    batch = [person(n, f"Читатель {n}") for n in range(1000)]
    result = sg.send(envelope(), batch)
    assert len(standin.requests) == 1
    items = standin.requests[0].json()["personalizations"]
    assert len(items) == 1000 and all(len(item["to"]) == 1 for item in items)
    assert len({item["to"][0]["email"] for item in items}) == 1000
    assert len(result.sent) == 1000
    assert SendGridProvider(SendGridSettings(api_key=KEY, batch_size=250)).max_batch == 250


def test_an_address_is_named_once_per_request(standin: StandIn) -> None:
    twin = replace(person(1), email="READER1@example.com")
    result = provider(standin.url).send(envelope(), [person(1), twin, person(1), person(2)])
    emails = [i["to"][0]["email"] for i in standin.requests[0].json()["personalizations"]]
    assert emails == ["reader1@example.com", "reader2@example.com"]
    assert set(result.sent) == {"reader1@example.com", "reader2@example.com"}
    assert "READER1@example.com" in result.failed and not result.retry


def test_429_with_retry_after_retries_everyone(standin: StandIn) -> None:
    standin.replies.append((429, {"Retry-After": "7"}, error_json(("too many requests", None))))
    result = provider(standin.url).send(envelope(), [person(1), person(2)])
    assert set(result.retry) == {"reader1@example.com", "reader2@example.com"}
    assert not result.sent and not result.failed
    assert result.retry_after == pytest.approx(7)
    assert "429 Too Many Requests: too many requests" in result.retry["reader1@example.com"]


def test_429_with_rate_limit_reset_waits_until_the_reset(standin: StandIn) -> None:
    reset = int(time.time()) + 30
    standin.replies.append((429, {"X-RateLimit-Reset": str(reset)}, b""))
    result = provider(standin.url).send(envelope(), [person(1)])
    assert set(result.retry) == {"reader1@example.com"}
    assert result.retry_after == pytest.approx(30, abs=2)


def test_server_errors_are_retried(standin: StandIn) -> None:
    standin.replies.append((500, {}, error_json(("internal server error", None))))
    standin.replies.append((503, {"Content-Type": "text/html"}, b"<html>Service Unavailable</html>"))
    sg = provider(standin.url)
    first = sg.send(envelope(), [person(1), person(2)])
    assert set(first.retry) == {"reader1@example.com", "reader2@example.com"} and not first.sent
    assert "500 Internal Server Error: internal server error" in first.retry["reader1@example.com"]
    second = sg.send(envelope(), [person(1)])
    assert "503 Service Unavailable" in second.retry["reader1@example.com"]


def test_bad_request_fails_with_sendgrids_own_message(standin: StandIn) -> None:
    standin.replies.append((400, {}, error_json(
        ("The from address does not match a verified Sender Identity.", "from"),
        ("Invalid type. Expected: string, given: integer.", "null"),
    )))
    result = provider(standin.url).send(envelope(), [person(1), person(2)])
    assert set(result.failed) == {"reader1@example.com", "reader2@example.com"}
    assert not result.sent and not result.retry and result.retry_after is None
    assert result.failed["reader1@example.com"] == (
        "SendGrid: 400 Bad Request: The from address does not match a verified Sender Identity. "
        "(field: from); Invalid type. Expected: string, given: integer."
    )


def test_413_splits_the_batch_until_sendgrid_takes_it(standin: StandIn) -> None:
    standin.max_personalizations = 300  # more than 300 readers a request: 413 Payload Too Large
    batch = [person(n) for n in range(1000)]
    result = provider(standin.url).send(envelope(), batch)
    sizes = [len(r.json()["personalizations"]) for r in standin.requests]
    assert sizes == [1000, 500, 250, 250, 500, 250, 250]  # halves, within the one send() call
    accepted = [email for request in standin.accepted() for email in request]
    assert sorted(accepted) == sorted(p.email for p in batch)  # everyone once, nobody twice
    assert set(result.sent) == {p.email for p in batch}
    assert result.sent["reader0@example.com"] == "msg3" and result.sent["reader999@example.com"] == "msg7"
    assert not (result.failed or result.retry or result.unknown)


def test_413_for_a_single_reader_fails_it_with_a_clear_message(standin: StandIn) -> None:
    standin.max_personalizations = 0  # too large whatever the split
    result = provider(standin.url).send(envelope(), [person(1), person(2), person(3)])
    assert [len(r.json()["personalizations"]) for r in standin.requests] == [3, 1, 2, 1, 1]
    assert set(result.failed) == {f"reader{n}@example.com" for n in (1, 2, 3)}
    assert not (result.sent or result.retry or result.unknown)
    message = result.failed["reader1@example.com"]
    assert message.startswith("SendGrid: 413 Request Entity Too Large: content too large")
    assert "even for one reader" in message and "make the issue smaller" in message


def test_413_then_an_outage_leaves_the_rest_to_retry_unasked(standin: StandIn) -> None:
    standin.max_personalizations = 2
    standin.replies = [(202, {"X-Message-Id": "a"}, b""), (503, {}, b"")]
    batch = [person(n) for n in range(8)]
    result = provider(standin.url).send(envelope(), batch)
    # 8 -> 413; 4 -> 413; 2 sent; 2 -> 503: SendGrid is down, the other 4 are not even tried
    assert [len(r.json()["personalizations"]) for r in standin.requests] == [8, 4, 2, 2]
    assert set(result.sent) == {"reader0@example.com", "reader1@example.com"}
    assert set(result.retry) == {f"reader{n}@example.com" for n in range(2, 8)}
    assert all("503" in why for why in result.retry.values())
    assert result.unreachable and not (result.failed or result.unknown)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_point_at_the_key_without_showing_it(standin: StandIn, status: int) -> None:
    # a server that echoes the credentials back must not get them into our messages either
    standin.replies.append((status, {}, error_json((f"bad credentials: Bearer {KEY}", None))))
    with pytest.raises(ConfigError) as refused:
        provider(standin.url).send(envelope(), [person(1)])
    message = str(refused.value)
    assert f"SendGrid: {status}" in message and "SENDGRID_API_KEY" in message
    assert KEY not in message
    assert ("verified sender" in message) == (status == 403)  # SendGrid's 403 for an unverified From too


def test_a_refused_key_stops_the_send_after_one_request_and_nobody_is_marked_failed(standin: StandIn,
                                                                                    project) -> None:
    standin.replies = [(401, {}, error_json(("The provided authorization grant is invalid, expired, or revoked",
                                             None)))]
    r = _cli_send(project, standin.url, 2500, "--send", "--yes")
    assert r.code != 0 and "internal error" not in r.err and "Traceback" not in r.err
    assert "authorization grant is invalid" in r.err and "check SENDGRID_API_KEY" in r.err and KEY not in r.output
    assert len(standin.requests) == 1  # not 3 more batches to be refused alike
    again = _cli_send(project, standin.url, 2500, "--send", "--yes")  # the key fixed: everyone, once
    assert again.code == 0, again.output
    assert sorted(e for req in standin.requests[1:] for e in (p["to"][0]["email"] for p in req.json()["personalizations"])) \
        == sorted(f"reader{i}@example.com" for i in range(2500))


def test_unreachable_is_retried_but_no_answer_is_unknown(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    refused = provider(closed).send(envelope(), [person(1)])
    assert "SendGrid unreachable" in refused.retry["reader1@example.com"]
    assert refused.unreachable

    # the request went out but no answer came: SendGrid may have sent it, so a retry could
    # email both readers twice; their fate is unknown instead
    monkeypatch.setattr(sendgrid_module, "TIMEOUT", 0.3)
    standin.delay = 1.0
    slow = provider(standin.url).send(envelope(), [person(1), person(2)])
    assert set(slow.unknown) == {"reader1@example.com", "reader2@example.com"}
    assert not slow.sent and not slow.retry


def test_the_key_never_shows(standin: StandIn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # python_http_client logs the Authorization header at DEBUG
    sg = provider(standin.url)
    standin.replies.append((400, {}, KEY.encode()))
    results = [sg.send(envelope(), [person(1)]), sg.send(envelope(), [person(2)])]
    assert all(KEY not in m for r in results for m in messages(r))
    assert KEY not in repr(sg)
    assert KEY not in caplog.text
    with pytest.raises(ConfigError, match="SENDGRID_API_KEY is not set"):
        provider(standin.url, key=None)


def test_api_url_is_checked_and_a_trailing_slash_is_harmless(standin: StandIn) -> None:
    with pytest.raises(ConfigError, match="api_url"):
        provider("api.sendgrid.com")
    provider(standin.url + "/").send(envelope(), [person(1)])
    assert standin.requests[0].path == "/v3/mail/send"


def test_empty_batch_sends_nothing(standin: StandIn) -> None:
    assert provider(standin.url).send(envelope(), []) == BatchResult()
    assert standin.requests == []


# --- Prism: SendGrid's own published contract -----------------------------------------------------


@pytest.fixture(scope="session")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Prism mock that validates each request against tsg_mail_v3.json."""
    spec = spec_path()
    if not spec.is_file():
        pytest.skip(f"{spec} not found: set NEWSLETTER_SENDGRID_SPEC to SendGrid's tsg_mail_v3.json")
    with prism_mock(spec, tmp_path_factory.mktemp("prism") / "prism.log") as url:
        yield url


def violations(url: str, body: dict) -> list[dict]:
    """What Prism says is wrong with a request body (its sl-violations header)."""
    req = urllib.request.Request(f"{url}/v3/mail/send", method="POST",
                                 data=json.dumps(body, ensure_ascii=False).encode(),
                                 headers={"Authorization": "Bearer x", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10):
            return []
    except urllib.error.HTTPError as e:
        return json.loads(e.headers.get("sl-violations", "[]"))


@pytest.mark.prism
def test_prism_accepts_a_cyrillic_batch(prism: str) -> None:
    env = envelope()
    batch = [person(1, "Анна Петрова"), person(2, "Tom & <Jerry>"), person(3, "Ёлкин-Палкин")]
    sg = provider(prism, asm_group_id=77)
    result = sg.send(env, batch)
    assert result.sent == dict.fromkeys((p.email for p in batch), "accepted"), messages(result)
    assert violations(prism, sg.body(env, batch)) == []


@pytest.mark.prism
def test_prism_accepts_1000_recipients_in_one_request(prism: str) -> None:
    batch = [person(n, f"Читатель №{n}") for n in range(1000)]
    result = provider(prism).send(envelope(), batch)
    assert len(result.sent) == 1000 and not result.failed and not result.retry


@pytest.mark.prism
@pytest.mark.parametrize(("change", "where"), [
    ({"from_email": "not-an-address"}, ["request", "body", "from", "email"]),
    ({"subject": ""}, ["request", "body", "subject"]),
])
def test_prism_rejection_fails_the_batch_readably(prism: str, change: dict, where: list[str]) -> None:
    env = envelope(**change)
    sg = provider(prism)
    result = sg.send(env, [person(1), person(2)])
    assert set(result.failed) == {"reader1@example.com", "reader2@example.com"}, messages(result)
    assert not result.sent and not result.retry
    # Prism always answers with the spec's static example body, passed through as SendGrid's words
    assert result.failed["reader1@example.com"].startswith("SendGrid: 400 Bad Request: error message")
    assert [v["location"] for v in violations(prism, sg.body(env, [person(1)]))] == [where]


# --- the whole command, through SendGrid ------------------------------------------------------


def _cli_send(project, url: str, n: int, *extra: str, env_extra: dict[str, str] | None = None):
    from conftest import SMALL_ISSUE, run_cli

    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    project.write_list("email,name\n" + "".join(f"reader{i}@example.com,Читатель {i}\n" for i in range(n)))
    env = {"SENDGRID_API_URL": url, "SENDGRID_API_KEY": KEY, "NEWSLETTER_SECRET": "sendgrid-test-secret-0123456789abcdef",
           "NEWSLETTER_RETRY_BACKOFF": "0.05", "NEWSLETTER_RETRY_ATTEMPTS": "3", **(env_extra or {})}
    return run_cli("send", "issues/2021-03.yaml", "--list", "readers", "--provider", "sendgrid", *extra,
                   cwd=project.root, env=env)


def test_send_command_batches_1000_and_survives_a_server_error(standin: StandIn, project) -> None:
    standin.replies = [(503, {}, b"")]  # the first request fails, the retry succeeds
    r = _cli_send(project, standin.url, 2500, "--send", "--yes")
    assert r.code == 0, r.output
    bodies = [req.json() for req in standin.requests]
    assert [len(b["personalizations"]) for b in bodies] == [1000, 1000, 1000, 500]  # 1st one retried
    delivered_to = [p["to"][0]["email"] for b in bodies[1:] for p in b["personalizations"]]
    assert sorted(delivered_to) == sorted(f"reader{i}@example.com" for i in range(2500))
    assert KEY not in r.output
    # everyone has it now: a rerun makes no request
    again = _cli_send(project, standin.url, 2500, "--send", "--yes")
    assert again.code == 0 and "Nothing to send" in again.out and len(standin.requests) == 4


def test_send_command_splits_batches_sendgrid_finds_too_large(standin: StandIn, project) -> None:
    standin.max_personalizations = 400
    r = _cli_send(project, standin.url, 2500, "--send", "--yes")
    assert r.code == 0, r.output
    assert "✓ done: 2,500 sent" in r.out
    accepted = [email for request in standin.accepted() for email in request]
    assert max(len(request) for request in standin.accepted()) <= 400
    assert sorted(accepted) == sorted(f"reader{i}@example.com" for i in range(2500))  # none twice
    again = _cli_send(project, standin.url, 2500, "--send", "--yes")
    assert again.code == 0 and "Nothing to send" in again.out


def test_send_command_reports_sendgrids_refusal_and_exits_3(standin: StandIn, project) -> None:
    standin.replies = [(400, {}, error_json(("The from address does not match a verified Sender Identity.", "from")))]
    r = _cli_send(project, standin.url, 3, "--send", "--yes")
    assert r.code == 3
    assert "does not match a verified Sender Identity" in r.err and "run the same command again" in r.err


@pytest.mark.prism
def test_send_command_requests_satisfy_sendgrids_published_spec(prism: str, project) -> None:
    r = _cli_send(project, prism, 5, "--send", "--yes")
    assert r.code == 0, r.output  # Prism answers 400 to any request that breaks the spec
    assert "✓ done: 5 sent" in r.out


# --- only what differs per reader (issue 11) ------------------------------------------------------


def _real_personalizer(project, issue: str | None = None, secret: str = "k3y"):
    from conftest import SMALL_ISSUE
    from newsletter.config import load_settings
    from newsletter.issue import parse_issue
    from newsletter.personalize import Personalizer
    from newsletter.render import Renderer

    settings = load_settings(project.root / "newsletter.toml", env={})
    rendered = Renderer(settings).render(parse_issue(issue or SMALL_ISSUE, "x.yaml"), "2021-03")
    return Personalizer(rendered, settings, secret, provider="sendgrid")


def _readers(names: list[str]):
    from newsletter.subscribers import Subscriber

    emails = ["anna@example.com", "Bob.Smith+news@Example.org", "o'neil@example.com", "a/b@example.com",
              "x%y@example.com", "zoe@bücher.de", "user12345@example.com", "Ch.Ng@EXAMPLE.COM"]
    return [Subscriber(e, n, "subscribed", {"email": e, "name": n}, i + 2)
            for i, (e, n) in enumerate(zip(emails * 4, names))]


@pytest.mark.parametrize("names", [
    ["Анна", "Bob", "", "Zoë", "Имя 12345", "x", "NLMF0T", "Ёжик"],  # no HTML-special characters
    ["Tom & <Jerry>", "Анна", "\"quoted\"", "", "o'neil", "a<b", "Bob", "&amp;"],
])
def test_sendgrid_expands_each_reader_to_exactly_what_fill_gives(standin: StandIn, project, names) -> None:
    p = _real_personalizer(project)
    env = p.envelope()
    assert env.unsubscribe_url  # the project's plain {email}/{token} template
    batch = [p(sub) for sub in _readers(names)]
    provider(standin.url).send(env, batch)
    body = standin.requests[0].json()
    for i, reader in enumerate(batch):
        assert delivered(body, i) == env.fill(reader)  # subject, html, text, byte for byte
        item = body["personalizations"][i]
        assert item["headers"] == reader.headers and item["to"][0]["email"] == reader.email
        assert delivered_headers(body, i, merged=True) == {**reader.headers, "List-Id": env.list_id}
    # only List-Id, the same for all: the unsubscribe headers, with tags, only with substitute_headers
    # (SendGrid's spec promises substitutions in content, not headers)
    assert body["headers"] == {"List-Id": env.list_id}
    # the URL travels once, in the content; each reader carries only its address and token
    assert "token=NLMFUT" in body["content"][0]["value"]


def test_only_what_differs_per_reader_is_sent(standin: StandIn, project) -> None:
    from newsletter.subscribers import Subscriber

    p = _real_personalizer(project)
    env = p.envelope()
    subs = [Subscriber(f"user{i}@example.com", f"Имя {i}", "subscribed",
                       {"email": f"user{i}@example.com", "name": f"Имя {i}"}, i) for i in range(1000)]
    batch = [p(s) for s in subs]
    provider(standin.url).send(env, batch)
    body = standin.requests[0].json()
    first = body["personalizations"][0]["substitutions"]
    assert set(first) <= {"NLMFUE", "NLMFUT", "NLMF1T", "NLMF2T", "NLMF3T"}  # no URL, no twin H tags
    assert first["NLMFUE"] == "user0@example.com" and len(first["NLMFUT"]) == 22
    per_reader = (len(standin.requests[0].body) - sum(len(c["value"].encode()) for c in body["content"])) / 1000
    # was ~625 B with the URL three times over; the headers are most of the rest (List-Id goes once).
    # ~43 B of it is the rule under the title (NLMF3T): the title holds the reader's name, so its
    # underline is as wide as each reader's title (441 B before the rule was per reader)
    assert per_reader < 490


def test_a_value_that_looks_like_a_tag_keeps_the_url_whole(standin: StandIn, project) -> None:
    from newsletter.subscribers import Subscriber

    p = _real_personalizer(project)
    env = p.envelope()
    sub = Subscriber("NLMFUT@example.com", "x", "subscribed", {"email": "NLMFUT@example.com", "name": "x"}, 2)
    batch = [p(sub)]
    provider(standin.url).send(env, batch)
    body = standin.requests[0].json()
    assert "NLMFUE" not in body["personalizations"][0]["substitutions"]
    assert delivered(body, 0) == env.fill(batch[0])


@pytest.mark.parametrize("names", [["Анна", "Bob", "", "Zoë"], ["Tom & <Jerry>", "Анна", "o'neil", "a<b"]])
def test_shared_headers_expand_to_each_readers_own(standin: StandIn, project, names) -> None:
    p = _real_personalizer(project)
    env = p.envelope()
    batch = [p(sub) for sub in _readers(names * 2)]
    sg = SendGridProvider(SendGridSettings(api_url=standin.url, api_key=KEY, substitute_headers=True))
    sg.send(env, batch)
    body = standin.requests[0].json()
    assert "List-Unsubscribe" in body["headers"] and "NLMFUT" in body["headers"]["List-Unsubscribe"]
    for i, reader in enumerate(batch):
        # only an address the two quotings write differently (a/b@: %2F in the URL, / in mailto:)
        # carries its own headers, which replace the shared ones
        assert ("headers" in body["personalizations"][i]) == ("/" in reader.email)
        assert delivered_headers(body, i, merged=True) == {**reader.headers, "List-Id": env.list_id}
        assert delivered(body, i) == env.fill(reader)


def test_shared_headers_size(standin: StandIn, project) -> None:
    from newsletter.subscribers import Subscriber

    p = _real_personalizer(project)
    subs = [Subscriber(f"user{i}@example.com", f"Имя {i}", "subscribed",
                       {"email": f"user{i}@example.com", "name": f"Имя {i}"}, i) for i in range(1000)]
    sg = SendGridProvider(SendGridSettings(api_url=standin.url, api_key=KEY, substitute_headers=True))
    sg.send(p.envelope(), [p(s) for s in subs])
    body = standin.requests[0].json()
    per_reader = (len(standin.requests[0].body) - sum(len(c["value"].encode()) for c in body["content"])) / 1000
    assert per_reader < 250


@pytest.mark.prism
def test_shared_headers_satisfy_sendgrids_published_spec(prism: str, project) -> None:
    r = _cli_send(project, prism, 5, "--send", "--yes", env_extra={"SENDGRID_SUBSTITUTE_HEADERS": "true"})
    assert r.code == 0, r.output  # Prism answers 400 to any request that breaks the spec
    assert "✓ done: 5 sent" in r.out


# --- List-Id (RFC 2919): the same header for every reader -----------------------------------------

LIST_ID = "=?utf-8?b?0J3QtdC50YDQvtC00LDQudC00LbQtdGB0YI=?= <digest.example.org>"  # Нейродайджест


@pytest.mark.parametrize("substitute", [False, True])
@pytest.mark.parametrize("merged", [False, True])
def test_list_id_goes_once_and_only_it_depends_on_how_sendgrid_combines_headers(standin: StandIn,
                                                                                 substitute: bool,
                                                                                 merged: bool) -> None:
    # a reader with headers of their own (the unsubscribe ones), one without (SendGrid's own
    # unsubscribe group), and one whose headers cannot come from the shared tags. Merged (what
    # SendGrid documents), each gets List-Id; taken whole, those with their own headers miss only
    # List-Id: their unsubscribe headers are theirs either way
    env = envelope(list_id=LIST_ID)
    batch = [person(1), replace(person(2), headers={}), person(3)]
    sg = SendGridProvider(SendGridSettings(api_url=standin.url, api_key=KEY, substitute_headers=substitute))
    sg.send(env, batch)
    body = standin.requests[0].json()
    assert body["headers"]["List-Id"] == LIST_ID  # once, at the top level
    assert all("List-Id" not in item.get("headers", {}) for item in body["personalizations"])
    for i, reader in enumerate(batch):
        got = delivered_headers(body, i, merged=merged)
        own = "headers" in body["personalizations"][i]
        assert got == ({**reader.headers} if own and not merged else {**reader.headers, "List-Id": LIST_ID})


def test_no_list_id_no_header(standin: StandIn) -> None:
    # an Envelope made without one (the library's callers): the request is as before
    provider(standin.url).send(envelope(), [person(1)])
    body = standin.requests[0].json()
    assert "headers" not in body and "List-Id" not in body["personalizations"][0]["headers"]


def test_list_id_of_a_real_send_is_the_smtp_header_unfolded(standin: StandIn, project) -> None:
    # what SendGrid writes is the very value the SMTP message carries (ASCII: encoded words for a
    # non-ASCII name), for every reader of every batch
    from newsletter.mime import fold

    (project.root / "newsletter.toml").write_text(
        (project.root / "newsletter.toml").read_text().replace('name = "Test Digest"', 'name = "Нейродайджест"'),
        encoding="utf-8")
    r = _cli_send(project, standin.url, 1500, "--send", "--yes")
    assert r.code == 0, r.output
    bodies = [req.json() for req in standin.requests]
    assert len(bodies) == 2
    wire = fold("List-Id", LIST_ID).decode("ascii")
    assert wire.replace("\r\n ", " ") == f"List-Id: {LIST_ID}\r\n"
    for body in bodies:
        assert body["headers"] == {"List-Id": LIST_ID}  # once a request, not once a reader
        assert not any("List-Id" in item.get("headers", {}) for item in body["personalizations"])


@pytest.mark.prism
@pytest.mark.parametrize("substitute", ["false", "true"])
def test_list_id_satisfies_sendgrids_published_spec(prism: str, project, substitute: str) -> None:
    r = _cli_send(project, prism, 5, "--send", "--yes",
                  env_extra={"SENDGRID_SUBSTITUTE_HEADERS": substitute, "NEWSLETTER_NAME": "Нейродайджест, \"ML\"",
                             "NEWSLETTER_LIST_ID": "ml-digest.example.org"})
    assert r.code == 0, r.output  # Prism answers 400 to any request that breaks the spec
    assert "✓ done: 5 sent" in r.out
    env, batch = envelope(list_id=LIST_ID), [person(1), replace(person(2), headers={})]
    assert violations(prism, provider(prism).body(env, batch)) == []


# --- gzip-compressed requests ([sendgrid] compress, issue 11) --------------------------------------


class _Gunzip(ThreadingHTTPServer):
    """What SendGrid's front end does for an account with compression on: undoes Content-Encoding:
    gzip, then hands the request on (here to Prism, which does not decode gzip itself: a stand-in
    for that one step, not for SendGrid's checks, which Prism makes against the spec)."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _GunzipHandler)
        self.upstream = upstream
        self.seen: list[tuple[str | None, int]] = []  # (Content-Encoding, bytes on the wire)


class _GunzipHandler(BaseHTTPRequestHandler):
    server: _Gunzip

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding")
        self.server.seen.append((encoding, len(body)))
        if encoding == "gzip":
            body = gzip.decompress(body)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-encoding", "content-length",
                                                                            "host", "connection")}
        req = urllib.request.Request(self.server.upstream + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, payload, answer = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, payload, answer = e.code, e.read(), e.headers
        self.send_response(status)
        for k in ("Content-Type", "X-Message-Id", "sl-violations"):
            if answer.get(k):
                self.send_header(k, answer[k])
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_compressed_request_is_the_same_json_in_a_ninth_of_the_bytes(standin: StandIn, project) -> None:
    from newsletter.subscribers import Subscriber

    p = _real_personalizer(project)
    readers = [p(Subscriber(f"user{i}@example.com", f"Имя {i}", "subscribed",
                            {"email": f"user{i}@example.com", "name": f"Имя {i}"}, i)) for i in range(1000)]
    plain, packed = provider(standin.url), provider(standin.url, compress=True)
    assert plain.send(p.envelope(), readers).sent.keys() == packed.send(p.envelope(), readers).sent.keys()
    first, second = standin.requests
    assert "Content-Encoding" not in first.headers and second.headers["Content-Encoding"] == "gzip"
    assert second.headers["Content-Type"] == "application/json; charset=utf-8"
    assert gzip.decompress(second.body) == first.body  # byte for byte the request it stands for
    assert len(second.body) * 5 < len(first.body)  # 56 kB against 502 kB for the example issue


def test_a_refused_compressed_request_says_to_turn_compression_off(standin: StandIn) -> None:
    standin.replies = [(400, {}, error_json(("Invalid JSON", None)))]
    result = provider(standin.url, compress=True).send(envelope(), [person(1)])
    [message] = result.failed.values()
    assert "Invalid JSON" in message and "set compress = false" in message
    standin.replies = [(400, {}, error_json(("Invalid JSON", None)))]
    [message] = provider(standin.url).send(envelope(), [person(1)]).failed.values()
    assert "compress" not in message  # no such hint when the request was not compressed


@pytest.mark.prism
def test_compressed_requests_satisfy_sendgrids_published_spec(prism: str, project) -> None:
    server = _Gunzip(prism)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        r = _cli_send(project, f"http://127.0.0.1:{server.server_address[1]}", 5, "--send", "--yes",
                      env_extra={"SENDGRID_COMPRESS": "true"})
    finally:
        server.shutdown()
        server.server_close()
    assert r.code == 0, r.output  # Prism answers 400 to any request that breaks the spec
    assert "✓ done: 5 sent" in r.out
    assert server.seen and all(encoding == "gzip" for encoding, _ in server.seen)
