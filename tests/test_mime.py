"""The MIME message one reader receives: headers that survive the trip through a mail server."""

from __future__ import annotations

import dataclasses
import email
import random
import re
from email import policy
from email.header import decode_header, make_header
from urllib.parse import quote

import pytest

from newsletter.mime import POLICY, build_message, message_bytes, transfer_encoding
from newsletter.message import Envelope, Personalization

URL = "https://example.org/unsubscribe?email=anna%40example.com&token=N5z7GOICQQNxqxILaqY1cg"
HEADERS = {"List-Unsubscribe": f"<{URL}>, <mailto:unsubscribe@example.org?subject=unsubscribe%20anna%40example.com>",
           "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
WORDS = ["Нейродайджест:", "главное", "в", "машинном", "обучении", "за", "март", "2021", "—", "самообучение",
         "GAN", "трансформеры", "нейроны", "CLIP", "🎉", "&", "Émile", "x" * 30]


def roundtrip(subject: str, headers: dict[str, str] = HEADERS) -> email.message.EmailMessage:
    envelope = Envelope("2021-03", "digest@example.org", "Нейродайджест", None, subject, "<p>NLMF1H</p>", "NLMF1T", 2)
    p = Personalization("anna@example.com", "Анна Петрова", (URL, "Анна"), (URL, "Анна"), headers)
    raw = build_message(envelope, p).as_bytes()
    assert max(len(line) for line in raw.splitlines()) <= 998  # RFC 5322's hard limit
    return email.message_from_bytes(raw, policy=policy.default)


def test_long_non_ascii_subjects_arrive_with_every_space():
    # CPython's own folding loses the space between two encoded words in ~1 of 10 such subjects
    rng = random.Random(2021)
    for _ in range(500):
        subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))
        assert roundtrip(subject)["Subject"] == subject


