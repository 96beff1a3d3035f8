"""Render an issue once: Jinja2 -> MJML -> HTML (mjml-python) -> premailer -> plain text.

Merge fields and the unsubscribe URL stay as placeholder tokens (see merge.Filler); filling them per
recipient is message.py's job, so this whole pipeline runs once per issue, not once per reader.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import mjml
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from jinja2 import TemplateNotFound, TemplateSyntaxError, UndefinedError, pass_context
from jinja2.runtime import Context
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from . import merge, plaintext
from .colors import palette
from .config import Settings
from .errors import NewsletterError
from .inline import Inliner
from .issue import Issue
from .message import UNSUBSCRIBE_SLOT, Rendered
from .templating import TemplateSet

# A preheader is followed by this filler so that inbox previews stop after it instead of running
# on into the header ("NEWSLETTER · March 31, ..."): a combining grapheme joiner, a zero-width
# non-joiner and a no-break space per step (clients collapse plain spaces), as characters, not
# entities (7 bytes a step instead of 18).
PREHEADER_FILLER = "\u034f\u200c\u00a0" * 90
_HTML_TOKEN = re.compile(r"NLMF(\d+)H")  # merge.token(n, html=True)
_PROSE_CACHE_SIZE = 1024  # texts of a few issues; an issue has at most ~200
_SLOTS = "_merge_slots"  # the render's _Slots in the templates' context, for `_underline`


class _Slots:
    """Assigns each distinct merge-field expression a slot number (slot 0: unsubscribe URL), and the
    rule under each heading with merge fields that the text template underlines one of its own (its
    width differs per reader; see `_underline`)."""

    def __init__(self) -> None:
        self.keys: list[str | tuple[str, str, int]] = []  # an expression, or (wrapped heading, char, columns)
        self.made: dict[tuple[str, str, int], merge.MergeField] = {}  # the rules' fields

    def _slot(self, key: str | tuple[str, str, int]) -> int:
        if key not in self.keys:
            self.keys.append(key)
        return self.keys.index(key) + 1

    def token(self, expr: str, html: bool) -> str:
        return merge.token(self._slot(expr), html)

    def tokenizer(self, html: bool) -> Callable[[str], str]:
        return lambda text: merge.tokenize(text, lambda e: self.token(e, html))

    def underlined(self, heading: str, char: str, columns: int) -> str | None:
        """`plaintext.underline` of a heading with merge fields' text tokens in it: the heading wrapped
        as rendered, its tokens filled per reader as everywhere else, and under it a slot whose value
        is each reader's rule, as wide as their filled heading shows. None for a heading with no merge
        field, or with a token that is not a merge field's text token (left to plaintext.underline)."""
        wrapped = plaintext.wrap(" ".join(heading.split()), columns)
        filler = merge.Filler(wrapped)
        exprs = [self.keys[n - 1] for n in filler.slots if 0 < n <= len(self.keys)]
        if not filler.slots or _HTML_TOKEN.search(wrapped) or len(exprs) != len(filler.slots) \
                or not all(isinstance(e, str) for e in exprs):
            return None
        key = (wrapped, char, columns)
        if key not in self.made:
            fields = [merge.compile_field(e) for e in exprs if isinstance(e, str)]
            literals = filler.literals

            def rule(subscriber: Mapping[str, Any]) -> str:
                out = [literals[0]]
                for f, literal in zip(fields, literals[1:]):
                    out += [f.evaluate(subscriber), literal]
                return char * max(plaintext.width(line) for line in "".join(out).split("\n"))

            self.made[key] = merge.MergeField(f"rule {char!r} under {wrapped!r}", rule)
        return wrapped + "\n" + merge.token(self._slot(key), False)

    def fields(self) -> list[merge.MergeField]:
        """The field of every slot from 1 on, in slot order."""
        return [merge.compile_field(k) if isinstance(k, str) else self.made[k] for k in self.keys]


