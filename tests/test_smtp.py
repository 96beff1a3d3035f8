"""SMTPProvider against a real SMTP server (aiosmtpd) running in the test process."""

from __future__ import annotations

import base64
import random
import shutil
import smtplib
import ssl
import subprocess
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from newsletter.providers.smtp import SMTPSettings
from newsletter.errors import ConfigError
from newsletter.message import Envelope, Personalization
from newsletter.providers.smtp.client import SMTPProvider
from newsletter.scrub import scrub
from smtp_server import Recorder, free_port

FROM = "news@example.com"
ENVELOPE = Envelope(
    issue_id="2021-03",
    from_email=FROM,
    from_name="The Newsletter",
    reply_to=None,
    subject="Привет NLMF1T",
    html="<p>Hi NLMF1H</p>",
    text="Hi NLMF1T",
    slots=2,
)
NAMES = ["Tom & <Jerry>", "Ann", "Bob", "Cleo", "Dan"]


def person(i: int, name: str | None = None) -> Personalization:
    name = NAMES[i % len(NAMES)] if name is None else name
    url = f"https://u/x{i}"
    return Personalization(
        email=f"r{i}@example.org",
        name=name,
        raw=(url, name),
        escaped=(url, name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")),
        headers={
            "List-Unsubscribe": f"<{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def batch(n: int, start: int = 0) -> list[Personalization]:
    return [person(i) for i in range(start, start + n)]


@pytest.fixture(autouse=True, params=[True, False], ids=["pipelined", "in-turn"])
def pipelining(request, monkeypatch) -> bool:
    """Every test twice: with the server offering PIPELINING (MAIL, RCPT, DATA in one write), and
    without it (each command waits for its reply)."""
    monkeypatch.setattr(Recorder, "pipelining", request.param)
    return request.param


@pytest.fixture
def provider():
    made: list[SMTPProvider] = []

    def make(port: int, **kwargs: object) -> SMTPProvider:
        p = SMTPProvider(SMTPSettings(**{"host": "127.0.0.1", "port": port, "timeout": 5, **kwargs}))
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_five_messages_over_one_connection(serve, provider):
    handler = Recorder()
    smtp = provider(serve(handler))
    first = smtp.send(ENVELOPE, batch(3))
    second = smtp.send(ENVELOPE, batch(2, start=3))  # a new batch reuses the connection
    assert (first.failed, first.retry, second.failed, second.retry) == ({}, {}, {}, {})
    assert len(first.sent) + len(second.sent) == 5
    assert smtp.connections == 1
    assert handler.sessions == 1
    expected = [(FROM, [f"r{i}@example.org"]) for i in range(5)]
    assert [(m[0], m[1]) for m in handler.messages] == expected


def test_commands_go_in_one_write_when_the_server_offers_pipelining(serve, provider, pipelining):
    handler = Recorder(refuse_rcpt={"r1@example.org": "550 5.1.1 No such user"})
    smtp = provider(serve(handler))
    result = smtp.send(ENVELOPE, batch(4))
    assert set(result.sent) == {"r0@example.org", "r2@example.org", "r3@example.org"}
    assert set(result.failed) == {"r1@example.org"} and "550 5.1.1 No such user" in result.failed["r1@example.org"]
    assert handler.pipelined_mails == (4 if pipelining else 0)
    assert smtp.connections == 1  # the refusal's DATA reply was read: the dialogue stays in step


def test_addresses_are_quoted_as_smtplib_quotes_them():
    from newsletter.providers.smtp.client import _quote

    rng = random.Random(4)
    atext, odd = "abcXYZ019.!#$%&'*+/=?^_`{|}~-", "\"()<>,;: []ä@\\"
    for _ in range(3000):
        local, domain = ("".join(rng.choice(chars + (odd if rng.random() < 0.2 else ""))
                                 for _ in range(rng.randint(0, 12))) for chars in (atext, "abc019-.."))
        address = f"{local}@{domain}" if rng.random() < 0.9 else local
        assert _quote(address) == smtplib.quoteaddr(address), address
    assert _quote("reader.1+tag@mail.example.org") == "<reader.1+tag@mail.example.org>"


def test_data_accepted_after_a_refused_recipient_is_never_answered_with_a_message(serve, provider):
    # a server that wrongly says 354 to DATA when no recipient was accepted: whatever the client
    # sent now would be a message; it hangs up instead, and the next reader gets a fresh connection
    handler = Recorder(refuse_rcpt={"r1@example.org": "550 5.1.1 No such user"}, data_without_rcpt=True)
    smtp = provider(serve(handler))
    result = smtp.send(ENVELOPE, batch(3))
    assert set(result.sent) == {"r0@example.org", "r2@example.org"} and set(result.failed) == {"r1@example.org"}
    assert [m[1] for m in handler.messages] == [["r0@example.org"], ["r2@example.org"]]
    assert smtp.connections == (2 if Recorder.pipelining else 1)  # in turn, DATA is never sent


def test_each_message_is_complete_and_personalized(serve, provider):
    handler = Recorder()
    smtp = provider(serve(handler))
    result = smtp.send(ENVELOPE, batch(5))
    assert len(handler.messages) == 5
    for i, (_, rcpts, msg, _) in enumerate(handler.messages):
        name = NAMES[i]
        assert msg.get_content_type() == "multipart/alternative"
        text, html = msg.iter_parts()
        assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
        assert msg["Message-ID"] == result.sent[rcpts[0]]
        assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
        assert msg["List-Unsubscribe"] == f"<https://u/x{i}>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        (to,) = msg["To"].addresses
        assert (to.addr_spec, to.display_name) == (f"r{i}@example.org", name)
        assert msg["Subject"] == f"Привет {name}"
        assert text.get_content().strip() == f"Hi {name}"
        assert html.get_content().strip() == f"<p>Hi {person(i).escaped[1]}</p>"
    tom_text, tom_html = handler.messages[0][2].iter_parts()
    assert "Tom &amp; &lt;Jerry&gt;" in tom_html.get_content()
    assert "Tom & <Jerry>" in tom_text.get_content()
    assert len({m[2]["Message-ID"] for m in handler.messages}) == 5


def test_refused_recipients_fail_or_wait(serve, provider):
    handler = Recorder(
        refuse_rcpt={
            "r1@example.org": "550 5.1.1 No such user",
            "r2@example.org": "451 4.7.1 Greylisted, try again later",
        },
        refuse_data={"r3@example.org": "554 5.7.1 Message rejected as spam"},
    )
    smtp = provider(serve(handler))
    result = smtp.send(ENVELOPE, batch(5))
    assert set(result.sent) == {"r0@example.org", "r4@example.org"}
    assert set(result.failed) == {"r1@example.org", "r3@example.org"}
    assert "550 5.1.1 No such user" in result.failed["r1@example.org"]
    assert "554 5.7.1 Message rejected as spam" in result.failed["r3@example.org"]
    assert set(result.retry) == {"r2@example.org"}
    assert "451 4.7.1 Greylisted" in result.retry["r2@example.org"]
    assert [m[1] for m in handler.messages] == [["r0@example.org"], ["r4@example.org"]]
    assert smtp.connections == 1  # a refusal does not cost the connection


def test_421_leaves_the_rest_for_later(serve, provider):
    handler = Recorder(refuse_rcpt={"r1@example.org": "421 4.3.2 Shutting down"})
    port = serve(handler)
    smtp = provider(port)
    result = smtp.send(ENVELOPE, batch(4))
    assert set(result.sent) == {"r0@example.org"}
    assert set(result.retry) == {"r1@example.org", "r2@example.org", "r3@example.org"}
    assert "421" in result.retry["r1@example.org"]
    assert smtp.connections == 1  # no hammering a server that said it is closing
    handler.refuse_rcpt.clear()
    later = smtp.send(ENVELOPE, batch(3, start=1))
    assert set(later.sent) == {f"r{i}@example.org" for i in (1, 2, 3)}
    assert smtp.connections == 2


def test_dropped_connection_mid_batch_reconnects_without_duplicates(serve, provider):
    handler = Recorder(drop_at_mail={3})  # hang up when the third message starts
    smtp = provider(serve(handler))
    result = smtp.send(ENVELOPE, batch(5))
    assert set(result.sent) == {f"r{i}@example.org" for i in range(5)}
    assert (result.failed, result.retry) == ({}, {})
    assert [m[1] for m in handler.messages] == [[f"r{i}@example.org"] for i in range(5)]
    assert sorted(m[2]["Message-ID"] for m in handler.messages) == sorted(result.sent.values())
    assert smtp.connections == 2
    assert handler.sessions == 2


def test_dropped_before_the_message_went_out_is_retried_at_once(serve, provider):
    handler = Recorder(drop_at_data_command={2})  # hang up on the second DATA command, before 354
    smtp = provider(serve(handler))
    result = smtp.send(ENVELOPE, batch(3))
    assert set(result.sent) == {f"r{i}@example.org" for i in range(3)} and not result.unknown
    assert handler.copies() == {f"r{i}@example.org": 1 for i in range(3)}
    assert smtp.connections == 2


def test_idle_connection_closed_by_server_between_batches(serve, provider):
    handler = Recorder()
    smtp = provider(serve(handler, timeout=0.3))  # the server's idle timeout
    assert len(smtp.send(ENVELOPE, batch(2)).sent) == 2
    time.sleep(0.8)  # the dispatcher is busy elsewhere; the server hangs up
    result = smtp.send(ENVELOPE, batch(2, start=2))
    assert set(result.sent) == {"r2@example.org", "r3@example.org"}
    assert len(handler.messages) == 4
    assert smtp.connections == 2


def test_server_that_keeps_dropping_gets_one_reconnect(serve, provider):
    handler = Recorder(drop_always=True)
    port = serve(handler)
    smtp = provider(port)
    result = smtp.send(ENVELOPE, batch(5))
    assert set(result.retry) == {f"r{i}@example.org" for i in range(5)}
    assert all(f"127.0.0.1:{port}" in why for why in result.retry.values())
    assert (result.sent, result.failed, handler.messages) == ({}, {}, [])
    assert smtp.connections == 2 and handler.mails == 2


# --- after the end of DATA: the server may have the message (RFC 1047) ---------------------------


def test_reply_lost_after_the_server_kept_the_message_is_unknown_not_retried(serve, provider):
    handler = Recorder(lose_reply_every=2)  # keeps the 2nd and 4th message, then hangs up
    port = serve(handler)
    smtp = provider(port)
    result = smtp.send(ENVELOPE, batch(5))
    assert set(result.unknown) == {"r1@example.org", "r3@example.org"} == set(handler.lost_replies)
    assert set(result.sent) == {"r0@example.org", "r2@example.org", "r4@example.org"}
    assert (result.failed, result.retry, result.unreachable) == ({}, {}, False)
    assert handler.copies() == {f"r{i}@example.org": 1 for i in range(5)}  # nobody twice
    # the reason names the message, so that the server's log can settle it
    ids = {rcpts[0]: msg["Message-ID"] for _, rcpts, msg, _ in handler.messages}
    why = result.unknown["r1@example.org"]
    assert f"127.0.0.1:{port}" in why and f"Message-ID {ids['r1@example.org']}" in why
    assert "not resent automatically" in why
    assert smtp.connections == 3 and handler.sessions == 3  # a fresh connection after each


def test_reply_later_than_the_timeout_is_unknown_with_one_copy(serve, provider):
    handler = Recorder(late_reply={"r1@example.org": 1.5})
    smtp = provider(serve(handler), timeout=0.5)
    result = smtp.send(ENVELOPE, batch(3))
    assert set(result.unknown) == {"r1@example.org"} and "timed out" in result.unknown["r1@example.org"]
    assert set(result.sent) == {"r0@example.org", "r2@example.org"} and not result.retry
    assert handler.copies() == {f"r{i}@example.org": 1 for i in range(3)}
    assert smtp.connections == 2  # r2 went over a fresh connection


def test_unreadable_reply_after_the_message_is_unknown(serve, provider):
    handler = Recorder(garbled_reply={"r0@example.org": "OK, got it"})
    smtp = provider(serve(handler))
    result = smtp.send(ENVELOPE, batch(2))
    assert set(result.unknown) == {"r0@example.org"} and set(result.sent) == {"r1@example.org"}
    assert "unreadable reply: got it" in result.unknown["r0@example.org"]
    assert handler.copies() == {"r0@example.org": 1, "r1@example.org": 1}
    assert smtp.connections == 2


def test_a_clear_refusal_after_the_message_is_sorted_as_before(serve, provider):
    handler = Recorder(refuse_data={"r0@example.org": "451 4.3.0 Queue full, try later",
                                    "r2@example.org": "421 4.3.2 Shutting down"})  # fmt: skip
    smtp = provider(serve(handler))
    result = smtp.send(ENVELOPE, batch(4))
    # a 4xx or 5xx reply means the server did not take it: safe to retry, no unknown
    assert set(result.sent) == {"r1@example.org"} and not result.unknown
    assert set(result.retry) == {"r0@example.org", "r2@example.org", "r3@example.org"}
    assert "451 4.3.0 Queue full" in result.retry["r0@example.org"] and result.unreachable
    assert [m[1] for m in handler.messages] == [["r1@example.org"]]


def test_server_down_everything_waits(provider):
    port = free_port()  # nothing listens here
    smtp = provider(port)
    result = smtp.send(ENVELOPE, batch(3))
    assert set(result.retry) == {f"r{i}@example.org" for i in range(3)}
    assert (result.sent, result.failed) == ({}, {})
    assert all(f"cannot connect to 127.0.0.1:{port}" in why for why in result.retry.values())
    assert smtp.connections == 0
    smtp.close()  # nothing to close: must not raise


# --- TLS and AUTH -------------------------------------------------------------------------------

USER, PASSWORD = "alice", "s3cret-Pa55"


def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls(certificate, monkeypatch) -> ssl.SSLContext:
    """Server-side context; the client trusts the certificate through SSL_CERT_FILE."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_starttls_with_login(serve, provider, tls):
    handler = Recorder()
    port = serve(handler, tls_context=tls, require_starttls=True, authenticator=authenticator,
                 auth_required=True)  # fmt: skip
    smtp = provider(port, security="starttls", username=USER, password=PASSWORD)
    result = smtp.send(ENVELOPE, batch(3))
    assert len(result.sent) == 3
    assert [m[3]["tls"] for m in handler.messages] == [True] * 3
    assert [m[3]["login"] for m in handler.messages] == [USER.encode()] * 3
    assert smtp.connections == 1 and handler.sessions == 1


def test_wrong_password_is_a_config_error_without_the_password(serve, provider, tls):
    port = serve(Recorder(), tls_context=tls, authenticator=authenticator, auth_required=True)
    smtp = provider(port, security="starttls", username=USER, password="wrong-Secret-42")
    with pytest.raises(ConfigError) as err:
        smtp.send(ENVELOPE, batch(1))
    message = str(err.value)
    assert "NEWSLETTER_SMTP_PASSWORD" in message and f"127.0.0.1:{port}" in message
    assert "wrong-Secret-42" not in message and "wrong-Secret-42" not in repr(err.value.__cause__)


def test_login_refused_on_reconnect_keeps_what_was_sent(serve, provider, tls):
    handler = Recorder(drop_at_mail={3})
    port = serve(handler, tls_context=tls, authenticator=authenticator, auth_required=True)
    smtp = provider(port, security="starttls", username=USER, password=PASSWORD)
    assert set(smtp.send(ENVELOPE, batch(1)).sent) == {"r0@example.org"}
    smtp.settings.password = "rotated-meanwhile"  # the next login will be refused
    result = smtp.send(ENVELOPE, batch(3, start=1))  # the connection drops at r2
    assert set(result.sent) == {"r1@example.org"}  # reported, so the ledger records it
    assert set(result.retry) == {"r2@example.org", "r3@example.org"}
    with pytest.raises(ConfigError, match="NEWSLETTER_SMTP_PASSWORD"):
        smtp.send(ENVELOPE, batch(1, start=2))


def test_the_password_never_shows_when_the_server_echoes_it(serve, provider):
    handler = Recorder(refuse_rcpt={"r0@example.org": f"550 5.7.1 relaying denied for {USER}:{PASSWORD}"},
                       garbled_reply={"r1@example.org": f"??? saw {PASSWORD}"})  # fmt: skip
    port = serve(handler, authenticator=authenticator, auth_require_tls=False)
    smtp = provider(port, username=USER, password=PASSWORD)
    result = smtp.send(ENVELOPE, batch(2))
    assert "550 5.7.1 relaying denied for alice:***" in result.failed["r0@example.org"]
    assert "saw ***" in result.unknown["r1@example.org"]
    assert PASSWORD not in repr(result)


def test_scrub_masks_every_secret_even_one_inside_another():
    assert scrub("pw abc, key abcdef", ["abc", None, "abcdef", ""]) == "pw ***, key ***"
    assert scrub("no secrets", []) == "no secrets"


def test_an_auth_failure_echoing_the_password_does_not_show_it(serve, provider):
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    encoded = base64.b64encode(PASSWORD.encode()).decode()

    def echo(server, session, envelope, mechanism, auth_data):  # noqa: ANN001
        return AuthResult(success=False, handled=False, message=(
            f"535 5.7.8 {mechanism} {auth_data.login.decode()}/{auth_data.password.decode()} "
            f"({plain} {encoded}) rejected"))  # fmt: skip

    port = serve(Recorder(), authenticator=echo, auth_require_tls=False)
    smtp = provider(port, username=USER, password=PASSWORD)
    with pytest.raises(ConfigError) as err:
        smtp.send(ENVELOPE, batch(1))
    message = str(err.value)
    assert "535 5.7.8" in message and "alice/***" in message and "(*** ***)" in message
    assert PASSWORD not in message and plain not in message and encoded not in message


def test_untrusted_certificate_is_a_config_error(serve, provider, tls, monkeypatch):
    port = serve(Recorder(), tls_context=tls)
    monkeypatch.delenv("SSL_CERT_FILE")
    smtp = provider(port, security="starttls")
    with pytest.raises(ConfigError, match="not trusted"):
        smtp.send(ENVELOPE, batch(1))


def test_starttls_not_offered_is_a_config_error(serve, provider):
    port = serve(Recorder())
    smtp = provider(port, security="starttls")
    with pytest.raises(ConfigError, match="STARTTLS"):
        smtp.send(ENVELOPE, batch(1))


def test_implicit_ssl_with_login(serve, provider, tls):
    handler = Recorder()
    # over implicit TLS aiosmtpd does not know the socket is encrypted: allow AUTH anyway
    port = serve(handler, ssl_context=tls, authenticator=authenticator, auth_require_tls=False)
    smtp = provider(port, security="ssl", username=USER, password=PASSWORD)
    result = smtp.send(ENVELOPE, batch(2))
    assert len(result.sent) == 2
    assert [m[3]["login"] for m in handler.messages] == [USER.encode()] * 2
    assert smtp.connections == 1 and handler.sessions == 1
