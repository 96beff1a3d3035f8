"""The render pipeline: what the reader's mail client receives, HTML and plain text."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import EXAMPLE, REPO, SMALL_ISSUE
from newsletter.config import load_settings
from newsletter.issue import parse_issue
from newsletter.personalize import Personalizer, html_size, sample_message, unsubscribe_token
from newsletter.pipeline import prepare, write_rendered
from newsletter.render import Renderer
from newsletter.subscribers import Subscriber

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def settings(project):
    return load_settings(project.root / "newsletter.toml", env={})


SECRET = "k3y-for-render-tests"


def render_small(settings, text=SMALL_ISSUE, subscriber=None):
    """(subject, html, text) as `subscriber` (default: a reader without a name) gets them."""
    rendered = Renderer(settings).render(parse_issue(text, "small.yaml"), "small")
    fields = subscriber or {"email": "reader@example.com"}
    p = Personalizer(rendered, settings, SECRET, provider="smtp")
    reader = Subscriber(fields["email"], fields.get("name", ""), "subscribed", fields, 2)
    return p.envelope().fill(p(reader))


def test_html_keeps_doctype_lang_preheader_and_media_queries(settings):
    _, html, _ = render_small(settings)
    assert html.lower().startswith("<!doctype html>")
    assert re.search(r'<html[^>]* lang="en"', html)
    # the preheader is the first thing in <body>, hidden
    body = html[html.index("<body"):]
    pre = re.search(r"<div style=\"display:none;[^\"]*\">([^<]*)</div>", body)
    assert pre and pre.group(1).startswith("Self-supervised vision")
    # MJML's responsive rules survive inlining with !important intact
    assert re.search(r"@media only screen and \(min-width:480px\) \{ \.mj-column-per-100 \{ width:100% !important", html)


def test_content_elements_carry_inline_styles(settings):
    _, html, _ = render_small(settings)
    assert re.search(r'<p style="margin:0 0 14px 0">A 1.3-billion', html)
    assert re.search(r'<a href="https://instagram.com/\?a=1&amp;b=2" style="color:#1f6feb; text-decoration:underline">', html)


def test_no_remote_fonts_and_no_raw_html_passthrough(settings):
    _, html, text = render_small(settings)
    assert "fonts.googleapis.com" not in html
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" in text  # the text part shows it as the text it is


def test_merge_fields_fall_back_and_are_escaped_per_part(settings):
    subject, html, text = render_small(settings)
    assert subject == "Hello reader: the March digest"
    assert "Hi reader!" in text
    subject, html, text = render_small(settings, subscriber={"email": "t@example.org", "name": "Tom & <Jerry>"})
    assert subject == "Hello Tom & <Jerry>: the March digest"
    assert "Hi Tom &amp; &lt;Jerry&gt;!" in html and "<Jerry>" not in html
    assert "Hi Tom & <Jerry>!" in text


def test_unsubscribe_link_and_postal_address_in_footer(settings):
    _, html, text = render_small(settings)
    token = unsubscribe_token(SECRET, "reader@example.com")
    assert f'href="https://example.org/unsubscribe?email=reader@example.com&amp;token={token}"' in html
    assert f"Unsubscribe: https://example.org/unsubscribe?email=reader@example.com&token={token}" in text
    assert "1 Example Street, Springfield" in html and "1 Example Street, Springfield" in text


def test_text_part_reads_on_its_own(settings):
    _, _, text = render_small(settings)
    assert not re.search(r"</?(p|div|table|td|a|span)\b", text)
    assert "|" not in text  # no table debris from the layout
    assert "Instagram (https://instagram.com/?a=1&b=2)" in text
    assert "- paper: https://arxiv.org/abs/2103.01988" in text
    assert "Self-supervised vision" not in text.split("\n\n")[0]  # the preheader does not lead


def test_text_part_matches_golden(settings):
    _, _, text = render_small(settings)
    golden = GOLDEN / "small.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), "run with UPDATE_GOLDEN=1 after an intended change"


def test_labels_and_dates_follow_the_issue_language(settings):
    ru = SMALL_ISSUE.replace("language: en", "language: ru")
    _, html, text = render_small(settings, ru)
    assert "31 марта 2021" in html and "Доступность:" in html and "Отписаться" in html
    _, html, text = render_small(settings)
    assert "March 31, 2021" in html and "Links:" in html and "Unsubscribe" in html
    _, html, _ = render_small(settings, SMALL_ISSUE.replace("language: en", "language: de"))
    assert "31. März 2021" in html and "Links:" in html and "Abmelden" in html
    # a language without labels falls back to English; the date still follows the language
    _, html, _ = render_small(settings, SMALL_ISSUE.replace("language: en", "language: ja"))
    assert "2021年3月31日" in html and "Links:" in html and "Unsubscribe" in html


def test_sections_without_image_or_links_and_emoji(settings):
    text = SMALL_ISSUE.replace("No image, no links", "Émoji 🎉 & ampersands")
    _, html, plain = render_small(settings, text)
    assert "Émoji 🎉 &amp; ampersands" in html
    assert "Émoji 🎉 & ampersands" in plain
    assert html.count("<img") == 1


def test_templates_come_from_the_project_root_whatever_the_issue_folder(project, tmp_path):
    (project.root / "templates").mkdir()
    (project.root / "templates" / "digest.mjml.j2").write_text(
        (REPO / "templates" / "digest.mjml.j2").read_text().replace("<mj-body", "<mj-body css-class=\"custom-marker\""))
    elsewhere = tmp_path / "elsewhere" / "march.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(SMALL_ISSUE)
    prepared = prepare(elsewhere, load_settings(project.root / "newsletter.toml", env={}))
    assert "custom-marker" in prepared.rendered.html


def test_example_issue_renders_below_gmail_clipping():
    settings = load_settings(REPO / "newsletter.toml", env={})
    prepared = prepare(EXAMPLE, settings)
    assert prepared.errors == []
    _, html, text = sample_message(prepared.rendered, settings)
    assert len(html.encode()) < 90_000
    assert '<html lang="ru"' in html or re.search(r'<html[^>]* lang="ru"', html)
    assert "Привет, читатель!" in text
    for section in prepared.issue.sections:
        assert section.title in text