@pass_context
def _underline(context: Context, heading: str, char: str, columns: int = plaintext.WIDTH) -> str:
    """The text template's `underline`: plaintext.underline, with the rule of a heading that holds
    merge fields a slot filled per reader (rendered once, the heading holds tokens, not what shows)."""
    slots = context.get(_SLOTS)
    made = slots.underlined(heading, char, columns) if isinstance(slots, _Slots) else None
    return plaintext.underline(heading, char, columns) if made is None else made


class Renderer:
    """Renders issues for one project. It owns its templates (the project's over the built-in
    ones), labels, CSS inliner and Markdown parser, and keeps nothing between renders but caches
    keyed on their whole input: a long-running process (the preview) makes one and renders as
    often as files change; Jinja reloads a template whose file changed."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.templates = TemplateSet(settings.templates_dir)
        self.markdown = _markdown()
        self.text = plaintext.TextRenderer()
        self.templates.env.filters.update(wrap=plaintext.wrap, underline=_underline)
        self._inliner: Inliner | None = None  # premailer loads on the first render
        # Markdown already turned into HTML and text, by its whole input: an edit in the preview
        # changes a section or two, and the others need not be parsed again (~40% of a render)
        self._prose_done: dict[tuple[str, int], tuple[str, str]] = {}

    @property
    def inliner(self) -> Inliner:
        if self._inliner is None:
            self._inliner = Inliner()
        return self._inliner

    def _prose(self, source: str | None, slots: _Slots, level: int = 2) -> tuple[str, str]:
        """Markdown with merge fields -> (HTML with H tokens, text with T tokens). Its headings
        start at <h{level}> (`#` is h{level}), below the headings the template puts above it.
        Parsed once for both parts: the tokens differ only in their last letter."""
        if not source:
            return "", ""
        tokenized = slots.tokenizer(True)(source)
        key = (tokenized, level)  # the whole input: the slot numbers are in the text
        if (done := self._prose_done.get(key)) is not None:
            return done
        env = {"heading_level": level}
        tokens = self.markdown.parse(tokenized, env)
        html = self.markdown.renderer.render(tokens, self.markdown.options, env)
        text = _HTML_TOKEN.sub(lambda m: merge.token(int(m.group(1)), False), self.text.render(tokens))
        if len(self._prose_done) >= _PROSE_CACHE_SIZE:
            self._prose_done.clear()
        self._prose_done[key] = html, text
        return html, text

    def context(self, issue: Issue, stem: str, slots: _Slots) -> dict[str, object]:
        """The variables every template receives (README: "Writing a template")."""
        settings = self.settings
        labels = self.templates.labels(issue.language)
        sections = []
        for s in issue.sections:
            body_html, body_text = self._prose(s.body, slots, level=3)  # under the section's h2
            sections.append({"section": s, "html": body_html, "text": body_text})
        intro_html, intro_text = self._prose(issue.intro, slots)
        outro_html, outro_text = self._prose(issue.outro, slots)
        html, text = slots.tokenizer(True), slots.tokenizer(False)
        return {
            "issue": issue,
            "settings": settings,
            "brand": settings.brand,
            "palette": palette(settings.brand),
            "preheader_filler": PREHEADER_FILLER,
            "labels": labels,
            "lang": issue.language,
            "dir": text_direction(issue.language),
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
            "view_online": settings.view_online(stem),
            "why": labels.get("why", "").replace("{name}", settings.name),  # not format: a stray { shows
        }

    def render(self, issue: Issue, stem: str) -> Rendered:
        """Render an issue once for all recipients; merge fields stay tokens (see message.py)."""
        slots = _Slots()
        context = {**self.context(issue, stem, slots), _SLOTS: slots}
        name = issue.template
        mjml_src = self._render_template(f"{name}.mjml.j2", context)
        text = self._render_template(f"{name}.txt.j2", context)
        # fonts={}: no web-font <link>; a newsletter must not call out to Google Fonts on open
        try:
            result = mjml.mjml2html(mjml_src, fonts={})
        except ValueError as e:  # mjml-python's parser: markup it cannot read
            where = self.templates.find(f"{name}.mjml.j2") or f"{name}.mjml.j2"
            raise NewsletterError(f"{where}: the MJML it produced cannot be read ({e}); fix the template") from None
        try:
            css = self.templates.read(f"{name}.css").replace("BRAND_COLOR", self.settings.brand.color)
        except UnicodeDecodeError as e:
            raise NewsletterError(f"{self.templates.find(f'{name}.css')}: not UTF-8 text ({e.reason}); "
                                  "save it as UTF-8") from None
        try:
            html = self.inliner.inline(result, css)
        except RecursionError:  # cssutils parses nested blocks recursively
            raise NewsletterError(f"{self.templates.find(f'{name}.css') or f'{name}.css'} (or the template's "
                                  "<mj-style>): CSS nested too deep for the CSS inliner; flatten the nested "
                                  "@media, @supports or rules") from None
        subject = slots.tokenizer(False)(issue.subject)
        fields = slots.fields()
        return Rendered(issue, stem, subject, html, re.sub(r"\n{3,}", "\n\n", text), mjml_src, fields)

    def _render_template(self, file: str, context: dict[str, object]) -> str:
        """One template rendered; what is wrong with it is a message naming the file (and line)."""
        where = self.templates.find(file) or file
        try:
            return self.templates.env.get_template(file).render(**context)
        except TemplateNotFound as e:
            looked = " and ".join(str(d) for d in self.templates.dirs)
            raise NewsletterError(
                f"{e.name}: template not found in {looked}; fix `template:` in the issue, or add the "
                "file to templates/ beside newsletter.toml"
            ) from None
        except TemplateSyntaxError as e:
            raise NewsletterError(f"{e.filename or where}:{e.lineno}: {(e.message or '').rstrip('.')}; fix the template") from None
        except UnicodeDecodeError as e:
            raise NewsletterError(f"{where}: not UTF-8 text ({e.reason}); save it as UTF-8") from None
        except UndefinedError as e:
            raise NewsletterError(f"{self._template_line(e) or where}: {e.message}") from None
        except NewsletterError:
            raise  # a filter's own message
        except Exception as e:  # noqa: BLE001  what a template's own code raises ({{ n / 0 }}, {{ 1 + "a" }})
            raise NewsletterError(f"{self._template_line(e) or where}: {type(e).__name__}: {e}; "
                                  "fix the template") from None

    def _template_line(self, e: BaseException) -> str | None:
        """FILE:LINE of the template line that raised `e` (Jinja puts template frames in the traceback)."""
        dirs = [str(d) for d in self.templates.dirs]
        at = None
        for frame, line in traceback.walk_tb(e.__traceback__):
            name = frame.f_code.co_filename
            if any(name.startswith(d) for d in dirs):
                at = f"{name}:{line}"
        return at


def _markdown() -> MarkdownIt:
    """CommonMark with tables, strikethrough and bare http(s) URLs made links; raw HTML off."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": True})
    md.enable(["table", "strikethrough", "linkify"])
    # only what starts with http(s):// or is an email address: no "setup.py" made a link
    linkify = md.linkify
    assert linkify is not None  # linkify-it-py, a dependency
    linkify.set({"fuzzy_link": False})
    linkify.add("ftp:", None).add("//", None)  # issue links are http(s) or mailto only

    def heading(self: RendererHTML, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        level = int(token.tag[1]) + int(env.get("heading_level", 1)) - 1
        token.tag = f"h{min(level, 6)}"
        return self.renderToken(tokens, idx, options, env)

    md.add_render_rule("heading_open", heading)
    md.add_render_rule("heading_close", heading)
    return md


def text_direction(language: str) -> str:
    """"rtl" for a language written right to left (ar, he, fa, ur, ...), else "ltr"."""
    try:
        return "rtl" if Locale.parse(language.replace("-", "_")).text_direction == "rtl" else "ltr"
    except (ValueError, UnknownLocaleError):
        return "ltr"
