"""`newsletter serve`: the unsubscribe page and RFC 8058 one-click POST, SendGrid's signed event
webhook, limits, logs, and what a following send makes of it. Starlette's TestClient for most; a
real `newsletter serve` process for the end-to-end, size-limit and kill -9 tests. Whatever touches the
state store runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from conftest import EXAMPLE, SMALL_ISSUE, Project, run_cli
from serve_storm import ONE_CLICK_BODY, ServiceProcess, child_env, lost_after_kill

from newsletter import Campaign, load_settings, prepare
from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.ledger import key_of
from newsletter.mime import build_message
from newsletter.personalize import unsubscribe_token
from newsletter.subscribers import Subscriber
from newsletter.web import create_app, redact_uvicorn_access_log

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

SECRET = "serve-test-secret-0123456789abcdefXYZ"
OLD_SECRET = "serve-old-secret-9876543210zyxwvuABC"
ONE_CLICK = {"content": ONE_CLICK_BODY, "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
ANN = "Ann.Lee@example.com"


def link(email: str = ANN, token: str | None = None, secret: str = SECRET, **extra: str) -> str:
    token = unsubscribe_token(secret, email) if token is None else token
    query = f"email={quote(email, safe='@')}&token={quote(token, safe='')}"
    return "/unsubscribe?" + query + "".join(f"&{k}={quote(v, safe='')}" for k, v in extra.items())


@pytest.fixture(autouse=True)
def issue_in_links(project: Project) -> None:
    """Links name their issue too ({issue} in unsubscribe_url), as the README suggests."""
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace("&token={token}", "&token={token}&issue={issue}"))


@pytest.fixture
def env(database_url: str | None) -> dict[str, str]:
    e = {"NEWSLETTER_SECRET": SECRET}
    if database_url:
        e["NEWSLETTER_DATABASE_URL"] = database_url
    return e


def settings_of(project: Project, env: dict[str, str]) -> Settings:
    return load_settings(project.root / "newsletter.toml", env=env)


@contextmanager
def service(project: Project, env: dict[str, str]) -> Iterator[tuple[TestClient, Settings]]:
    settings = settings_of(project, env)
    with TestClient(create_app(settings), base_url="https://example.org") as client:
        yield client, settings


def suppressions(settings: Settings) -> list[tuple[str, str, str, str | None]]:
    with settings.open_store() as store:
        return [(s.email, s.reason, s.source, s.issue) for s in store.suppressions]


# --- the unsubscribe link ---------------------------------------------------------------------------

def test_get_shows_one_button_and_changes_nothing(project: Project, env: dict[str, str]) -> None:
    with service(project, env) as (client, settings):
        r = client.get(link(issue="2021-03"))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        page = r.text
        assert '<html lang="en">' in page and "<title>Unsubscribe from Test Digest</title>" in page
        assert "Stop sending Test Digest to Ann.Lee@example.com?" in page
        assert page.count("<button") == 1 and '<form method="post">' in page  # posts to this very URL
        assert f"background:{settings.brand.color};" in page and 'name="viewport"' in page  # brand; a phone
        assert not re.search(r"""(src|href)=|url\(|@import|<script""", page)  # nothing loads from elsewhere
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"
        assert client.head(link()).status_code == 200
        assert suppressions(settings) == []  # a mail scanner following the link unsubscribes nobody


def test_the_page_speaks_the_newsletters_language(project: Project) -> None:
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace('language = "en"', 'language = "ru"')
                   + '\n[brand]\ncolor = "#ffd33d"\n')
    with service(project, {"NEWSLETTER_SECRET": SECRET}) as (client, _):
        page = client.get(link()).text
        assert '<html lang="ru">' in page and ">Отписаться</button>" in page
        assert "Больше не присылать «Test Digest» на адрес Ann.Lee@example.com?" in page
        assert "background:#ffd33d;color:#1f2328" in page  # dark text on a light brand colour
        r = client.post(link(), **ONE_CLICK)
        assert "Вы отписались" in r.text
        assert "Ссылка не работает" in client.get(link(token="x" * 22)).text


def test_a_broken_labels_toml_never_takes_the_pages_down(project: Project, caplog: pytest.LogCaptureFixture) -> None:
    """The service re-reads labels.toml while it runs: an editor's typo (or a save half done) is
    logged, and the pages keep answering with the last good labels, else the built-in ones."""
    labels = project.root / "templates" / "labels.toml"
    labels.parent.mkdir(exist_ok=True)
    labels.write_text('[en]\nunsubscribe_title = "Leave {name\n')  # an unclosed string
    with service(project, {"NEWSLETTER_SECRET": SECRET}) as (client, settings):
        r = client.get(link())
        assert r.status_code == 200 and "<title>Unsubscribe from Test Digest</title>" in r.text  # built in
        assert "labels.toml" in caplog.text and "fix the TOML syntax" in caplog.text
        labels.write_text('[en]\nunsubscribe_title = "Leave {name}"\n')
        os.utime(labels, (time.time() + 5, time.time() + 5))
        assert "<title>Leave Test Digest</title>" in client.get(link()).text
        labels.write_bytes(b'[en]\nunsubscribe_title = "\xff"\n')  # not UTF-8
        os.utime(labels, (time.time() + 10, time.time() + 10))
        r = client.post(link(), **ONE_CLICK)
        assert r.status_code == 200 and "You are unsubscribed" in r.text
        assert "<title>Leave Test Digest</title>" in client.get(link()).text  # the last good labels
        assert client.get(link(token="A" * 22)).status_code == 400
        assert suppressions(settings) == [(ANN, "unsubscribed", "one-click", None)]


def test_one_click_and_button_both_unsubscribe_idempotently(project: Project, env: dict[str, str]) -> None:
    with service(project, env) as (client, settings):
        # RFC 8058: a mailbox provider POSTs List-Unsubscribe=One-Click; no cookies, no login
        r = client.post(link(issue="2021-03"), **ONE_CLICK)
        assert r.status_code == 200 and "You are unsubscribed" in r.text
        assert "Ann.Lee@example.com will get no more emails from Test Digest." in r.text
        assert client.post(link(issue="2021-03"), **ONE_CLICK).status_code == 200  # again: same answer
        # the button on the page: an empty form post
        bob = "bob@example.com"
        assert client.post(link(bob), headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 200
        assert client.post(link(bob)).status_code == 200
        # multipart/form-data is allowed by RFC 8058 too
        carol = "carol@example.com"
        r = client.post(link(carol), files={"List-Unsubscribe": (None, "One-Click")})
        assert r.status_code == 200
        # a body that ends with a line break is still RFC 8058's
        r = client.post(link("dave@example.com"), content=ONE_CLICK_BODY + b"\r\n", headers=ONE_CLICK["headers"])
        assert r.status_code == 200
        assert sorted(suppressions(settings)) == [
            ("Ann.Lee@example.com", "unsubscribed", "one-click", "2021-03"),
            ("bob@example.com", "unsubscribed", "link", None),
            ("carol@example.com", "unsubscribed", "one-click", None),
            ("dave@example.com", "unsubscribed", "one-click", None),
        ]


BAD_TOKENS = {
    "forged": "A" * 22,
    "damaged": unsubscribe_token(SECRET, ANN)[:-1] + ("B" if not unsubscribe_token(SECRET, ANN).endswith("B") else "C"),
    "truncated": unsubscribe_token(SECRET, ANN)[:10],
    "another address's": unsubscribe_token(SECRET, "bob@example.com"),
    "another key's": unsubscribe_token("some-other-newsletter-key-0123456789", ANN),
    "non-ASCII": "тёкен-ünïcödé-токен-ab",
    "empty": "",
    "huge": "A" * 5000,
}


def test_every_bad_link_gets_the_same_400_page_and_nothing_is_looked_up(project: Project) -> None:
    env = {"NEWSLETTER_SECRET": SECRET}
    with service(project, env) as (client, settings):
        answers = []
        for name, token in BAD_TOKENS.items():
            for method in ("GET", "POST"):
                r = client.request(method, link(token=token), **ONE_CLICK)
                answers.append((name, method, r.status_code, r.text))
        for name, target in (("no token", f"/unsubscribe?email={ANN}"),
                             ("no address", f"/unsubscribe?token={unsubscribe_token(SECRET, '')}")):
            r = client.post(target, **ONE_CLICK)
            answers.append((name, "POST", r.status_code, r.text))
        # a cross-site form post (another origin, no token of ours) is just another bad link
        r = client.post(link(token="A" * 22), data={"List-Unsubscribe": "One-Click"},
                        headers={"Origin": "https://evil.example", "Referer": "https://evil.example/x"})
        answers.append(("cross-site", "POST", r.status_code, r.text))
        pages = {text for *_, text in answers}
        assert {code for _, _, code, _ in answers} == {400} and len(pages) == 1, answers
        page = pages.pop()
        assert "This link does not work" in page and ANN not in page and "bob" not in page
    # nothing was looked up or written: the answer cannot depend on who is on which list
    assert not (settings.state_dir / "sends.sqlite3").exists()


def test_links_signed_with_a_previous_key_keep_working(project: Project, database_url: str | None) -> None:
    old_link = link(secret=OLD_SECRET)
    base = {"NEWSLETTER_DATABASE_URL": database_url} if database_url else {}
    with service(project, {**base, "NEWSLETTER_SECRET": SECRET}) as (client, _):
        assert client.post(old_link, **ONE_CLICK).status_code == 400  # the old key, forgotten
    rotated = {**base, "NEWSLETTER_SECRET": SECRET, "NEWSLETTER_SECRET_PREVIOUS": f"{OLD_SECRET}, another-old-key-0123456789abcdef"}
    with service(project, rotated) as (client, settings):
        assert client.post(old_link, **ONE_CLICK).status_code == 200  # sent before the rotation
        assert client.post(link("new@example.com"), **ONE_CLICK).status_code == 200  # sent after it
        assert client.get(link(token=BAD_TOKENS["forged"])).status_code == 400
        assert {e for e, *_ in suppressions(settings)} == {ANN, "new@example.com"}
    assert settings.secret_previous == [OLD_SECRET, "another-old-key-0123456789abcdef"]


def test_the_route_is_wherever_unsubscribe_url_points(project: Project, caplog: pytest.LogCaptureFixture) -> None:
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace(
        "https://example.org/unsubscribe?email={email}&token={token}&issue={issue}",
        "https://example.org/letters/bye/{token}?who={email}&n={issue}"))
    settings = settings_of(project, {"NEWSLETTER_SECRET": SECRET})
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    project.write_list(f"email\n{ANN}\n")
    campaign = Campaign(prepare(project.root / "issues" / "2021-03.yaml", settings), settings, "readers")
    url = campaign.personalizer()(Subscriber(ANN, "", "subscribed", {"email": ANN}, 2)).raw[0]
    assert url == f"https://example.org/letters/bye/{unsubscribe_token(SECRET, ANN)}?who={ANN}&n=2021-03"
    caplog.set_level(logging.INFO)
    token = unsubscribe_token(SECRET, ANN)
    with TestClient(create_app(settings), base_url="https://example.org", follow_redirects=False) as client:
        assert client.post(link(), **ONE_CLICK).status_code == 404  # nothing at the old path
        assert client.post(url, **ONE_CLICK).status_code == 200
        # near misses carry the token too: the log shows the path only up to the placeholder
        assert client.get(f"/letters/bye/{token}/?who={ANN}").status_code == 307
        assert client.get(f"/letters/bye/{token}/more?who={ANN}").status_code == 404
    assert suppressions(settings) == [(ANN, "unsubscribed", "one-click", "2021-03")]
    access = [r.getMessage() for r in caplog.records if r.name == "newsletter.web.access"]
    assert '"POST /letters/bye/{token}?who=…&n=…" 200' in access[1] and '"GET /letters/bye/…?who=…" 307' in access[2]
    assert not [r for r in caplog.records if r.name.startswith("newsletter") and token in r.getMessage()]


def test_settings_the_service_cannot_serve_are_refused(project: Project) -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET is not set"):
        create_app(settings_of(project, {}))
    with pytest.raises(ConfigError, match="NEWSLETTER_SENDGRID_WEBHOOK_KEY: not a public key"):
        create_app(settings_of(project, {"NEWSLETTER_SECRET": SECRET, "NEWSLETTER_SENDGRID_WEBHOOK_KEY": "abc"}))
    cfg = project.root / "newsletter.toml"
    text = cfg.read_text()
    cfg.write_text(text.replace("email={email}&token={token}", "x=u{email}&token={token}"))
    with pytest.raises(ConfigError, match="mixes a placeholder"):
        create_app(settings_of(project, {"NEWSLETTER_SECRET": SECRET}))
    cfg.write_text(text.replace("[newsletter]\n", '[newsletter]\nsendgrid_webhook_key = "MFkw"\n'))
    with pytest.raises(ConfigError, match="secrets are read only from the environment"):
        settings_of(project, {})
    cfg.write_text(text.replace("{token}", "{token}&x={list}"))
    with pytest.raises(ConfigError, match=r"unknown placeholder \{list\}"):
        settings_of(project, {})


# --- SendGrid's event webhook ----------------------------------------------------------------------

class SendGridSigner:
    """Signs like SendGrid: ECDSA P-256 / SHA-256 over timestamp + raw body, base64 DER; the public
    key as SendGrid shows it (base64 DER, no PEM lines)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str = "1617184800") -> dict[str, str]:
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def event(event_id: str, kind: str, email: str, **extra: object) -> dict[str, object]:
    return {"sg_event_id": event_id, "event": kind, "email": email, "timestamp": 1617184800,
            "sg_message_id": "m." + event_id, "category": ["newsletter", "2021-03"], "issue": "2021-03", **extra}


