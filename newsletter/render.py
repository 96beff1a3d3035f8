"""Render an issue once: Jinja2 -> MJML -> HTML (mjml-python) -> premailer -> plain text.

Merge fields and the unsubscribe URL stay as placeholder tokens (see merge.Filler); filling them per
recipient is personalize.py's job, so this whole pipeline runs once per issue, not once per reader.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
import sys
import types
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import html2text
import mjml
from babel.dates import format_date
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, UndefinedError
from markdown_it import MarkdownIt

from . import merge
from .config import Settings
from .errors import NewsletterError
from .issue import Issue

UNSUBSCRIBE_SLOT = 0  # slot 0 is always the recipient's unsubscribe URL; merge fields follow
SAMPLE_SUBSCRIBER = {"email": "reader@example.com"}  # no name, so `default(...)` fallbacks show

_md = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")


@dataclass
class Rendered:
    """One issue, rendered once; strings carry NLMF tokens to be filled per recipient."""

    issue: Issue
    stem: str
    subject: str
    html: str
    text: str
    mjml: str
    fields: list[merge.MergeField] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.subject_filler = merge.filler(self.subject)
        self.html_filler = merge.filler(self.html)
        self.text_filler = merge.filler(self.text)

    def values(self, subscriber: dict[str, str], unsubscribe_url: str) -> tuple[list[str], list[str]]:
        """(raw values, HTML-escaped values) for every slot, for one recipient."""
        raw = [unsubscribe_url] + [f.evaluate(subscriber) for f in self.fields]
        return raw, [html_lib.escape(v) for v in raw]

    def personalize(self, subscriber: dict[str, str], unsubscribe_url: str) -> tuple[str, str, str]:
        """(subject, html, text) for one recipient."""
        raw, escaped = self.values(subscriber, unsubscribe_url)
        return (
            self.subject_filler.fill(raw),
            self.html_filler.fill(escaped),
            self.text_filler.fill(raw),
        )


class _Slots:
    """Assigns each distinct merge-field expression a slot number (slot 0: unsubscribe URL)."""

    def __init__(self) -> None:
        self.exprs: list[str] = []

    def token(self, expr: str, html: bool) -> str:
        if expr not in self.exprs:
            self.exprs.append(expr)
        return merge.token(self.exprs.index(expr) + 1, html)


@cache
def _labels(templates_dir: Path) -> dict[str, dict[str, str]]:
    path = templates_dir / "labels.toml"
    return tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def labels_for(templates_dir: Path, language: str) -> dict[str, str]:
    """Labels for a BCP 47 tag, falling back pt-BR -> pt -> en."""
    table = _labels(templates_dir)
    merged = dict(table.get("en", {}))
    base = language.split("-")[0].lower()
    merged.update(table.get(base, {}))
    merged.update(table.get(language, {}))
    return merged


@cache
def _jinja(templates_dir: Path) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir)),
        # MJML is markup: escape everything; the plain-text template is not
        autoescape=lambda name: name is None or not name.endswith(".txt.j2"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


class _NoNetwork:
    """premailer's HTTP session: an email is rendered from local files only."""

    def get(self, url: str, *args: object, **kwargs: object) -> object:
        raise NewsletterError(f"{url}: remote stylesheets are not fetched; put the CSS in templates/")


@cache
def _premailer() -> type:
    """premailer's Premailer class, imported on first use (~0.1 s) and set up for email work."""
    # cssutils warns about every vendor property (mso-*, -webkit-*) MJML emits
    logging.getLogger("cssutils").setLevel(logging.CRITICAL)
    # premailer imports requests (~90 ms with urllib3, chardet, ...) only to fetch remote
    # stylesheets, which we never allow (allow_network=False, and _NoNetwork as its session).
    # Let it bind a placeholder during its own import; the real requests stays importable.
    real_requests = sys.modules.get("requests")
    sys.modules["requests"] = types.ModuleType("requests", "placeholder: premailer never fetches")
    try:
        import premailer.merge_style
        from premailer import Premailer
    finally:
        if real_requests is None:
            del sys.modules["requests"]
        else:
            sys.modules["requests"] = real_requests

    # premailer 3.10 ignores disable_validation when it merges inline styles: cssutils then
    # validates every declaration against its CSS profiles, compiling dozens of regexes on the
    # first call (~60 ms a process) only to log warnings we silence. Validation off, as asked.
    premailer.merge_style.csstext_to_pairs.__defaults__ = (False,)
    return Premailer


def _html2text() -> html2text.HTML2Text:
    h = html2text.HTML2Text()
    h.body_width = 0  # no hard wraps: they break long URLs
    h.ignore_images = True
    h.ignore_emphasis = True
    h.ul_item_mark = "-"
    h.unicode_snob = True
    return h


_MD_LINK = re.compile(r"\[([^\]]*)\]\((\S+?)\)")


