"""The MIME message one reader receives: headers that survive the trip through a mail server."""

from __future__ import annotations

import email
import random
from email import policy

from newsletter.mime import build_message
from newsletter.providers.base import Envelope, Personalization

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
    from newsletter.mime import transfer_encoding

    assert transfer_encoding("Plain English prose with a café. " * 100) == "quoted-printable"
    assert transfer_encoding("<p>Привет, читатель! Самообучение в компьютерном зрении.</p>" * 100) == "base64"