def test_signed_deliveries_only(project: Project, database_url: str | None) -> None:
    signer = SendGridSigner()
    env = {"NEWSLETTER_SECRET": SECRET, "NEWSLETTER_SENDGRID_WEBHOOK_KEY": signer.public}
    if database_url:
        env["NEWSLETTER_DATABASE_URL"] = database_url
    body = json.dumps([event("e1", "delivered", "a@example.com")]).encode()
    with service(project, env) as (client, settings):
        def post(content: bytes, headers: dict[str, str]) -> httpx.Response:
            return client.post("/webhooks/sendgrid", content=content, headers=headers)

        assert post(body, {"Content-Type": "application/json"}).status_code == 401  # unsigned
        tampered = body.replace(b"a@example.com", b"z@example.com")
        assert post(tampered, signer.headers(body)).status_code == 403  # signed, then changed
        replayed = {**signer.headers(body), "X-Twilio-Email-Event-Webhook-Timestamp": "1617184801"}
        assert post(body, replayed).status_code == 403  # the timestamp is signed too
        assert post(body, SendGridSigner().headers(body)).status_code == 403  # someone else's key
        garbage = {**signer.headers(body), "X-Twilio-Email-Event-Webhook-Signature": "not base64!"}
        assert post(body, garbage).status_code == 403
        with settings.open_store() as store:
            assert store.events.counts("2021-03") == {}  # nothing refused was kept
        r = post(body, signer.headers(body))
        assert r.status_code == 200 and r.json() == {"received": 1, "new": 1, "repeats": 0, "skipped": 0}
        with settings.open_store() as store:
            assert store.events.counts("2021-03") == {"delivered": 1}
    # a pasted PEM block works as well as the bare key
    pem = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with service(project, {**env, "NEWSLETTER_SENDGRID_WEBHOOK_KEY": pem}) as (client, _):
        assert client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body)).status_code == 200