def markdown_to_text(source: str) -> str:
    """Markdown -> readable plain text; links become `label (URL)`."""
    text = _html2text().handle(_md.render(source)).strip()

    def link(m: re.Match[str]) -> str:
        label, url = m.group(1), m.group(2)
        return url if label.strip() in ("", url) else f"{label} ({url})"

    return _MD_LINK.sub(link, text)


def _prose(source: str | None, slots: _Slots) -> tuple[str, str]:
    """Markdown with merge fields -> (HTML with H tokens, text with T tokens)."""
    if not source:
        return "", ""
    html = _md.render(merge.tokenize(source, lambda e: slots.token(e, True)))
    text = markdown_to_text(merge.tokenize(source, lambda e: slots.token(e, False)))
    return html, text


def inline_css(html: str, css_text: str) -> str:
    """Inline `css_text` into the HTML with premailer, leaving MJML's own <style> blocks alone.

    MJML's head styles (resets, @media column widths with !important) must stay a <style> block:
    inlining the resets onto every cell bloats the mail toward Gmail's clipping limit, and premailer's
    default strip_important breaks the mobile layout. data-premailer="ignore" keeps them verbatim.
    """
    Premailer = _premailer()
    html = html.replace("<style type=\"text/css\">", "<style type=\"text/css\" data-premailer=\"ignore\">")
    out = Premailer(
        html,
        css_text=css_text,
        keep_style_tags=True,
        strip_important=False,
        remove_classes=False,
        disable_validation=True,
        allow_network=False,
        disable_leftover_css=True,
        # MJML's images never float; the check would parse each <img> style with full CSS
        # validation (see _premailer), costing ~60 ms a process for nothing
        align_floating_images=False,
        session=_NoNetwork(),
        cssutils_logging_level=logging.CRITICAL,
    ).transform(pretty_print=False)
    out = out.replace(' data-premailer="ignore"', "")
    # premailer (lxml) drops the doctype; clients need it for standards mode
    if not out.lstrip().lower().startswith("<!doctype"):
        out = "<!doctype html>\n" + out
    return out


def render_issue(issue: Issue, settings: Settings, stem: str) -> Rendered:
    """Render an issue once for all recipients."""
    templates = settings.templates_dir
    env = _jinja(templates)
    slots = _Slots()
    labels = labels_for(templates, issue.language)
    locale = issue.language.replace("-", "_")
    sections = []
    for s in issue.sections:
        body_html, body_text = _prose(s.body, slots)
        sections.append({"section": s, "html": body_html, "text": body_text})
    intro_html, intro_text = _prose(issue.intro, slots)
    outro_html, outro_text = _prose(issue.outro, slots)
    view_online = settings.view_online_url.format(issue=stem) if settings.view_online_url else None
    context = {
        "issue": issue,
        "settings": settings,
        "brand": settings.brand,
        "labels": labels,
        "lang": issue.language,
        "date": format_date(issue.date, format="long", locale=locale),
        "subject_html": merge.tokenize(issue.subject, lambda e: slots.token(e, True)),
        "heading_html": merge.tokenize(issue.heading, lambda e: slots.token(e, True)),
        "heading_text": merge.tokenize(issue.heading, lambda e: slots.token(e, False)),
        "intro_html": intro_html,
        "intro_text": intro_text,
        "outro_html": outro_html,
        "outro_text": outro_text,
        "sections": sections,
        "unsubscribe_html": merge.token(UNSUBSCRIBE_SLOT, True),
        "unsubscribe_text": merge.token(UNSUBSCRIBE_SLOT, False),
        "view_online": view_online,
        "why": labels.get("why", "").format(name=settings.name),
    }
    try:
        mjml_src = env.get_template(f"{issue.template}.mjml.j2").render(**context)
        text = env.get_template(f"{issue.template}.txt.j2").render(**context)
    except TemplateNotFound as e:
        raise NewsletterError(
            f"{templates / str(e.name)}: template not found; templates are looked up in templates/ "
            "beside newsletter.toml: run from the project root or pass --config (or fix `template:`)"
        ) from None
    except UndefinedError as e:
        raise NewsletterError(f"{templates}/{issue.template}.*.j2: {e.message}") from None
    # fonts={}: no web-font <link>; a newsletter must not call out to Google Fonts on open
    result = mjml.mjml2html(mjml_src, fonts={})
    css_path = templates / f"{issue.template}.css"
    css = css_path.read_text(encoding="utf-8") if css_path.is_file() else ""
    css = css.replace("BRAND_COLOR", settings.brand.color)
    html = inline_css(result, css)
    subject = merge.tokenize(issue.subject, lambda e: slots.token(e, False))
    fields = [merge.compile_field(e) for e in slots.exprs]
    return Rendered(issue, stem, subject, html, re.sub(r"\n{3,}", "\n\n", text), mjml_src, fields)