def test_list_unsubscribe_is_never_encoded_and_keeps_its_urls():
    msg = roundtrip("Нейродайджест: главное в машинном обучении за март 2021")
    assert "=?" not in msg["List-Unsubscribe"]
    assert msg["List-Unsubscribe"] == HEADERS["List-Unsubscribe"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_ascii_subjects_and_names_are_untouched():
    subject = "The March digest:" + " long words" * 12
    assert roundtrip(subject)["Subject"] == subject
    msg = roundtrip("Hi")
    assert msg["To"].addresses[0].display_name == "Анна Петрова"
    text, html = msg.iter_parts()
    assert text.get_content().strip() == "Анна" and html.get_content().strip() == "<p>Анна</p>"


def test_bodies_travel_in_the_smaller_encoding():
    assert transfer_encoding("Plain English prose with a café. " * 100) == "quoted-printable"
    assert transfer_encoding("<p>Привет, читатель! Самообучение в компьютерном зрении.</p>" * 100) == "base64"


# --- message_bytes: what SMTP sends, without the email package's serializer -------------------


NAMES = ["Анна Петрова", "Tom & <Jerry>", "Smith, John", "🎉 Party 🎉", "", "O'Brien", 'The "Boss"',
         "Émile Zola", "x" * 90, "Петрова, Анна", "Очень Длинное Имя Читателя С Отчеством Константиновна"]
HTML_BODIES = {
    "cyrillic": "<html><body>" + "<p class=\"x\">Привет, NLMF1H! Самообучение и трансформеры.</p>\n" * 300
                + "</body></html>",
    "english": "<p>Dear NLMF1H,</p>\n" + "<p>Plain English prose with a café and more words.</p>\n" * 200,
    "tricky": "<p>NLMF1H</p>\r\n-- \r\n.\r\nFrom here\rtrailing   \n\ttab\t\n" + "y" * 1500
              + "\n--===============8386004786356578373==\n",  # a boundary of the generator's shape
    "empty": "",
}
TEXT_BODIES = {
    "english": "Dear NLMF1T,\n\n" + "Plain English prose with a café, = signs and more words.\n" * 100
               + "-- \nUnsubscribe: NLMF0T\n",
    "cyrillic": "Здравствуйте, NLMF1T!\n" + "Самообучение в компьютерном зрении.\n" * 100 + "NLMF0T",
    "tricky": "NLMF1T\r\n.\r\n..\rFrom me\n \n\t\nz" + "=" * 1200 + "\n\n\n",
    "empty": "",
}
SUBJECTS = ["Привет, NLMF1T", "The March digest: " + " long words" * 12, "Hi NLMF1T", "🎉 & <b>", ""]


def _envelope(rng: random.Random) -> Envelope:
    subject = rng.choice([*SUBJECTS, " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))])
    return Envelope("2021-03", "digest@example.org", rng.choice(["Нейродайджест", "The Newsletter", "A, B & C"]),
                    rng.choice([None, "editor@example.org", "Редакция <editor@example.org>"]), subject,
                    rng.choice(list(HTML_BODIES.values())), rng.choice(list(TEXT_BODIES.values())), 2)


def _person(rng: random.Random, i: int, email: str | None = None) -> Personalization:
    name = rng.choice(NAMES)
    email = email or f"reader{i}@example.com"
    url = f"https://example.org/unsubscribe?email={quote(email)}&token=" + "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_") for _ in range(rng.choice([22, 120, 400])))
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    headers = rng.choice([{}, {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
                          {"List-Unsubscribe": f"<{url}>, <mailto:unsubscribe@example.org?subject=unsubscribe%20{i}>"}])
    return Personalization(email, name, (url, name), (url.replace("&", "&amp;"), escaped), headers)


def _reference(envelope: Envelope, p: Personalization, utf8: bool = False) -> bytes:
    """build_message's bytes as SMTP carries them."""
    return build_message(envelope, p).as_bytes(policy=POLICY.clone(linesep="\r\n", utf8=utf8))


def _normalized(raw: bytes) -> bytes:
    raw = re.sub(rb"(?m)^(Date|Message-ID): .*\r\n", rb"\1: X\r\n", raw)
    return re.sub(rb"={15}\d{19}==(\.\d+)?", b"BOUNDARY", raw)


def _assert_same(new: bytes, old: bytes) -> None:
    assert b"\r" not in new.replace(b"\r\n", b"") and b"\n" not in new.replace(b"\r\n", b"")  # CRLF only
    assert max(len(line) for line in new.split(b"\r\n")) <= 998
    a, b = (email.message_from_bytes(raw, policy=policy.default) for raw in (new, old))
    assert not a.defects and not b.defects
    skip = {"Date", "Message-ID", "Content-Type"}
    assert [(k, str(v)) for k, v in a.items() if k not in skip] == [(k, str(v)) for k, v in b.items() if k not in skip]
    assert a.get_content_type() == b.get_content_type() == "multipart/alternative"
    assert new.count(b"\r\n--" + a.get_boundary().encode()) == 3  # only the three delimiters
    for x, y in zip(a.iter_parts(), b.iter_parts(), strict=True):
        assert [(k, str(v)) for k, v in x.items()] == [(k, str(v)) for k, v in y.items()]
        assert x.get_content_charset() == y.get_content_charset() == "utf-8"
        assert x["Content-Transfer-Encoding"] == y["Content-Transfer-Encoding"]
        # a quoted-printable line break decodes to the line ending it travelled with
        assert x.get_content().replace("\r\n", "\n") == y.get_content().replace("\r\n", "\n")
        if old.endswith(b"\r\n"):  # both as SMTP carries them: the very same bytes
            assert x.get_payload(decode=True) == y.get_payload(decode=True)


def test_message_bytes_is_build_message():
    rng = random.Random(2024)
    seen = set()
    for i in range(150):
        envelope, p = _envelope(rng), _person(rng, i)
        new, message_id = message_bytes(envelope, p)
        _assert_same(new, build_message(envelope, p).as_bytes())
        old = _reference(envelope, p)
        _assert_same(new, old)
        parsed = email.message_from_bytes(new, policy=policy.default)
        assert parsed["Message-ID"] == message_id and parsed["Date"].datetime.tzinfo is not None
        assert parsed["Subject"] == envelope.fill(p)[0]
        if "List-Unsubscribe" in p.headers:
            assert parsed["List-Unsubscribe"] == p.headers["List-Unsubscribe"]
        ctes = (transfer_encoding(envelope.text), transfer_encoding(envelope.html))
        seen.update(ctes)
        if ctes == ("base64", "base64"):  # the C encoder gives the very same bytes
            assert _normalized(new) == _normalized(old)
        else:  # quoted-printable: the same header block; lines may break elsewhere
            assert _normalized(new).split(b"\r\n\r\n")[0] == _normalized(old).split(b"\r\n\r\n")[0]
    assert seen == {"base64", "quoted-printable"}


def test_lines_starting_with_from_arrive_intact():
    # smtplib.send_message flattened with mangle_from_=True (an mbox habit): a quoted-printable
    # line "From here" arrived as ">From here"
    envelope = Envelope("2021-03", "d@example.org", "D", None, "S", "<p>NLMF1H</p>\nFrom here on.\n",
                        "Hi\nFrom me, NLMF1T\n", 2)
    p = Personalization("a@example.com", "Ann", ("u", "Ann"), ("u", "Ann"), {})
    text, html = email.message_from_bytes(message_bytes(envelope, p)[0], policy=policy.default).iter_parts()
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert text.get_content() == "Hi\r\nFrom me, Ann\r\n"
    assert html.get_content() == "<p>Ann</p>\r\nFrom here on.\r\n"


def test_message_bytes_for_smtputf8():
    # send_message serialized for a non-ASCII address with utf8=True: headers travel as UTF-8
    rng = random.Random(8)
    for i in range(30):
        address = f"anna{i}@пример.рф" if i % 2 else f"анна{i}@example.com"
        envelope, p = _envelope(rng), _person(rng, i, email=address)
        if not address.split("@")[0].isascii():  # with a name, Address() refuses such a local part
            p = dataclasses.replace(p, name="")
        new, _ = message_bytes(envelope, p, utf8=True)
        old = _reference(envelope, p, utf8=True)
        assert address.encode() in new
        assert _normalized(new).split(b"\r\n\r\n")[0] == _normalized(old).split(b"\r\n\r\n")[0]
        _assert_same(new, old)


def test_each_envelope_gets_its_own_skeleton():
    p = Personalization("a@example.com", "Ann", ("u", "Ann"), ("u", "Ann"), {})
    for i in range(12):  # more envelopes than the cache keeps, alternating the encodings
        html = "<p>Привет NLMF1H</p>" * 50 if i % 2 else "<p>Hello NLMF1H</p>"
        envelope = Envelope(f"2021-{i:02}", "d@example.org", "D", None, f"S{i}", html, f"T{i} NLMF1T", 2)
        for _ in range(2):
            _assert_same(message_bytes(envelope, p)[0], _reference(envelope, p))


def test_a_line_break_in_a_value_is_refused_like_build_message():
    envelope = Envelope("2021-03", "d@example.org", "D", None, "Hi NLMF1T", "<p>NLMF1H</p>", "NLMF1T", 2)
    p = Personalization("a@example.com", "Ann", ("u", "Ann\r\nBcc: x@example.com"), ("u", "Ann"), {})
    for build in (build_message, message_bytes):
        with pytest.raises(ValueError):
            build(envelope, p)


def test_non_ascii_addresses_over_smtp(serve):
    # send_message's SMTPUTF8 handling, now in SMTPProvider: used when offered, a failure if not
    from newsletter.providers.smtp import SMTPSettings
    from newsletter.providers.smtp.client import SMTPProvider
    from smtp_server import Recorder

    envelope = Envelope("2021-03", "d@example.org", "D", None, "Привет NLMF1T", "<p>NLMF1H</p>", "NLMF1T", 2)
    anna = Personalization("анна@пример.рф", "", ("u", "Анна"), ("u", "Анна"), {})
    handler = Recorder()
    for utf8, expected in ((True, "sent"), (False, "failed")):
        smtp = SMTPProvider(SMTPSettings(host="127.0.0.1", port=serve(handler, enable_SMTPUTF8=utf8), timeout=5))
        try:
            result = smtp.send(envelope, [anna])
        finally:
            smtp.close()
        assert list(getattr(result, expected)) == ["анна@пример.рф"]
    assert "SMTPUTF8" in result.failed["анна@пример.рф"]
    ((_, rcpts, msg, _),) = handler.messages
    # the recorder parses without utf8: raw UTF-8 header bytes come back surrogate-escaped
    assert rcpts == ["анна@пример.рф"] and str(msg["To"]).encode("utf-8", "surrogateescape").decode() == rcpts[0]
    assert msg["Subject"] == "Привет Анна" and msg.get_body(("plain",)).get_content().strip() == "Анна"


@pytest.mark.parametrize("subject", ["Hi NLMF1T", "Привет, NLMF1T — март"])
@pytest.mark.parametrize("name", ["=?utf-8?q?Eve=0D=0ABcc:_victim@example.net?=",
                                  "=?utf-8?b?RXZlDQpCY2M6IHZpY3RpbUBleGFtcGxlLm5ldA==?=",
                                  "Ann =?utf-8?q?Ma=C3=AFa?= " + "Long " * 20])
def test_an_encoded_word_in_a_readers_value_is_text_not_a_line_break(subject, name):
    # the email package decodes RFC 2047 syntax in any value it is given: a name written as an
    # encoded word of "Eve\r\nBcc: ..." came out as a second header line in To: and Subject:
    from newsletter.providers.smtp.data import DataTemplate

    envelope = Envelope("2021-03", "d@example.org", "D", None, subject, "<p>NLMF1H</p>", "NLMF1T", 2)
    p = Personalization("eve@example.com", name, ("u", name), ("u", name), {})
    for raw in (build_message(envelope, p).as_bytes(), message_bytes(envelope, p)[0],
                DataTemplate(envelope).data(p)[0]):
        head = raw.split(b"\n\n" if b"\r\n" not in raw else b"\r\n\r\n")[0]
        assert not re.search(rb"(?im)^bcc:", head), head
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert not msg.defects and msg["Subject"] == envelope.fill(p)[0]
        # RFC 2047's decoding (the modern parser adds a space between encoded words in a phrase)
        to = email.message_from_bytes(raw, policy=policy.compat32)["To"]
        display, _, address = to.rpartition(" <")
        assert str(make_header(decode_header(display))) == name and address == "eve@example.com>"


# --- List-Id (RFC 2919) -------------------------------------------------------------------------


def _list_id_messages(name: str, list_id: str = "digest.example.org") -> list[bytes]:
    """Two readers' messages from each path that builds one (the .eml files, message_bytes and the
    SMTP template) for a newsletter called `name`."""
    from newsletter.personalize import list_id_header
    from newsletter.providers.smtp.data import DataTemplate

    envelope = Envelope("2021-03", "digest@example.org", "D", None, "Hi NLMF1T", "<p>NLMF1H</p>", "NLMF1T", 2,
                        list_id=list_id_header(name, list_id))
    readers = [Personalization("anna@example.com", "Анна", (URL, "Анна"), (URL, "Анна"), HEADERS),
               Personalization("bob@example.org", "", ("u", "Bob"), ("u", "Bob"), {})]
    return [raw for p in readers for raw in (build_message(envelope, p).as_bytes(), message_bytes(envelope, p)[0],
                                             DataTemplate(envelope).data(p)[0])]


def _raw_list_id(raw: bytes) -> bytes:
    """The List-Id header's bytes, folding included, with LF line ends."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n")[0]
    return re.search(rb"(?ms)^List-Id: .*?\n(?=\S)", head).group()


@pytest.mark.parametrize("name", ["Нейродайджест", "Weekly AI digest", "Dev, \"News\" & <Co> \\ (1)", "",
                                  "Очень длинное название рассылки про нейросети и машинное обучение 🎉",
                                  "x" * 200, "=?utf-8?q?Eve=0D=0ABcc:_victim@example.net?=",
                                  "=?utf-8?b?RXZlDQpCY2M6IHZpY3RpbUBleGFtcGxlLm5ldA==?="])
def test_list_id_is_the_same_bytes_in_every_message_and_decodes_to_the_name(name):
    raws = _list_id_messages(name)
    headers = {_raw_list_id(raw) for raw in raws}
    assert len(headers) == 1  # every reader, every path: the very same bytes
    (header,) = headers
    assert header.isascii() and all(len(line) <= 78 for line in header.splitlines())
    for raw in raws:
        head = raw.split(b"\n\n" if b"\r\n" not in raw else b"\r\n\r\n")[0]
        assert not re.search(rb"(?im)^bcc:", head), head  # an encoded word is text, not a line break
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert not msg.defects
        # RFC 2047 decoding of the phrase (compat32: the words as they are), then RFC 5322 unquoting
        value = email.message_from_bytes(raw, policy=policy.compat32)["List-Id"]
        phrase, _, list_id = str(value).rpartition("<")
        assert list_id == "digest.example.org>"
        decoded = str(make_header(decode_header(phrase.strip()))) if "=?" in phrase else phrase.strip()
        if decoded.startswith('"'):
            decoded = email.utils.unquote(decoded).replace('\\"', '"').replace("\\\\", "\\")
        assert decoded == " ".join(name.split())


def test_list_id_phrase_is_encoded_only_when_it_must_be():
    from newsletter.personalize import list_id_header

    assert list_id_header("Weekly AI digest", "w.example.org") == "Weekly AI digest <w.example.org>"
    assert list_id_header("Dev, News", "d.example.org") == '"Dev, News" <d.example.org>'
    assert list_id_header("", "d.example.org") == "<d.example.org>"
    assert list_id_header("Нейродайджест", "digest.example.org") == \
        "=?utf-8?b?0J3QtdC50YDQvtC00LDQudC00LbQtdGB0YI=?= <digest.example.org>"
    raw = _raw_list_id(_list_id_messages("Нейродайджест")[0])
    assert raw == b"List-Id: =?utf-8?b?0J3QtdC50YDQvtC00LDQudC00LbQtdGB0YI=?= <digest.example.org>\n"


def test_a_list_id_with_a_line_break_is_refused_not_written():
    envelope = Envelope("2021-03", "d@example.org", "D", None, "Hi", "<p>x</p>", "x", 1,
                        list_id="Eve <e.example.org>\r\nBcc: victim@example.net")
    p = Personalization("anna@example.com", "", ("u",), ("u",), {})
    for build in (lambda: build_message(envelope, p), lambda: message_bytes(envelope, p)):
        with pytest.raises(ValueError):
            build()


def test_every_personalized_message_carries_the_projects_list_id(tmp_path):
    # the envelope every command sends (Personalizer) names the list: the same for a test copy
    from conftest import CONFIG, SMALL_ISSUE
    from newsletter.config import load_settings
    from newsletter.issue import parse_issue
    from newsletter.personalize import SAMPLE_SUBSCRIBER, Personalizer
    from newsletter.render import Renderer

    (tmp_path / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    settings = load_settings(tmp_path / "newsletter.toml", env={})
    rendered = Renderer(settings).render(parse_issue(SMALL_ISSUE, "x.yaml"), "2021-03")
    for test in (False, True):
        personalizer = Personalizer(rendered, settings, "k" * 32, provider="smtp", test=test)
        msg = build_message(personalizer.envelope(), personalizer(SAMPLE_SUBSCRIBER))
        assert msg["List-Id"] == "Test Digest <test-digest.example.org>"