def test_events_become_suppressions_and_counts_and_the_next_send_skips_those_readers(
        project: Project, env: dict[str, str]) -> None:
    readers = ["ok@example.com", "bounce@example.com", "blocked@example.com", "spam@example.com",
               "unsub@example.com", "group@example.com", "dropped@example.com", "open@example.com"]
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    project.write_list("email\n" + "\n".join(readers) + "\n")
    delivery = [
        event("d1", "delivered", "ok@example.com"), event("d2", "delivered", "open@example.com"),
        event("o1", "open", "open@example.com"), event("c1", "click", "open@example.com", url="https://x.org"),
        event("b1", "bounce", "Bounce@example.com", type="bounce", reason="550 5.1.1 no such user"),
        event("b2", "bounce", "blocked@example.com", type="blocked", reason="451 try later"),
        event("s1", "spamreport", "spam@example.com"),
        event("u1", "unsubscribe", "unsub@example.com"),
        event("g1", "group_unsubscribe", "group@example.com", asm_group_id=1),
        event("x1", "dropped", "dropped@example.com", reason="Bounced Address"),
        event("t1", "open", "preview@example.org", category=["newsletter", "2021-03", "test"]),  # a [TEST] copy
        {"event": "delivered", "email": "no-id@example.com"},  # malformed: skipped, the rest kept
        "not an object",
        event("o2", "open", "open@example.com", issue=None),  # the issue from its category
    ]
    with service(project, env) as (client, settings):
        r = client.post("/webhooks/sendgrid", json=delivery)
        assert r.json() == {"received": 14, "new": 12, "repeats": 0, "skipped": 2}
        r = client.post("/webhooks/sendgrid", json=delivery[:5])  # SendGrid delivers again
        assert r.json() == {"received": 5, "new": 0, "repeats": 5, "skipped": 0}
        with settings.open_store() as store:
            assert store.events.counts("2021-03") == {
                "delivered": 2, "open": 2, "click": 1, "bounce": 2, "spamreport": 1, "unsubscribe": 1,
                "group_unsubscribe": 1, "dropped": 1}
            assert store.suppressions.count() == {"bounced": 2, "complained": 1, "unsubscribed": 2}
            bounce = store.suppressions.get("bounce@example.com")
            assert bounce and bounce.source == "webhook" and bounce.issue == "2021-03"
            assert bounce.detail == "sendgrid bounce: 550 5.1.1 no such user"
            assert bounce.created_at == "2021-03-31T10:00:00+00:00"  # when it happened
    plan = Campaign(prepare(project.root / "issues" / "2021-03.yaml", settings), settings, "readers").plan()
    assert plan.recipients == 3  # ok, blocked (a block is not a dead address), open
    assert plan.report.suppressed == {"bounced": 2, "complained": 1, "unsubscribed": 2}
    r = run_cli("send", "issues/2021-03.yaml", "--list", "readers", cwd=project.root, env=env)
    assert re.search(r"suppressed\s+5\s+bounced 2, complained 1, unsubscribed 2", r.out), r.output


