"""The compatibility report in `newsletter check`: caniemail's data applied to the HTML a reader gets.

What an editor relies on: our own template has nothing to fix beyond what MJML itself needs; a
template feature that a chosen client cannot show is named with where it is, and fails --strict;
dark-mode styles count as degrading gracefully; the clients are configurable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import EXAMPLE, REPO, SMALL_ISSUE
from newsletter.compat import (DEFAULT_CLIENTS, FAMILY_PLATFORMS, compat_report, components_of, load_data,
                               resolve_clients)
from newsletter.compat_scan import NOT_SCANNED, scan, scannable
from newsletter.config import load_settings
from newsletter.errors import NewsletterError
from newsletter.personalize import sample_message
from newsletter.pipeline import prepare
from newsletter.templating import builtin_dir

DARK_MODE = """\
    <mj-raw><meta name="color-scheme" content="light dark"><meta name="supported-color-schemes" content="light dark"></mj-raw>
    <mj-style>
      :root { color-scheme: light dark; supported-color-schemes: light dark; }
      @media (prefers-color-scheme: dark) {
        .nl-prose div { color: #e6edf3 !important; background-color: #0d1117 !important; }
      }
      [data-ogsc] .nl-prose div { color: #e6edf3 !important; }
    </mj-style>
"""


def example_report(**kwargs):
    settings = load_settings(REPO / "newsletter.toml", env={})
    prepared = prepare(EXAMPLE, settings)
    html = sample_message(prepared.rendered, settings)[1]
    return compat_report(html, mjml=prepared.rendered.mjml, **kwargs)


def own_template(project, old: str, new: str) -> None:
    """A project template: the built-in digest with `old` replaced by `new`."""
    (project.root / "templates").mkdir(exist_ok=True)
    src = (builtin_dir() / "digest.mjml.j2").read_text()
    assert old in src
    (project.root / "templates" / "digest.mjml.j2").write_text(src.replace(old, new, 1))


def test_the_example_issue_needs_nothing_beyond_mjml_for_gmail_apple_mail_and_outlook():
    report = example_report()
    for family in ("gmail", "apple-mail", "outlook", "yahoo"):
        assert report.problems(family, degrades=False) == [], family
    assert report.failures == []
    # what is there beyond the baseline degrades gracefully (Outlook for Windows: square image corners)
    assert {f.slug for f in report.problems("outlook")} >= {"css-border-radius"}
    assert all(f.degrades for f in report.problems())
    # MJML's own markup has known gaps (e.g. @media in Outlook for Windows): expected, counted in the score
    media = next(f for f in report.findings if f.slug == "css-at-media")
    assert media.baseline and media.support["outlook.windows"] == "n"
    assert 70 < report.score < 100
    assert [c.key for c in report.clients][:3] == ["gmail.desktop-webmail", "gmail.ios", "gmail.android"]
    assert len(report.clients) == sum(len(FAMILY_PLATFORMS[f]) for f in DEFAULT_CLIENTS)


def test_origins_tell_mjml_from_template_attributes_from_content():
    by_slug = {f.slug: f for f in example_report().findings}
    assert by_slug["css-at-media"].origin == "mjml"  # MJML's responsive columns
    assert by_slug["css-border-radius"].origin == "layout"  # border-radius="6px" on <mj-image>
    assert by_slug["css-letter-spacing"].origin == "content"  # the template's own <strong style=...>
    assert by_slug["html-h1-h6"].origin == "content"
    # partial support whose limits our values avoid: font-weight 700 is bold everywhere
    assert by_slug["css-font-weight"].partial_ok and by_slug["css-font-weight"].support["outlook.windows"] == "a"
    assert by_slug["css-font-weight"].level(resolve_clients(["outlook.windows"])[0]) == "y"
    places = dict(by_slug["css-letter-spacing"].places)
    assert any("letter-spacing" in w and "<strong>" in w for w in places)


def test_check_prints_a_compact_summary_and_details_on_request(cli):
    r = cli("check", str(EXAMPLE), cwd=REPO)
    assert r.code == 0, r.output
    lines = r.out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("compatibility "))
    assert re.match(r"compatibility \d+% across 13 email clients \(caniemail data of \d{4}-\d\d-\d\d\)", lines[first])
    summary = lines[first + 1:first + 5]
    assert [s.split()[0] for s in summary] == ["Gmail", "Apple", "Outlook", "Yahoo!"]
    for family_line in summary[:3]:
        assert "0 unsupported, 0 partial" in family_line
    assert len(lines) <= 8
    v = cli("check", str(EXAMPLE), "--verbose", cwd=REPO)
    assert "border-radius (degrades gracefully: square corners" in v.out
    assert "https://www.caniemail.com/features/css-border-radius/" in v.out
    assert "MJML's own markup (the baseline, expected)" in v.out


def test_strict_fails_on_an_unsupported_template_feature_and_names_it(project, cli):
    own_template(project, '<mj-text css-class="nl-prose">{{ intro_html | safe }}</mj-text>',
                 '<mj-text css-class="nl-prose"><div style="position:absolute;top:0">{{ intro_html | safe }}'
                 "</div></mj-text>")
    project.write_issue(SMALL_ISSUE)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 0, r.output  # without --strict it is reported, not fatal
    gmail = next(line for line in r.out.splitlines() if line.strip().startswith("Gmail"))
    assert "2 unsupported" in gmail and "position" in gmail and "left, right, top, bottom" in gmail
    r = cli("check", "issues/issue.yaml", "--strict", cwd=project.root)
    assert r.code == 1
    assert "position is not supported by Gmail web, Gmail iOS, Gmail Android" in r.err
    assert "https://www.caniemail.com/features/css-position/" in r.err
    assert "(--strict)" in r.err
    # the project may accept it
    with (project.root / "newsletter.toml").open("a") as f:
        f.write('\n[check]\naccept = ["css-position", "css-left-right-top-bottom"]\n')
    r = cli("check", "issues/issue.yaml", "--strict", cwd=project.root)
    assert r.code == 0, r.output


def test_dark_mode_styles_degrade_gracefully_and_pass_strict(project, cli):
    own_template(project, "    <mj-style>\n", DARK_MODE + "    <mj-style>\n")
    project.write_issue(SMALL_ISSUE)
    r = cli("check", "issues/issue.yaml", "--strict", "--report", "compat.json", cwd=project.root)
    assert r.code == 0, r.output
    report = json.loads((project.root / "compat.json").read_text())
    findings = {f["slug"]: f for f in report["findings"]}
    for slug in ("css-at-media-prefers-color-scheme", "html-meta-color-scheme", "css-color-scheme"):
        assert findings[slug]["degrades"], slug
        assert slug in report["families"]["gmail"]["degrades_gracefully"]
    # Outlook.com's dark-mode attribute selector is used only for dark mode: graceful too
    assert findings["css-selector-attribute"]["degrades"].startswith("used only in dark-mode styles")
    assert report["failures"] == []


def test_clients_are_configurable_and_checked_where_they_are_written(project, cli):
    project.write_issue(SMALL_ISSUE)
    cfg = project.root / "newsletter.toml"
    base = cfg.read_text()
    cfg.write_text(base + '\n[check]\nclients = ["gmail.ios", "outlook.windows", "samsung-email"]\n')
    r = cli("check", "issues/issue.yaml", "--report", "out/compat.md", cwd=project.root)
    assert r.code == 0, r.output
    assert "across 3 email clients" in r.out
    assert [line.split()[0] for line in r.out.splitlines()[1:4]] == ["Gmail", "Outlook", "Samsung"]
    md = (project.root / "out" / "compat.md").read_text()
    assert "| feature | where | Gmail iOS | Outlook Windows | Samsung Email Android |" in md
    cfg.write_text(base + '\n[check]\nclients = ["gmial"]\n')
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1
    line = base.count("\n") + 3
    assert f"newsletter.toml:{line}: check.clients: unknown email client 'gmial'; did you mean gmail" in r.err
    cfg.write_text(base + '\n[check]\naccept = ["border-radius"]\n')
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1 and "'border-radius' is not a caniemail feature" in r.err


def test_every_feature_in_the_data_is_scanned_or_listed():
    """After scripts/update-caniemail.sh: a new feature must be taught to compat_scan.py (or listed
    in NOT_SCANNED with the reason), and no table may name a feature the data does not have."""
    data = {f["slug"] for f in load_data()["data"]}
    assert data - scannable() - set(NOT_SCANNED) == set()
    assert scannable() - data == set()


def test_scanner_reads_style_blocks_selectors_values_and_markup():
    html = """<!DOCTYPE html><html lang="en"><head>
    <meta name="color-scheme" content="light dark">
    <style>
      /* a comment */
      @import url("x.css");
      @font-face { font-family: X; src: url(data:font/woff2;base64,AAA;BBB) }
      a:hover, td > p + span ~ em { color: rgb(1, 2, 3) }
      div::before { content: "{ not a block }" }
      .a.b [hidden] * { display: flex; gap: 1rem; margin-inline: auto }
      @media (prefers-color-scheme: dark) { .x { background: linear-gradient(red, blue) !important } }
      @supports (display: grid) { .y { display: grid } }
    </style></head>
    <body><!--[if mso]><table><tr><td style="position:absolute"><![endif]-->
    <a href="#top">top</a> <a href="mailto:x@example.org">mail</a>
    <img src="https://example.org/i.webp?x=1" srcset="a.png 2x" alt="">
    <img src="data:image/png;base64,AAAA" alt="">
    <div style="width: calc(100% - 2px); -webkit-text-size-adjust: 100%; mso-line-height-rule: exactly; --gap: 4px">
    <svg></svg><input type="checkbox"><button>b</button></div></body></html>"""
    s = scan(html)
    found = set(s.found)
    expected = {
        "html-doctype", "html-lang", "html-meta-color-scheme", "html-style", "css-comments", "css-at-import",
        "css-at-font-face", "css-pseudo-class-hover", "css-selector-grouping", "css-selector-child",
        "css-selector-adjacent-sibling", "css-selector-general-sibling", "css-rgb", "css-pseudo-element-before",
        "css-selector-chaining", "css-selector-attribute", "css-selector-universal", "css-selector-descendant",
        "css-display-flex", "css-gap", "css-unit-rem", "css-margin-inline-block", "css-at-media",
        "css-at-media-prefers-color-scheme", "css-background", "css-linear-gradient", "css-important",
        "css-at-supports", "css-display-grid", "html-comments", "html-anchor-links", "html-mailto-links",
        "image-webp", "html-srcset", "image-base64", "css-width", "css-unit-calc", "css-unit-percent",
        "css-variables", "html-svg", "html-input-checkbox", "html-button-submit",
    }
    assert expected <= found, expected - found
    # what only Outlook for Windows sees (conditional comments) is not read; vendor properties are not features
    assert "css-position" not in found
    assert not any("-webkit-text-size-adjust" in w or "mso-" in w for places in s.found.values() for w in places)
    # the background, its !important and the gradient are used only for dark mode; @media itself is not
    assert {"css-background", "css-linear-gradient"} <= s.dark_only and "css-at-media" not in s.dark_only
    assert s.values["css-width"] == {"calc(100% - 2px)"}


def test_baseline_of_a_minimal_mjml_document_is_all_mjml():
    import mjml

    source = "<mjml><mj-body><mj-section><mj-column><mj-image src='https://example.org/a.png' />" \
             "<mj-button href='https://example.org/'>Go</mj-button></mj-column></mj-section></mj-body></mjml>"
    report = compat_report(mjml.mjml2html(source, fonts={}), ["gmail"], mjml=source)
    assert report.findings and all(f.baseline for f in report.findings)
    assert components_of(source) == ["mj-body", "mj-button", "mj-column", "mj-image", "mj-section", "mj-text"]
    assert report.problems() == [] and report.failures == []


def test_library_call_without_mjml_and_unknown_clients():
    html = '<!doctype html><html><body><div style="display:grid">x</div></body></html>'
    report = compat_report(html, ["outlook.windows"])
    (grid,) = [f for f in report.findings if f.slug == "css-display-grid"]
    assert grid.origin == "content" and report.failures == [grid]
    assert report.to_dict()["families"]["outlook"]["unsupported"] == ["css-display-grid"]
    with pytest.raises(ValueError, match="unknown email client 'outlook.linux'"):
        compat_report(html, ["outlook.linux"])
    # the library's own error (NewsletterError is the root of everything it raises), and one name is a list
    with pytest.raises(NewsletterError, match="unknown email client 'outlook.linux'"):
        compat_report(html, ["outlook.linux"])
    assert [c.name for c in compat_report(html, "outlook.windows").clients] == ["Outlook Windows"]


def test_vendored_data_has_its_licence_and_version_beside_it():
    data_dir = Path(__file__).resolve().parent.parent / "newsletter" / "data"
    assert "MIT License" in (data_dir / "caniemail-LICENSE").read_text()
    assert (data_dir / "caniemail-version.txt").read_text().startswith("caniemail ")
    assert len(load_data()["data"]) > 250


def test_deeply_nested_css_is_read_to_a_depth_not_an_internal_error():
    """A template's <mj-style> reaches the scanner verbatim (premailer leaves it alone): 600 nested
    @media blocks or nested rules ran the scanner out of stack."""
    for opening in ("@media screen {", "@supports (display: grid) {", "a {"):
        html = f"<style>{opening * 600} a {{ display: flex }} {'}' * 600}</style><p>x</p>"
        found = scan(html).found
        assert "css-at-media" in found or "css-at-supports" in found or "css-nesting" in found
    shallow = scan("<style>@media screen { @media print { a { display: flex } } }</style>").found
    assert "css-display-flex" in shallow  # real style sheets are read in full
