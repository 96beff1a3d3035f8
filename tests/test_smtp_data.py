"""The DATA template (providers/smtp/data.py) against mime.message_bytes: the very same bytes for
every reader, dot-stuffed, whatever the names, merge fields, line lengths and encodings."""

from __future__ import annotations

import itertools
import random
import re
import threading
from email.headerregistry import Address

import pytest

from newsletter import mime
from newsletter.message import Envelope, Personalization
from newsletter.personalize import list_id_header
from newsletter.providers.smtp.data import (DataTemplate, _ascii_header, _list_unsubscribe, _to, dot_stuff,
                                           template_for)

NAMES = ["Имя 17", "Анна Петрова", "Анна 2 Петрова", "Tom & <Jerry>", "Smith, John", "🎉 Party 🎉", "", "O'Brien",
         'The "Boss"', "Émile Zola", "x" * 90, "Очень Длинное Имя Читателя С Отчеством Константиновна", "Zoë",
         "日本 太郎", "Jean-Luc Picard", "a.b", " Анна", "Анна  Петрова", "=?utf-8?q?x?=", "Анна Petrova Иванова"]
VALUES = ["", "Анна", "Tom & <Jerry>", "x" * 57, "y" * 150, ".leading dot", "two\nlines", "\n.dot after a break",
          "trailing space ", "tab\t", "=3D", "🎉" * 20, "Компания 7", "a" * 75 + ".", "NLMF1T"]
# bodies: Cyrillic (base64), English (quoted-printable), and the awkward cases of both
HTML = [
    "<html><body>" + "<p class=\"x\">Привет, NLMF1H! Самообучение и трансформеры.</p>\n" * 120 + "NLMF0H</body></html>",
    "<p>Dear NLMF1H, from NLMF2H</p>\n" + "<p>Plain English prose with a café and = signs.</p>\n" * 80
    + "<a href=\"NLMF0H\">unsubscribe</a>",
    "NLMF1H\n.\n..dots\n" + "z" * 300 + "\n. \nend NLMF2H\nNLMF0H",  # dot lines, a long line, no final line end
    "<p>NLMF1H</p>\r\n-- \r\n.\r\nFrom here\rtrailing   \n\ttab\t\n" + "y" * 1500 + "NLMF0H\n",
    "NLMF1HNLMF2HNLMF1H" + "Ю" * 100 + "NLMF0H",  # values side by side
    "",
    "literal ending in a carriage return\rNLMF1H\n",  # left to message_bytes
]
TEXT = [
    "Dear NLMF1T,\n\n" + "Plain English prose with a café, = signs and more words.\n" * 60 + "-- \nUnsubscribe: NLMF0T\n",
    "Здравствуйте, NLMF1T!\n" + "Самообучение в компьютерном зрении.\n" * 60 + "NLMF0T",
    "NLMF1T\r\n.\r\n..\rFrom me\n \n\t\nz" + "=" * 1200 + "\n\n\nNLMF2T NLMF0T\n\n",
    ".NLMF1T\n" + "." * 80 + "\nNLMF0T",
    "",
]
SUBJECTS = ["Нейродайджест: главное в машинном обучении за март 2021", "Hi NLMF1T", "Привет, NLMF1T", "Plain"]
# List-Id values as Personalizer makes them: none, encoded words (one, several lines), a quoted string
LIST_IDS = ["", list_id_header("Нейродайджест", "digest.example.org"), list_id_header("A, B & C", "abc.example.org"),
            list_id_header("Очень длинное название рассылки про нейросети и машинное обучение", "long.example.org"),
            list_id_header("The Newsletter", "the-newsletter." + "x" * 60 + ".example.org")]


@pytest.fixture(autouse=True)
def fixed_stamps(monkeypatch):
    """The same Date and Message-ID for both paths (one reader's), so that whole messages compare."""
    reader_number = [0]
    monkeypatch.setattr(mime, "formatdate", lambda *a, **k: "Mon, 01 Mar 2021 09:00:00 GMT")
    monkeypatch.setattr(mime, "make_msgid", lambda domain=None: f"<{reader_number[0]}.42@{domain}>")
    return reader_number


def envelope(rng: random.Random, html: str, text: str) -> Envelope:
    return Envelope("2021-03", rng.choice(["digest@example.org", "d@news.example.com"]),
                    rng.choice(["Нейродайджест", "The Newsletter", "A, B & C"]),
                    rng.choice([None, "editor@example.org", "Редакция <editor@example.org>"]),
                    rng.choice(SUBJECTS), html, text, 3, list_id=rng.choice(LIST_IDS))