def test_bad_deliveries(project: Project) -> None:
    with service(project, {"NEWSLETTER_SECRET": SECRET}) as (client, _):
        assert client.post("/webhooks/sendgrid", content=b"[{oops").status_code == 400
        assert client.post("/webhooks/sendgrid", content=b'{"event": "open"}').status_code == 400
        assert client.post("/webhooks/sendgrid", content=b"\xff\xfe").status_code == 400
        assert client.get("/webhooks/sendgrid").status_code == 405
        assert client.post("/webhooks/sendgrid", json=[]).json()["received"] == 0
        # nested deeper than Python's stack: a 400, not a RecursionError's 500
        assert client.post("/webhooks/sendgrid", content=b"[" * 100_000 + b"]" * 100_000).status_code == 400
        assert client.post("/webhooks/sendgrid", content=b'[{"a":' * 50_000 + b"1" + b"}]" * 50_000).status_code == 400


def test_text_a_store_cannot_keep_does_not_poison_a_delivery(project: Project, env: dict[str, str]) -> None:
    """JSON can carry NUL (PostgreSQL refuses it) and lone surrogates (not UTF-8: neither store takes
    them). An event with one where it matters is skipped; elsewhere the character is replaced. The
    rest of the delivery is kept, instead of a 503 that SendGrid would retry until it gives up."""
    body = (b'[{"sg_event_id": "n1", "event": "bounce", "email": "nul\\u0000@example.com"},'
            b' {"sg_event_id": "n2\\ud800", "event": "bounce", "email": "lone@example.com"},'
            b' {"sg_event_id": "n3", "event": "bounce", "email": "real@example.com", "issue": "2021-03\\u0000",'
            b'  "reason": "550 \\u0000 \\udc00 no such user"},'
            b' {"sg_event_id": "n4", "event": "open", "email": "o@example.com", "category": ["x\\ud800"]}]')
    with service(project, env) as (client, settings):
        r = client.post("/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.json() == {"received": 4, "new": 2, "repeats": 0, "skipped": 2}
        with settings.open_store() as store:
            real = store.suppressions.get("real@example.com")
            assert real and real.issue == "2021-03\ufffd" and real.detail == "sendgrid bounce: 550 \ufffd \ufffd no such user"
            assert store.suppressions.count() == {"bounced": 1}


# --- limits, health, logs, the archive -------------------------------------------------------------

def test_oversized_requests_are_refused(project: Project) -> None:
    with service(project, {"NEWSLETTER_SECRET": SECRET}) as (client, settings):
        r = client.post(link(), content=b"List-Unsubscribe=One-Click&" + b"x" * 70_000)
        assert r.status_code == 413
        r = client.post("/webhooks/sendgrid", content=b"[" + b" " * (5 * 1024 * 1024) + b"]")
        assert r.status_code == 413
        # no Content-Length (chunked): refused once the limit is passed
        chunks = (b"x" * 8192 for _ in range(10))
        assert client.post(link(), content=chunks).status_code == 413
        assert client.post("/webhooks/sendgrid", content=b"[]" + b" " * 100_000).status_code == 200  # under 5 MB
        assert suppressions(settings) == []


def test_a_client_that_hangs_up_mid_body_gets_a_400_not_a_traceback(project: Project,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A POST whose client goes away before the end of its body (a scanner, a dropped connection):
    nothing is recorded, and the log has an access line, not 'Exception in ASGI application'."""
    import asyncio

    caplog.set_level(logging.INFO)
    app = create_app(settings_of(project, {"NEWSLETTER_SECRET": SECRET}))

    async def post_and_hang_up(target: str) -> list[dict[str, object]]:
        path, _, query = target.partition("?")
        incoming = [{"type": "http.request", "body": b"List-Unsub", "more_body": True}]
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "root_path": "", "headers": [(b"host", b"example.org"), (b"content-length", b"26")],
                 "client": ("203.0.113.7", 4000), "server": ("127.0.0.1", 8000)}
        await app(scope, receive, send)
        return sent

    for target in (link(), "/webhooks/sendgrid"):
        sent = asyncio.run(post_and_hang_up(target))
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert '"POST /webhooks/sendgrid" 400' in caplog.text
    assert not (settings_of(project, {}).state_dir / "sends.sqlite3").exists()  # nothing recorded


def test_health_check(project: Project, env: dict[str, str]) -> None:
    with service(project, env) as (client, _):
        assert client.get("/healthz").json() == {"status": "ok"}


def test_a_store_that_does_not_answer_is_a_503_not_a_lost_request(project: Project) -> None:
    from smtp_server import free_port

    down = f"postgresql://nobody@127.0.0.1:{free_port()}/none"  # nothing listens there
    with service(project, {"NEWSLETTER_SECRET": SECRET, "NEWSLETTER_DATABASE_URL": down}) as (client, _):
        r = client.post(link(), **ONE_CLICK)
        assert r.status_code == 503 and r.headers["retry-after"] == "60" and "try again" in r.text
        assert client.post("/webhooks/sendgrid", json=[event("e1", "bounce", "a@example.com")]).status_code == 503
        assert client.get("/healthz").status_code == 503


def test_a_send_holding_the_sqlite_write_lock_delays_an_unsubscribe_but_does_not_fail_it(project: Project) -> None:
    import sqlite3
    import threading

    with service(project, {"NEWSLETTER_SECRET": SECRET}) as (client, settings):
        assert client.get("/healthz").status_code == 200  # the store exists
        other = sqlite3.connect(settings.state_dir / "sends.sqlite3", isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # as a send recording a batch does
        release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
        release.start()
        started = time.monotonic()
        assert client.post(link(), **ONE_CLICK).status_code == 200  # waited on a worker thread
        assert time.monotonic() - started >= 0.4
        release.join()
        other.close()
        assert suppressions(settings) == [(ANN, "unsubscribed", "one-click", None)]


def test_suppressions_add_is_one_statement(tmp_path: Path, database_url: str | None) -> None:
    """The one-click path runs Suppressions.add on its own, without BEGIN/COMMIT around it (one
    round trip): that is atomic only while add is a single statement."""
    from newsletter.store import open_store

    with open_store(tmp_path, database_url) as store:
        statements: list[str] = []
        execute = store.db.execute
        store.db.execute = lambda sql, params=(): statements.append(sql) or execute(sql, params)  # type: ignore[method-assign]
        assert store.suppressions.add(ANN, "unsubscribed", "one-click")
        assert not store.suppressions.add(ANN, "bounced", "webhook")
        assert len(statements) == 2 and all(s.lstrip().startswith("INSERT") for s in statements), statements
        assert store.suppressions.reasons([key_of(ANN)]) == {key_of(ANN): "unsubscribed"}


def test_no_token_address_or_key_in_the_logs(project: Project, caplog: pytest.LogCaptureFixture) -> None:
    signer = SendGridSigner()
    caplog.set_level(logging.DEBUG)
    env = {"NEWSLETTER_SECRET": SECRET, "NEWSLETTER_SECRET_PREVIOUS": OLD_SECRET,
           "NEWSLETTER_SENDGRID_WEBHOOK_KEY": signer.public}
    body = json.dumps([event("e1", "bounce", "bounced@example.com"), {"sg_event_id": "e2"}]).encode()
    with service(project, env) as (client, _):
        client.get(link(issue="2021-03"))
        client.post(link(issue="2021-03"), **ONE_CLICK)
        client.post(link(token=BAD_TOKENS["forged"]), **ONE_CLICK)
        client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))
        client.post("/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"})
    # what the service logged (the test's own HTTP client logs its URLs: not the service's log)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("newsletter", "uvicorn")))
    assert 'POST /unsubscribe?email=…&token=…&issue=…" 200' in text  # the access line, redacted
    assert "unsubscribed (one-click, issue 2021-03)" in text and "event 2 of 2 skipped (no event type)" in text
    for secret in (unsubscribe_token(SECRET, ANN), BAD_TOKENS["forged"], ANN, quote(ANN), "bounced@example.com",
                   SECRET, OLD_SECRET, signer.public, signer.headers(body)["X-Twilio-Email-Event-Webhook-Signature"]):
        assert secret not in text
    # uvicorn's own access log, if someone leaves it on, prints the path without the query
    redact_uvicorn_access_log()
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "POST", link(), "1.1", 200), None)
    logging.getLogger("uvicorn.access").filter(record)
    assert record.getMessage() == '1.2.3.4:5 - "POST /unsubscribe?email=…&token=… HTTP/1.1" 200'


FORGED = "\n2026-01-01 00:00:00,000 INFO newsletter.web: unsubscribed (one-click)\x1b[31m\x9b2J\u2028"


def test_nothing_a_client_sends_can_forge_a_log_line(project: Project, caplog: pytest.LogCaptureFixture) -> None:
    """A path is logged percent-decoded, and an event id or an issue as sent: a line break in one
    would start a line of the attacker's making, an escape sequence would drive the terminal."""
    caplog.set_level(logging.INFO)
    with service(project, {"NEWSLETTER_SECRET": SECRET}) as (client, settings):
        client.get("/x" + quote(FORGED) + "y" * 5000)
        client.get("/healthz?" + quote(FORGED, safe="") + "=1")
        client.post(link(issue="2021-03" + FORGED.replace("\n", "")), **ONE_CLICK)
        client.post("/webhooks/sendgrid", json=[{"sg_event_id": "e" + FORGED}])
        # an issue with a control character (C1 and U+2028 too) is not an issue's name: left out
        assert suppressions(settings) == [(ANN, "unsubscribed", "one-click", None)]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("newsletter")]
    assert len(lines) >= 6
    for line in lines:
        assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", line), line
        assert len(line) < 1000, line
    text = "\n".join(lines)
    assert "/x\\n2026-01-01" in text and "\\x1b[31m\\x9b2J\\u2028" in text and "…" in text
    assert "sg_event_id e\\n2026-01-01" in text


def test_the_archive_is_served_under_the_view_online_path(project: Project) -> None:
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace(
        "[newsletter]\n", '[newsletter]\nview_online_url = "https://example.org/issues/{issue}.html"\n'))
    site = project.root / "site"
    site.mkdir()
    (site / "2021-03.html").write_text("<h1>March</h1>")
    (site / "index.html").write_text("<h1>All issues</h1>")
    with service(project, {"NEWSLETTER_SECRET": SECRET}) as (client, _):
        assert client.get("/issues/2021-03.html").text == "<h1>March</h1>"
        assert client.get("/issues/").text == "<h1>All issues</h1>"
        assert client.get("/issues/nope.html").status_code == 404
        assert client.get("/healthz").status_code == 200  # the service's own routes come first
    shutil.rmtree(site)
    with service(project, {"NEWSLETTER_SECRET": SECRET}) as (client, _):
        assert client.get("/issues/2021-03.html").status_code == 404  # no archive built: nothing mounted


