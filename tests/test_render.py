"""The render pipeline: what the reader's mail client receives, HTML and plain text."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import EXAMPLE, REPO, SMALL_ISSUE
from newsletter.config import load_settings
from newsletter.issue import parse_issue
from newsletter.personalize import Personalizer, sample_message, unsubscribe_token
from newsletter.pipeline import prepare
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
    assert re.search(r'<a href="https://instagram.com/\?a=1&amp;b=2" style="color:#0969da; text-decoration:underline">', html)


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
    assert f"Unsubscribe:\nhttps://example.org/unsubscribe?email=reader@example.com&token={token}\n" in text
    assert "1 Example Street, Springfield" in html and "1 Example Street, Springfield" in text


def test_text_part_reads_on_its_own(settings):
    _, _, text = render_small(settings)
    assert not re.search(r"</?(p|div|table|td|a|span)\b", text)
    assert "|" not in text  # no table debris from the layout
    assert re.search(r"Instagram\s\(https://instagram\.com/\?a=1&b=2\)", text)  # wrapped at 76 columns
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


# ---------------------------------------------------------------------------------------------
# What the reader sees (issue 9): widths, order, dark mode, preheader, alt text, links, text part

MJML_CLI = REPO / ".tools" / "node_modules" / ".bin" / "mjml"
CONTENT_WIDTH = 600 - 2 * 24  # the body is 600 px, every block is padded 24 px each side
LONG_URL = "https://example.org/" + "a-very-long-path-segment-without-any-break-" * 4 + "end"
LONG_WORD = "Supercalifragilisticexpialidocious" * 4
# An English issue with what tends to break a layout or a text part; test_browser.py shows it too
RICH_ISSUE = f"""\
subject: "Reader view 🚀: emoji, 日本語 & <script>window.__pwned = 1</script>"
date: 2021-04-30
language: en
preheader: "Everything that tends to break a layout 🙈 & <b>not bold</b>, in one issue"
title: "Emoji 🎉, 日本語 and very long links"
intro: |
  Hi {{{{ subscriber.name | default("reader") }}}}! Bare links like https://example.org/bare become links; setup.py and www.example.com stay text.

  # Housekeeping
  Nothing else.