def reader(rng: random.Random, i: int) -> Personalization:
    name = rng.choice(NAMES)
    email = f"reader{i}@example.com" if rng.random() < 0.9 else f"r.{'x' * rng.randint(1, 60)}{i}@example.com"
    url = f"https://example.org/unsubscribe?email={email}&token=" + "t" * rng.choice([22, 120])
    fields = [rng.choice(VALUES + [name]) + rng.choice(["", "x" * rng.randint(0, 56)]) for _ in range(2)]
    raw = (url, *fields)
    escaped = tuple(v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for v in raw)
    headers = rng.choice([{}, {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
                          {"List-Unsubscribe": f"<{url}>, <mailto:unsubscribe@example.org?subject=unsubscribe%20{i}>"}])
    return Personalization(email, name, raw, escaped, headers)


def test_every_reader_gets_the_bytes_message_bytes_gives(fixed_stamps):
    rng = random.Random(11)
    seen = set()
    for html, text in itertools.product(HTML, TEXT):
        env = envelope(rng, html, text)
        template = DataTemplate(env)
        seen.add((mime.transfer_encoding(text), mime.transfer_encoding(html)))
        for i in range(25):  # enough readers that the values put the literals at many offsets
            p = reader(rng, i)
            fixed_stamps[0] = i
            try:
                expected, expected_id = mime.message_bytes(env, p)
            except ValueError:  # a line break in a header value: refused alike
                with pytest.raises(ValueError):
                    template.data(p)
                continue
            data, size, message_id = template.data(p)
            assert data == dot_stuff(expected), (html[:40], text[:40], p)
            assert (size, message_id) == (len(expected), expected_id)
    assert seen == {(a, b) for a in ("base64", "quoted-printable") for b in ("base64", "quoted-printable")}


def test_a_carriage_return_in_a_value_and_smtputf8_take_the_reference_path():
    rng = random.Random(3)
    env = Envelope("2021-03", "d@example.org", "D", None, SUBJECTS[0], HTML[0], TEXT[0], 3)
    p = reader(rng, 1)
    odd = Personalization(p.email, p.name, (p.raw[0], "a\rb", "c\r\n"), (p.escaped[0], "a\rb", "c\r\n"), p.headers)
    expected, _ = mime.message_bytes(env, odd)
    assert DataTemplate(env).data(odd)[0] == dot_stuff(expected)
    utf8 = Personalization("анна@пример.рф", "", p.raw, p.escaped, p.headers)
    assert DataTemplate(env).data(utf8, utf8=True)[0] == dot_stuff(mime.message_bytes(env, utf8, utf8=True)[0])


def _policy_to(name: str, email: str) -> bytes:
    local, _, domain = email.rpartition("@")
    policy = mime.WIRE[False]
    return policy.fold_binary(*policy.header_store_parse("To", Address(display_name=name, username=local,
                                                                        domain=domain)))


def test_to_header_is_the_policys_for_any_name():
    rng = random.Random(2021)
    alphabets = ["абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГД", "éèàüößñçÉ", "日本語太郎花子", "🎉😀👍", "αβγδΩ",
                 "«»—–№", "\u0301\u00a0\u200b", "abcXYZ019'-", "abc .,\"<>()@;:\\[]=?_"]
    for i in range(1000):
        words = []  # mostly what the fast path takes: non-ASCII words, then ASCII ones
        n = rng.randint(1, 4)
        for k in range(n):
            alphabet = rng.choice(alphabets[:7] if k < n // 2 else alphabets[7:])
            alphabet += rng.choice(alphabets) if rng.random() < 0.2 else ""
            words.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))))
        name = rng.choice([" ", "  "]).join(words) if rng.random() < 0.1 else " ".join(words)
        local = rng.choice(["u" * rng.randint(1, 40), "first.last+tag", "o'brien", "a..b", "x y", "ä"])
        email = f"{local}@{rng.choice(['example.com', 'mail.example.org', 'пример.рф'])}"
        assert _to(name, email) == _policy_to(name, email), (name, email)
    for name in NAMES:
        assert _to(name, "reader@example.com") == _policy_to(name, "reader@example.com"), name


def test_message_id_and_list_unsubscribe_are_the_policys():
    policy = mime.WIRE[False]
    rng = random.Random(5)
    for i in range(300):
        domain = "".join(rng.choice("abcdefghij.-" + ("()<>@ \"" if i % 5 == 0 else ""))
                         for _ in range(rng.randint(1, 70)))
        value = f"<{rng.randint(0, 10**14)}.{i}.{rng.randint(0, 10**20)}@{domain}>"
        assert _ascii_header("Message-ID", value) == policy.fold_binary(*policy.header_store_parse("Message-ID", value))
        url = "https://example.org/u?e=" + "".join(rng.choice("abc%40&=?;,  <>") for _ in range(rng.randint(0, 300)))
        value = rng.choice([f"<{url}>", f"<{url}>, <mailto:u@example.org?subject=x>", f"<{url}>,<mailto:a@b>", url])
        assert _list_unsubscribe("List-Unsubscribe", value) == mime.fold("List-Unsubscribe", value)


def test_dot_stuffing_is_smtplibs():
    rng = random.Random(7)
    for _ in range(500):
        data = "".join(rng.choice([".", "\r\n", "a", "\n", ".."]) for _ in range(rng.randint(0, 30))).encode()
        assert dot_stuff(data) == re.sub(rb"(?m)^\.", b"..", data)


def test_the_connections_of_a_send_share_one_template():
    # they start together: each making its own would encode every body once per offset, per connection
    env = Envelope("2021-03", "d@example.org", "D", None, "S", HTML[0], TEXT[1], 3)
    start, made = threading.Barrier(8), []

    def connection() -> None:
        start.wait()
        made.append(template_for(env))

    threads = [threading.Thread(target=connection) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 8 and all(t is made[0] for t in made)