def test_an_archive_url_with_an_escaped_path_is_served_there(project: Project) -> None:
    """archive_url = ".../my%20issues/" (a space must be written so): the route matches the path the
    request asks for, decoded, as the pages' links do."""
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace(
        "[newsletter]\n", '[newsletter]\narchive_url = "https://example.org/my%20issues/"\n'))
    (project.root / "site").mkdir()
    (project.root / "site" / "2021-03.html").write_text("<h1>March</h1>")
    with service(project, {"NEWSLETTER_SECRET": SECRET}) as (client, _):
        assert client.get("/my%20issues/2021-03.html").text == "<h1>March</h1>"
    cfg.write_text(cfg.read_text().replace("my%20issues", "my issues"))
    r = run_cli("archive", cwd=project.root)
    assert r.code == 1 and "archive_url: has a space in it; write it as %20" in r.err


def test_app_from_env_reads_the_project_like_the_command_line(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `uvicorn --factory newsletter.web:app_from_env` (or gunicorn) runs."""
    from newsletter.web import app_from_env

    for var in [v for v in os.environ if v.startswith(("NEWSLETTER_", "SENDGRID_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    (project.root / "issues").mkdir()
    monkeypatch.chdir(project.root / "issues")  # found upward, as the command line finds it
    with TestClient(app_from_env(), base_url="https://example.org") as client:
        assert client.post(link(), **ONE_CLICK).status_code == 200
    monkeypatch.chdir(project.root.parent)
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(project.root / "newsletter.toml"))
    with TestClient(app_from_env(), base_url="https://example.org") as client:
        assert client.get(link()).status_code == 200
    assert suppressions(settings_of(project, {"NEWSLETTER_SECRET": SECRET})) == [(ANN, "unsubscribed", "one-click", None)]


# --- a real server -----------------------------------------------------------------------------------

def test_end_to_end_the_link_in_a_real_message_unsubscribes_through_a_real_server(
        project: Project, env: dict[str, str]) -> None:
    """The sample issue, a real personalized message, its List-Unsubscribe header POSTed as a mail
    client does it (RFC 8058) to `newsletter serve` listening on 127.0.0.1; then the plan skips her."""
    (project.root / "issues").mkdir()
    shutil.copy(EXAMPLE, project.root / "issues" / "2021-03.yaml")
    project.write_list("email,name\nanna@example.com,Anna\nboris@example.org,Boris\n")
    settings = settings_of(project, env)
    campaign = Campaign(prepare(project.root / "issues" / "2021-03.yaml", settings), settings, "readers")
    assert campaign.plan().recipients == 2
    anna = next(iter(campaign.subscribers()))
    personalizer = campaign.personalizer()
    message = build_message(personalizer.envelope(), personalizer(anna))
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.search(r"<(https://[^>]+)>", message["List-Unsubscribe"]).group(1)
    assert url in message.get_body(("plain",)).get_content()  # the footer's link is the header's
    server = ServiceProcess(project.root, child_env(env)).wait_ready()
    try:
        target = urlsplit(url)
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as http:
            page = http.get(f"{target.path}?{target.query}")
            assert page.status_code == 200 and "Stop sending" in page.text
            r = http.post(f"{target.path}?{target.query}", content=ONE_CLICK_BODY,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code == 200 and "You are unsubscribed" in r.text
            assert http.post(f"{target.path}?{target.query}", content=ONE_CLICK_BODY).status_code == 200
            # too large, declared up front: refused at once, the body is never read
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
                raw.sendall(b"POST /webhooks/sendgrid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100000000\r\n\r\n[")
                started = time.monotonic()
                assert raw.recv(200).startswith(b"HTTP/1.1 413 ") and time.monotonic() - started < 2
    finally:
        assert server.stop() == 0  # Ctrl-C: a clean stop
    log = server.log()
    token = url.rsplit("token=", 1)[1]
    assert "Uvicorn running on http://127.0.0.1" in log and '"POST /unsubscribe?email=…&token=…&issue=…" 200' in log
    assert token not in log and "anna@example.com" not in log
    plan = campaign.plan()
    assert plan.recipients == 1 and plan.report.suppressed == {"unsubscribed": 1}
    assert suppressions(settings) == [("anna@example.com", "unsubscribed", "one-click", "2021-03")]


def test_serve_refuses_to_start_without_the_signing_key(project: Project) -> None:
    r = run_cli("serve", "--port", "1", cwd=project.root)
    assert r.code == 1 and "NEWSLETTER_SECRET is not set" in r.err


KILL_ROUNDS = 3  # bench/serve_bench.py runs 20 per store


def test_kill_9_during_a_storm_loses_no_acknowledged_request(project: Project, env: dict[str, str]) -> None:
    """One-click POSTs and webhook deliveries from 6 clients; the service is killed (SIGKILL) mid-storm.
    Everything that was answered 2xx must be in the store afterwards."""
    total = 0
    for n in range(KILL_ROUNDS):
        requests, lost, _ = lost_after_kill(project.root, child_env(env), SECRET, f"k{n}", run_for=0.4 + 0.2 * n)
        assert lost == 0, f"round {n}: {lost} acknowledged requests lost"
        total += requests
    assert total > 20  # the storm was real
