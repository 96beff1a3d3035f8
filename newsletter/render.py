"""Render an issue once: Jinja2 -> MJML -> HTML (mjml-python) -> premailer -> plain text.

Merge fields and the unsubscribe URL stay as placeholder tokens (see merge.Filler); filling them per
recipient is message.py's job, so this whole pipeline runs once per issue, not once per reader.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import html2text
import mjml
from babel.dates import format_date
from jinja2 import TemplateNotFound, UndefinedError
from markdown_it import MarkdownIt

from . import merge
from .config import Settings
from .errors import NewsletterError
from .inline import Inliner
from .issue import Issue
from .message import UNSUBSCRIBE_SLOT, Rendered
from .templating import TemplateSet

# a label cannot contain brackets or a line break: without that, every "[" would rescan to the
# next "]" (quadratic: 8.8 s for 40,000 "[")
_MD_LINK = re.compile(r"\[([^\[\]\n]*)\]\((\S+?)\)")


class _Slots:
    """Assigns each distinct merge-field expression a slot number (slot 0: unsubscribe URL)."""

    def __init__(self) -> None:
        self.exprs: list[str] = []

    def token(self, expr: str, html: bool) -> str:
        if expr not in self.exprs:
            self.exprs.append(expr)
        return merge.token(self.exprs.index(expr) + 1, html)

    def tokenizer(self, html: bool) -> Callable[[str], str]:
        return lambda text: merge.tokenize(text, lambda e: self.token(e, html))


class Renderer:
    """Renders issues for one project. It owns its templates (the project's over the built-in
    ones), labels, CSS inliner and Markdown parser, and keeps no state between renders: a
    long-running process (the preview) makes one and renders as often as files change; Jinja
    reloads a template whose file changed."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.templates = TemplateSet(settings.templates_dir)
        self.markdown = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")
        self._inliner: Inliner | None = None  # premailer loads on the first render

    @property
    def inliner(self) -> Inliner:
        if self._inliner is None:
            self._inliner = Inliner()
        return self._inliner

    def markdown_to_text(self, source: str) -> str:
        """Markdown -> readable plain text; links become `label (URL)`."""
        text = _html2text().handle(self.markdown.render(source)).strip()

        def link(m: re.Match[str]) -> str:
            label, url = m.group(1), m.group(2)
            return url if label.strip() in ("", url) else f"{label} ({url})"

        return _MD_LINK.sub(link, text)

    def _prose(self, source: str | None, slots: _Slots) -> tuple[str, str]:
        """Markdown with merge fields -> (HTML with H tokens, text with T tokens)."""
        if not source:
            return "", ""
        html = self.markdown.render(slots.tokenizer(True)(source))
        return html, self.markdown_to_text(slots.tokenizer(False)(source))

    def context(self, issue: Issue, stem: str, slots: _Slots) -> dict[str, object]:
        """The variables every template receives (README: "Writing a template")."""
        settings = self.settings
        labels = self.templates.labels(issue.language)
        sections = []
        for s in issue.sections:
            body_html, body_text = self._prose(s.body, slots)
            sections.append({"section": s, "html": body_html, "text": body_text})
        intro_html, intro_text = self._prose(issue.intro, slots)
        outro_html, outro_text = self._prose(issue.outro, slots)
        html, text = slots.tokenizer(True), slots.tokenizer(False)
        return {
            "issue": issue,
            "settings": settings,
            "brand": settings.brand,
            "labels": labels,
            "lang": issue.language,
            "date": format_date(issue.date, format="long", locale=issue.language.replace("-", "_")),
            "subject_html": html(issue.subject),
            "heading_html": html(issue.heading),
            "heading_text": text(issue.heading),
            "intro_html": intro_html,
            "intro_text": intro_text,
            "outro_html": outro_html,
            "outro_text": outro_text,
            "sections": sections,
            "unsubscribe_html": merge.token(UNSUBSCRIBE_SLOT, True),
            "unsubscribe_text": merge.token(UNSUBSCRIBE_SLOT, False),
            "view_online": settings.view_online_url.format(issue=stem) if settings.view_online_url else None,
            "why": labels.get("why", "").format(name=settings.name),
        }

    def render(self, issue: Issue, stem: str) -> Rendered:
        """Render an issue once for all recipients; merge fields stay tokens (see message.py)."""
        slots = _Slots()
        context = self.context(issue, stem, slots)
        name = issue.template
        try:
            mjml_src = self.templates.env.get_template(f"{name}.mjml.j2").render(**context)
            text = self.templates.env.get_template(f"{name}.txt.j2").render(**context)
        except TemplateNotFound as e:
            looked = " and ".join(str(d) for d in self.templates.dirs)
            raise NewsletterError(
                f"{e.name}: template not found in {looked}; fix `template:` in the issue, or add the "
                "file to templates/ beside newsletter.toml"
            ) from None
        except UndefinedError as e:
            where = self.templates.find(f"{name}.mjml.j2") or f"{name}.mjml.j2"
            raise NewsletterError(f"{where}: {e.message}") from None
        # fonts={}: no web-font <link>; a newsletter must not call out to Google Fonts on open
        result = mjml.mjml2html(mjml_src, fonts={})
        css = self.templates.read(f"{name}.css").replace("BRAND_COLOR", self.settings.brand.color)
        html = self.inliner.inline(result, css)
        subject = slots.tokenizer(False)(issue.subject)
        fields = [merge.compile_field(e) for e in slots.exprs]
        return Rendered(issue, stem, subject, html, re.sub(r"\n{3,}", "\n\n", text), mjml_src, fields)


def _html2text() -> html2text.HTML2Text:
    h = html2text.HTML2Text()
    h.body_width = 0  # no hard wraps: they break long URLs
    h.ignore_images = True
    h.ignore_emphasis = True
    h.ul_item_mark = "-"
    h.unicode_snob = True
    return h