sections:
  - title: "日本語のセクション 🎌"
    image:
      src: https://example.com/wide-1600x900.png
      alt: "A wide striped test image"
      caption: "A caption under the image, above the links line."
    links:
      - label: paper
        url: https://arxiv.org/abs/2103.01988
      - label: the repository with a long address
        url: {LONG_URL}
      - label: "{LONG_WORD}"
        url: https://example.org/word
    body: |
      日本語の文章はスペースなしで続きます。これは長い文章で、折り返しが必要になるほど長く続きます。日本語の文章はスペースなしで続きます。
      - first item, straight after a paragraph line
      - second item with `inline code` and ~~struck~~ text, long enough to wrap onto a second line of the text part
        1. a nested ordered item

      ## Results 📊

      | Model | Top-1 | Notes |
      |---|--:|---|
      | SEER 🌱 | 84.2% | self-supervised |
      | 日本語モデル | 80.1% | wide characters |

      A long URL in prose: {LONG_URL} and a [described link](https://example.org/described).
  - title: "A table too wide for one line"
    body: |
      | Column with a long header | Another long column header | And a third that is long too |
      |---|---|---|
      | some long cell content here | more long cell content | and the last cell, https://example.org/cell |

      > A quotation that is long enough to wrap across two lines in the text part of the email, really.

      ```
      code  keeps   its spacing
      ```
  - title: "Script <script>window.__pwned = 1</script> & ampersands"
    body: |
      Code: `<img src=x onerror="window.__pwned = 1">` & <script>window.__pwned = 1</script>

      A long word: {LONG_WORD}.
outro: |
  Bye 👋, write to editor@example.org.
"""


def mjml_cli_html(mjml_src: str, tmp: Path) -> str:
    """What the official MJML compiler makes of the same MJML. `make tools` installs it; a missing
    compiler is a failure, not a skip: the width and size promises are measured against it."""
    assert MJML_CLI.exists(), f"{MJML_CLI} is missing: run `make tools`"
    src = tmp / "issue.mjml"
    src.write_text(mjml_src, encoding="utf-8")
    subprocess.run([str(MJML_CLI), str(src), "-o", str(tmp / "cli.html")], check=True,
                   capture_output=True, timeout=120)
    return (tmp / "cli.html").read_text(encoding="utf-8")


def widths(html: str) -> list[tuple[str, str]]:
    """Every width attribute and CSS pixel width on images and (Outlook) tables, in order."""
    found = []
    for m in re.finditer(r"<(img|table|td)\b[^>]*>", html):
        found += [(m.group(1), w) for w in re.findall(r'\bwidth="(\d+(?:px)?)"', m.group(0))]
        found += [(m.group(1), w + "px") for w in re.findall(r"(?<![-\w])width:\s*(\d+)px", m.group(0))]
    return found


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """(rendered, our HTML, the MJML CLI's HTML) for the example issue, its logo shown too."""
    settings = load_settings(REPO / "newsletter.toml", env={})
    settings.brand.logo = "https://example.org/logo.png"
    rendered = prepare(EXAMPLE, settings).rendered
    return rendered, rendered.html, mjml_cli_html(rendered.mjml, tmp_path_factory.mktemp("mjml"))


def test_widths_are_what_mjml_computes(example):
    rendered, ours, official = example
    assert widths(ours) == widths(official)  # Outlook for Windows sizes by these
    images = [int(w) for w in re.findall(r'<img\b[^>]*\bwidth="(\d+)"', ours)]
    assert images[0] == 120 and set(images[1:]) == {CONTENT_WIDTH}, images  # logo, then the section images
    dividers = re.findall(r'<table[^>]*style="border-top:solid 1px[^"]*width:(\d+)px', ours)
    assert dividers and set(dividers) == {str(CONTENT_WIDTH)}
    assert not re.search(r'padding="0 ', rendered.mjml), "write padding with units: 0px 24px"


def test_html_stays_small_against_mjml(example):
    _, ours, official = example
    ratio = len(ours.encode()) / len(official.encode())
    assert ratio <= 0.85, f"{len(ours.encode()):,} bytes is {ratio:.3f}x MJML's {len(official.encode()):,}"
    assert len(ours.encode()) < 90_000  # far below Gmail's ~102 KB clipping


def section_html(html: str, title: str) -> str:
    start = html.index(f">{title}</h2>")
    end = html.find("<h2", start)
    return html[html.rfind("nl-rule", 0, start):end if end > 0 else len(html)]


def test_sections_read_heading_image_caption_links_text(settings):
    _, html, text = render_small(settings)
    seer = section_html(html, "SEER")
    order = [seer.index(">SEER</h2>"), seer.index("<img"), seer.index("Accuracy grows"),
             seer.index("Links:"), seer.index("A 1.3-billion")]
    assert order == sorted(order), order
    block = text[text.index("SEER\n"):text.index("No image, no links")]
    order = [block.index("SEER"), block.index("[Accuracy grows"), block.index("Links:"), block.index("A 1.3-billion")]
    assert order == sorted(order), block


def test_dark_mode_styles_survive_inlining(settings):
    _, html, _ = render_small(settings)
    head = html[:html.index("<body")]
    assert '<meta name="color-scheme" content="light dark">' in head
    assert '<meta name="supported-color-schemes" content="light dark">' in head
    dark = re.search(r"@media \(prefers-color-scheme: dark\) \{(.*?)\n\s*\}\s*</style>", head, re.S)
    assert dark, "the dark-mode block was inlined away or dropped"
    rules = dark.group(1)
    assert "!important" in rules and "background: #0d1117 !important" in rules
    assert "nl-card" in html and "nl-outer" in html  # what the rules hook onto
    # and the body's wrapper, light inline: mjml-python writes role="article" on it from 1.4.2
    # (pyproject's floor); without it an older one leaves a light band around the dark email
    assert re.search(r'<div [^>]*role="article"[^>]*style="background-color:#f4f5f7;"', html)


def test_dark_colours_derive_from_brand_or_config():
    from newsletter.colors import AA, contrast, palette
    from newsletter.config import Brand

    for color in ("#0969da", "#0b6bcb", "#1a1a8c", "#7a0000"):
        dark = palette(Brand(color=color))["dark"]
        assert min(contrast(dark["link"], dark[g]) for g in ("background", "surface", "code")) >= AA, color
        for key in ("text", "muted"):
            assert contrast(dark[key], dark["surface"]) >= AA
    dark = palette(Brand(dark_color="#ffcc00", dark_background="#202020"))["dark"]
    assert dark["link"] == "#ffcc00" and dark["background"] == "#202020"
    assert contrast(dark["muted"], dark["surface"]) >= AA


def test_brand_colour_without_contrast_is_a_located_warning(project):
    config = project.root / "newsletter.toml"
    config.write_text(config.read_text() + '\n[brand]\ncolor = "#7aa7ff"\ndark_color = "#1a237e"\n')
    settings = load_settings(config, env={})
    problems = prepare(project.write_issue(SMALL_ISSUE), settings).problems
    found = {p.field: p for p in problems if p.field.startswith("brand.")}
    lines = config.read_text().splitlines()
    assert found["brand.color"].severity == "warning"
    assert lines[found["brand.color"].line - 1].startswith("color =")
    assert "4.5:1" in found["brand.color"].message
    assert lines[found["brand.dark_color"].line - 1].startswith("dark_color =")
    # the default and the example's colours pass
    assert not [p for p in prepare(EXAMPLE, load_settings(REPO / "newsletter.toml", env={})).problems
                if p.field.startswith("brand.")]


def test_preheader_is_padded_so_previews_stop_after_it(settings):
    _, html, text = render_small(settings)
    hidden = re.search(r'<div style="display:none;[^"]*">([^<]*)</div>', html).group(1)
    preheader = "Self-supervised vision, transformers for video and a GAN that composes scenes"
    assert hidden.startswith(preheader)
    filler = hidden[len(preheader):]
    assert len(filler) >= 150 and set(filler) <= {"\u034f", "\u200c", "\u00a0"}, filler[:20]
    assert "\u200c" not in text  # the text part has no preview


def test_alt_text_is_styled_for_blocked_images(settings):
    _, html, _ = render_small(settings)
    cell = re.search(r'<td[^>]*class="nl-image"[^>]*>', html).group(0)
    assert "color:#57606a" in cell.replace(" ", "") and "line-height:1.4" in cell
    assert "font-family:-apple-system" in cell
    img = re.search(r"<img\b[^>]*>", html).group(0)
    assert 'alt="A chart of SEER' in img and "font-size:14px" in img and f'width="{CONTENT_WIDTH}"' in img


def test_bare_urls_become_links_in_prose(settings):
    issue = RICH_ISSUE
    _, html, text = render_small(settings, issue)
    assert '<a href="https://example.org/bare" style="color:#0969da; text-decoration:underline">https://example.org/bare</a>' in html
    assert "setup.py and www.example.com stay text" in html
    assert '<a href="mailto:editor@example.org"' in html
    assert "https://example.org/bare become links" in text  # the URL once, not "URL (URL)"
    assert "(https://example.org/bare)" not in text


def test_headings_are_real_and_in_order(settings):
    _, html, _ = render_small(settings, RICH_ISSUE)
    levels = [int(h) for h in re.findall(r"<h([1-6])\b", html)]
    assert levels[0] == 1 and levels.count(1) == 1
    assert levels == [1, 2, 2, 4, 2, 2], levels  # intro's "#" -> h2, a section's "##" -> h4
    for a, b in zip(levels, levels[1:]):
        assert b <= a + 1 or (a, b) == (2, 4), f"a heading level skipped: {levels}"


def test_every_image_has_alt_and_links_say_where_they_go(settings):
    _, html, _ = render_small(settings, RICH_ISSUE)
    for img in re.findall(r"<img\b[^>]*>", html):
        assert re.search(r'\balt="[^"]+"', img), img
    for label in re.findall(r"<a\b[^>]*>([^<]*)</a>", html):
        assert label.strip().lower() not in {"", "here", "click here", "link", "this", "more"}, label


def text_lines_ok(text: str, columns: int = 76) -> None:
    """Lines fit `columns` (display width); a longer one is one word (a URL, most often) that
    never gets broken, alone on its line (after a list marker at most)."""
    from newsletter.plaintext import width

    for line in text.split("\n"):
        if width(line) > columns:
            assert len(line.removeprefix("- ").split()) == 1, f"long line: {line!r}"


def test_text_part_wraps_and_keeps_urls_whole(settings):
    for source in (SMALL_ISSUE, RICH_ISSUE):
        _, _, text = render_small(settings, source)
        text_lines_ok(text)
    assert LONG_URL in text.split("\n")[text.split("\n").index(LONG_URL)]  # whole, on its own line
    assert "  " + LONG_URL in text  # the links line's URL, indented under its label
    example = prepare(EXAMPLE, load_settings(REPO / "newsletter.toml", env={}))
    _, _, text = sample_message(example.rendered, example_settings := load_settings(REPO / "newsletter.toml", env={}))
    text_lines_ok(text)
    for section in example.issue.sections:
        for link in section.links:
            assert link.url in text


def test_text_part_has_no_markdown_left(settings):
    _, _, text = render_small(settings, RICH_ISSUE)
    assert "`" not in text and "~~" not in text and "struck" not in text
    assert "|" not in text and "**" not in text and "## " not in text
    assert "inline code" in text
    # lists: every item indented alike, the first one too, straight after a paragraph line
    assert "\n  - first item, straight after a paragraph line\n  - second item" in text
    assert "\n      1. a nested ordered item" in text
    # a table that fits is aligned columns (wide characters count two), one that does not, records
    assert "Model         Top-1  Notes\n------------  -----  ---------------\nSEER 🌱       84.2%  self-supervised\n日本語モデル  80.1%  wide characters" in text
    assert "\nColumn with a long header: some long cell content here\nAnother long column header: " in text
    assert "> A quotation that is long enough" in text
    assert "\n    code  keeps   its spacing\n" in text  # as written, indented
    assert "\nResults 📊\n··········\n" in text  # a heading in prose: a dotted rule, no "##"


def test_heading_underlines_match_display_width(settings):
    from newsletter.plaintext import underline, width

    assert width("日本語") == 6 and width("🎉") == 2 and width("👨‍👩‍👧") == 2 and width("é") == 1
    assert underline("日本語のセクション 🎌", "-") == "日本語のセクション 🎌\n" + "-" * 21
    _, _, text = render_small(settings, RICH_ISSUE)
    lines = text.split("\n")
    for i, line in enumerate(lines[1:], 1):
        if line and set(line) in ({"="}, {"-"}) and lines[i - 1] and line != "--" and line != "----":
            assert len(line) == width(lines[i - 1]), (lines[i - 1], line)
    assert "\nEmoji 🎉, 日本語 and very long links\n" + "=" * 36 + "\n" in text


def test_rich_text_part_matches_golden(settings):
    _, _, text = render_small(settings, RICH_ISSUE)
    golden = GOLDEN / "rich.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), "run with UPDATE_GOLDEN=1 after an intended change"


def test_the_private_premailer_inlines_as_premailer_does_and_leaves_the_real_one_alone(settings):
    # the Inliner uses a private copy of premailer (requests stubbed, no validation logging): same
    # output as the real premailer, and code that imports premailer itself still gets the real thing
    import premailer.premailer as real_module
    from premailer import Premailer

    from newsletter.inline import Inliner

    issue = parse_issue(SMALL_ISSUE, "small.yaml")
    ours = Renderer(settings).render(issue, "small").html
    theirs_renderer = Renderer(settings)
    theirs_renderer._inliner = Inliner.__new__(Inliner)
    theirs_renderer._inliner._premailer = Premailer
    assert theirs_renderer.render(issue, "small").html == ours
    assert Inliner()._premailer is not Premailer
    assert real_module.requests.__name__ == "requests" and callable(real_module.requests.get)


def test_a_renderer_kept_across_edits_renders_each_edit_as_a_fresh_one_does(settings, project):
    # the preview keeps one Renderer; its caches (Markdown by text, parsed CSS) must never show a
    # reader the previous save: a new merge field shifts every later slot, a CSS edit restyles
    css = project.root / "templates" / "digest.css"
    css.parent.mkdir(exist_ok=True)
    css.write_text((REPO / "templates" / "digest.css").read_text())
    kept = Renderer(settings)
    kept.render(parse_issue(SMALL_ISSUE, "small.yaml"), "small")
    edits = [
        SMALL_ISSUE.replace("A 1.3-billion", "{{ subscriber.company | default('you') }}: a 1.3-billion"),
        SMALL_ISSUE.replace("intro: |\n  Hi", "intro: |\n  **Edited.** Hi"),
        SMALL_ISSUE,
    ]
    for text in edits:
        issue = parse_issue(text, "small.yaml")
        mine, fresh = kept.render(issue, "small"), Renderer(settings).render(issue, "small")
        assert (mine.html, mine.text, mine.subject) == (fresh.html, fresh.text, fresh.subject)
        assert [f.source for f in mine.fields] == [f.source for f in fresh.fields]
    css.write_text(css.read_text() + "\n.nl-prose p { letter-spacing: 1px; }\n")
    issue = parse_issue(SMALL_ISSUE, "small.yaml")
    restyled = kept.render(issue, "small").html
    assert "letter-spacing:1px" in restyled and restyled == Renderer(settings).render(issue, "small").html


MERGED_TITLE_ISSUE = SMALL_ISSUE.replace(
    "subject: ", "title: \"April for {{ subscriber.company | default('you') }}\"\nsubject: ", 1)


def test_a_title_with_a_merge_field_is_underlined_as_wide_as_each_reader_sees_it(settings, monkeypatch):
    # rendered once, the title holds a token: its rule must still be as wide as the title each reader
    # gets, in Envelope.fill, the SMTP fast path and SendGrid's expansion alike
    import email as email_lib
    import html as html_lib

    from newsletter import mime
    from newsletter.plaintext import width
    from newsletter.providers.sendgrid import SendGridSettings
    from newsletter.providers.sendgrid.client import SendGridProvider
    from newsletter.providers.smtp.data import DataTemplate, dot_stuff

    monkeypatch.setattr(mime, "formatdate", lambda *a, **k: "Mon, 01 Mar 2021 09:00:00 GMT")
    monkeypatch.setattr(mime, "make_msgid", lambda domain=None: f"<1.42@{domain}>")
    rendered = Renderer(settings).render(parse_issue(MERGED_TITLE_ISSUE, "small.yaml"), "small")
    p = Personalizer(rendered, settings, SECRET, provider="smtp")
    long_name = "Очень Длинное Название Компании С Ограниченной Ответственностью И Филиалами"
    companies = ["A, B & C", "日本株式会社 🎉", "", long_name]
    readers = [p(Subscriber(f"r{i}@example.com", "", "subscribed", {"email": f"r{i}@example.com", "company": c}, 2))
               for i, c in enumerate(companies)]
    env = p.envelope()
    filled = [env.fill(r) for r in readers]
    for (_, html, text), company in zip(filled, companies):
        # the rule as wide as the title the reader sees (wide characters two columns); a long value
        # lengthens its line, as a merge field in any prose does (the text is wrapped once, with tokens)
        title = f"April for {company or 'you'}"
        assert f"\n\n{title}\n" + "=" * width(title) + "\n\n" in text, text[:400]
        assert html_lib.escape(title) in html
    # the SMTP fast path: the very bytes message_bytes makes from Envelope.fill's strings
    template = DataTemplate(env)
    for r, (_, _, text) in zip(readers, filled):
        expected, _ = mime.message_bytes(env, r)
        assert template.data(r)[0] == dot_stuff(expected)
        part = next(m for m in email_lib.message_from_bytes(expected).walk() if m.get_content_type() == "text/plain")
        assert part.get_payload(decode=True).decode("utf-8").replace("\r\n", "\n") == text
    # SendGrid: the content goes once with tags, each reader's substitutions give Envelope.fill's strings
    body = SendGridProvider(SendGridSettings(api_url="http://127.0.0.1:9", api_key="SG.x")).body(env, readers)
    for i, (subject, html, text) in enumerate(filled):
        subs = body["personalizations"][i].get("substitutions", {})
        parts = [body["subject"], *(c["value"] for c in body["content"])]
        for tag, value in subs.items():
            parts = [part.replace(tag, value) for part in parts]
        assert (parts[0], parts[2], parts[1]) == (subject, html, text)
