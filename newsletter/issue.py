"""The issue file: YAML -> validated `Issue`, with every error located as FILE:LINE: field: message.

An issue file is data from an editor's hands, or from anyone who can open a pull request: it must never
crash, hang or fill the memory of `check`. So the file is bounded before it is parsed (size, characters),
the YAML is bounded while it is parsed (no anchors or aliases, depth, node count, sections), and every
text field is bounded before the expensive work (Markdown, merge fields) runs. Every problem in a file is
reported at once, whichever stage found it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from babel import Locale, UnknownLocaleError
from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (AliasEvent, CollectionEndEvent, CollectionStartEvent, MappingStartEvent,
                                NodeEvent, ScalarEvent)
from ruamel.yaml.parser import RoundTripParser
from ruamel.yaml.scalarstring import LiteralScalarString

from . import merge
from .errors import IssueError, Problem

SAFE_MARKDOWN_SCHEMES = ("http://", "https://", "mailto:")

# --- limits -------------------------------------------------------------------------------------------
# Each bounds the time and memory `check` spends on one file; each is far above what an issue needs
# (the 13-section example is 15 KB, its longest text 732 characters, its Markdown 53 marks).
# Gmail clips an email above ~102 KB of HTML, so nothing bigger can reach a reader whole anyway.
# ruamel.yaml is pure Python: ~3 µs a character for a long plain scalar, ~16 µs a comment line,
# ~100 µs a value in flow style. These three bound its work to well under a second:
MAX_FILE_BYTES = 256_000  # checked before reading (a 50 MB file took 103 s); 2.5x what Gmail shows
MAX_FILE_LINES = 10_000  # the example has 150; 250,000 comment lines took 4 s
MAX_YAML_NODES = 5_000  # keys, values and items; 100 sections with 3 links each are ~3,600
MAX_YAML_DEPTH = 10  # an issue nests 5 deep (sections > 0 > links > 0 > url); 20,000 `[` overflowed
MAX_SECTIONS = 100  # 100,000 sections took over 300 s
MAX_LINE_CHARS = 1_000  # a one-line field: title, preheader, link label, alt text, caption
MAX_URL_CHARS = 2_000  # the longest URL that works everywhere
# One Markdown field, and all the Markdown of an issue together: 100,000 characters cannot fit an
# unclipped email. It also keeps every text far below libxml2's 10 MB text-node limit, above which
# premailer silently drops the paragraph.
MAX_MARKDOWN_CHARS = 100_000
MAX_TEXT_CHARS = 100_000
# markdown-it costs ~3 µs a character of prose but 25–85 µs for each `[`, emphasis mark or line
# (200 KB of `![` took 12 s), and a check parses every text three times (here, then the HTML and the
# text part); each code span, link or emphasis also becomes an element that premailer styles inline
# (49,000 code spans made 3.9 MB of HTML). So the marks of the whole issue are capped: a check stays
# around a second even for 2,000 list items. The 13-section example has 53; 100 sections like its ~400.
MAX_MARKUP = 2_000
MARKUP_CHARS = "[*_~`<&\n"
MAX_PROBLEMS = 100  # reported per file; a file with more is not the file you meant

_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on
# Unicode category Cc (C0, DEL, C1) plus Zl and Zp (U+2028, U+2029): none belongs in a mail header
# (and lone surrogates, which a "\uD800" escape can make and no encoder can write)
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Markdown may hold line breaks and tabs, but no other C0 or C1 control
_NOT_MARKDOWN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# characters the YAML reader refuses (ruamel's Reader.NON_PRINTABLE), found here with their line
_NOT_YAML = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CHAR_NAMES = {0: "NUL", 0x1b: "ESC", 0x7f: "DEL", 0x85: "NEL", 0x2028: "line separator",
               0x2029: "paragraph separator", 0xFEFF: "byte order mark"}
# a plain scalar this long that looks like a number: int() refuses over 4,300 digits with ValueError
_LONG_NUMBER = re.compile(r"[-+]?(0x[0-9a-f_]+|0o[0-7_]+|0b[01_]+|[0-9_.:]+(e[-+]?[0-9]+)?)", re.IGNORECASE)
MARKDOWN_FIELDS = ("intro", "outro", "body")

# The renderer's Markdown, but keeping every link: markdown-it's own check drops javascript: links
# silently, and only some spellings of them; here each one becomes an error with its line.
_md = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")
_md.validateLink = lambda url: True  # type: ignore[method-assign]


def _char(c: str) -> str:
    cp = ord(c)
    name = _CHAR_NAMES.get(cp) or ("a line break" if c in _LINE_BREAKS else
                                   "not a character" if 0xD800 <= cp < 0xE000 or cp > 0xFFFD else "a control character")
    return f"U+{cp:04X} ({name})"


def _cut(value: str, width: int = 60) -> str:
    """A value short enough to quote in a message."""
    value = " ".join(value.split())
    return value if len(value) <= width else value[:width - 1] + "…"


@dataclass(frozen=True)
class Finding:
    """A problem inside one text field.

    `line` counts lines inside the text (0 = its first line; None = the field as a whole, reported at its
    key); `invalid` findings make the file fail to load, the others are pre-send checks
    (checks.check_issue reports them for a valid issue)."""

    line: int | None
    message: str
    severity: str = "error"
    invalid: bool = True


def _line_findings(v: str, *, merge_fields: bool = False, limit: int = MAX_LINE_CHARS) -> list[Finding]:
    """One-line fields: no line breaks or control characters (header injection), bounded length."""
    if len(v) > limit:
        return [Finding(None, f"is {len(v):,} characters; at most {limit:,} on one line")]
    found = []
    if m := _NOT_ONE_LINE.search(v.strip(" \t\r\n")):
        c = m.group()
        if c in _LINE_BREAKS:
            found.append(Finding(None, f"must be one line (a line break in a mail header is header injection): "
                                    f"{_char(c)} inside the text"))
        else:
            found.append(Finding(None, f"{_char(c)} is not allowed in one-line text (it can inject mail headers "
                                    "or break the layout); delete it"))
    if merge_fields:
        found += [Finding(None, message) for _, message in merge.field_problems(v)]
    return found


def _markdown_text_findings(v: str) -> list[Finding]:
    """Markdown fields, before any Markdown is parsed: length, control characters, merge fields."""
    if len(v) > MAX_MARKDOWN_CHARS:
        return [Finding(None, f"is {len(v):,} characters; at most {MAX_MARKDOWN_CHARS:,} (an email is clipped by "
                           "Gmail at ~102 KB anyway): shorten it, or link to the full text")]
    found = []
    if m := _NOT_MARKDOWN.search(v):
        found.append(Finding(v.count("\n", 0, m.start()), f"{_char(m.group())} is not allowed in text; delete it"))
    for offset, message in merge.field_problems(v):
        found.append(Finding(v.count("\n", 0, offset), message))
    return found


def _link_problem(href: str) -> str | None:
    """Why a link target (as markdown-it normalized it: entities decoded, percent-encoded) is refused."""
    if not href.strip():
        return "a link without a URL; write [label](https://...)"
    if href.strip().lower().startswith(SAFE_MARKDOWN_SCHEMES):
        return None
    shown = _cut(unquote(href))
    # what a browser would make of it: it drops tabs, line breaks and other controls inside a URL
    seen = re.sub(r"[\x00-\x20\x7f-\x9f]", "", unquote(href)).lower()
    if seen.startswith(("javascript:", "vbscript:", "data:", "file:")):
        return f"link {shown!r}: javascript:, data:, vbscript: and file: links are not allowed"
    return f"link {shown!r}: only http(s):// and mailto: links are allowed"


@lru_cache(maxsize=256)
def markdown_findings(text: str) -> tuple[Finding, ...]:
    """Links and images in Markdown: unsafe links (invalid), images without alt text (a check error),
    images not on https (a warning). Cached: validation and the checks ask about the same texts."""
    found: list[Finding] = []
    # merge fields become tokens first, as when rendering: a field inside a URL must not change its shape
    source = merge.tokenize(text, lambda expr: "NLMF0H")
    for block in _md.parse(source):
        if block.type != "inline" or not block.children:
            continue
        line = block.map[0] if block.map else None
        for tok in block.children:
            if tok.type in ("softbreak", "hardbreak") and line is not None:
                line += 1
            elif tok.type == "link_open":
                if problem := _link_problem(str(tok.attrGet("href") or "")):
                    found.append(Finding(line, problem))
            elif tok.type == "image":
                src = str(tok.attrGet("src") or "")
                if not src.lower().startswith(("https://", "http://")):
                    found.append(Finding(line, f"image {_cut(unquote(src))!r}: images must be https:// URLs"))
                elif not src.lower().startswith("https://"):
                    found.append(Finding(line, f"image {_cut(src)} is not https: many mail clients block it",
                                         "warning", invalid=False))
                if not tok.content.strip():
                    found.append(Finding(line, f"image {_cut(src)} has no alt text: write "
                                               f"![what it shows]({_cut(src)})", invalid=False))
    return tuple(found)


def _raise_first(found: list[Finding]) -> None:
    if found:
        raise ValueError(found[0].message)


# The validators below also run for an explicit `preheader: null` on optional fields: None passes.


def _one_line(v: str | None) -> str | None:
    if v is None:
        return v
    _raise_first(_line_findings(v))
    return v.strip()


def _with_merge_fields(v: str | None) -> str | None:
    if v is None:
        return v
    _raise_first(_line_findings(v, merge_fields=True))
    return v.strip()


def _markdown(v: str | None) -> str | None:
    """Markdown fields: links and images are checked by parse_issue and check_issue, with their lines."""
    if v is None:
        return v
    _raise_first(_markdown_text_findings(v))
    return v


def _http_url(v: str) -> str:
    v = v.strip()
    if len(v) > MAX_URL_CHARS:
        raise ValueError(f"URL of {len(v):,} characters; at most {MAX_URL_CHARS:,}")
    if not re.match(r"https?://[^\s/$.?#][^\s\x00-\x1f\x7f-\x9f]*$", v, re.IGNORECASE):
        raise ValueError(f"{_cut(v)!r} is not an http(s) URL; write it as https://...")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Link(_Model):
    label: str = Field(min_length=1)
    url: str

    _label = field_validator("label")(_one_line)
    _url = field_validator("url")(_http_url)


class Image(_Model):
    src: str
    alt: str
    caption: str | None = None

    _caption = field_validator("caption")(_one_line)

    @field_validator("src")
    @classmethod
    def _https(cls, v: str) -> str:
        v = _http_url(v)
        if not v.lower().startswith("https://"):
            raise ValueError("images must be served over https:// (mail clients block http images)")
        return v

    @field_validator("alt")
    @classmethod
    def _alt(cls, v: str) -> str:
        alt = _one_line(v)
        if not alt:
            raise ValueError("alt text is required: describe the picture for readers who cannot see it")
        return alt


class Section(_Model):
    title: str = Field(min_length=1)
    body: str
    links: list[Link] = Field(default_factory=list)
    image: Image | None = None

    _title = field_validator("title")(_one_line)
    _body = field_validator("body")(_markdown)


class Issue(_Model):
    subject: str = Field(min_length=1, max_length=150)
    date: dt.date
    language: str = "en"
    preheader: str | None = None
    title: str | None = None
    intro: str | None = None
    outro: str | None = None
    template: str = "digest"
    sections: list[Section] = Field(min_length=1, max_length=MAX_SECTIONS)
    _root: Any = PrivateAttr(default=None)  # the YAML tree, for locating later findings

    def line_of(self, *loc: str | int, at: int | None = None, text_line: int | None = None) -> int | None:
        """The issue file's line for a field path, e.g. line_of("sections", 2, "image"); with `at` (a
        character offset) or `text_line` (0 = first), a line inside that field's `|` block."""
        if self._root is None:
            return None
        if at is not None and text_line is None:
            value = _value_at(self._root, loc)
            text_line = value[:at].count("\n") if isinstance(value, str) else None
        return _line_in(self._root, loc, text_line)

    @field_validator("subject", mode="before")
    @classmethod
    def _subject(cls, v: Any) -> Any:
        return _with_merge_fields(v) if isinstance(v, str) else v

    _preheader = field_validator("preheader")(_one_line)

    _title = field_validator("title")(_with_merge_fields)

    _prose = field_validator("intro", "outro")(_markdown)

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        try:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,35}", v):
                raise ValueError
            Locale.parse(v.replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            raise ValueError(f"{_cut(v)!r} is not a known BCP 47 language tag (e.g. en, ru, pt-BR)") from None
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", v):
            raise ValueError("a template name is letters, digits, - and _ (a file in templates/)")
        return v

    @property
    def heading(self) -> str:
        return self.title or self.subject

    def texts(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field path, text) of every field that may hold merge fields or Markdown."""
        found: list[tuple[tuple[str | int, ...], str | None]] = [
            (("subject",), self.subject), (("title",), self.title),
            (("intro",), self.intro), (("outro",), self.outro),
        ]
        found += [(("sections", i, "body"), s.body) for i, s in enumerate(self.sections)]
        return [(loc, text) for loc, text in found if text]


# --- locating -----------------------------------------------------------------------------------------

Loc = tuple[Any, ...]


def _field(loc: Loc) -> str:
    return ".".join(_cut(str(p), 40) for p in loc)


def _value_at(root: Any, loc: Loc) -> Any:
    value = root
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _line_for(root: Any, loc: Loc) -> int | None:
    """1-based line of the deepest key or item of `loc` that exists in the YAML tree."""
    node, line = root, None
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError):
            break
    if line is None and isinstance(root, CommentedMap):
        line = root.lc.line + 1
    return line


def _line_in(root: Any, loc: Loc, text_line: int | None) -> int | None:
    """The file line of line `text_line` of the text at `loc`: exact inside a `|` block (it starts on
    the line below its key, verbatim); otherwise the key's line."""
    line = _line_for(root, loc)
    if text_line is not None and line is not None and isinstance(_value_at(root, loc), LiteralScalarString):
        line += 1 + text_line
    return line


# --- the YAML, bounded while it is parsed -------------------------------------------------------------


class _Refused(Exception):
    """The YAML guard stopped parsing: going on would cost unbounded time or memory."""


@dataclass
class _Frame:
    kind: str  # "map" | "seq"
    loc: Loc
    items: int = 0
    key: Any = None
    expect_key: bool = True


class _Guard:
    """Watches every parser event before the composer sees it.

    The composer and anything walking the tree afterwards expand aliases (a 1 KB alias bomb became
    7.9 GB in 251 s) and recurse per nesting level; ruamel's scanner slows down quadratically with flow
    nesting. So: aliases become empty values and anchors, aliases and tags are reported; depth, node count
    and the number of sections stop the parse at once."""

    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.nodes = 0
        self.found: list[tuple[Loc, int, str]] = []  # (field path, line, message)

    def _place(self, event: NodeEvent) -> tuple[Loc, bool]:
        """The field path of this node, and whether it is a mapping key."""
        if not self.stack:
            return (), False
        frame = self.stack[-1]
        if frame.kind == "seq":
            frame.items += 1
            if frame.loc == ("sections",) and frame.items > MAX_SECTIONS:
                self._stop(frame.loc, event, f"more than {MAX_SECTIONS} sections; an email that long is clipped "
                                             "by Gmail anyway: split the issue")
            return frame.loc + (frame.items - 1,), False
        if frame.expect_key:
            frame.expect_key = False
            frame.key = event.value if isinstance(event, ScalarEvent) else "?"
            return frame.loc, True
        frame.expect_key = True
        return frame.loc + (frame.key,), False

    def _stop(self, loc: Loc, event: Any, message: str) -> None:
        self.found.append((loc, event.start_mark.line + 1, message))
        raise _Refused

    def _anchor(self, loc: Loc, line: int) -> None:
        if not self.found or self.found[-1][1] != line:  # once a line: a bomb has nine on each
            self.found.append((loc, line, "anchors and aliases (&x, *x) are not allowed in issue files; "
                                          "write the text out"))

    def see(self, event: Any) -> Any:
        if isinstance(event, CollectionEndEvent):
            self.stack.pop()
            return event
        if not isinstance(event, NodeEvent):
            return event
        loc, _is_key = self._place(event)
        line = event.start_mark.line + 1
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES:
            self._stop(loc, event, f"more than {MAX_YAML_NODES:,} YAML values (keys, texts, items); an issue "
                                   f"has at most {MAX_SECTIONS} sections: split it")
        if isinstance(event, AliasEvent):
            self._anchor(loc, line)
            return ScalarEvent(None, None, (False, True), "", event.start_mark, event.end_mark, style='"')
        if event.anchor is not None:
            self._anchor(loc, line)
            event.anchor = None
        tagged: Any = event  # scalar and collection-start events carry a tag
        if tagged.ctag is not None:
            # a leading ! makes YAML read a tag, e.g. `body: ![chart](...)`
            self.found.append((loc, line, f"must be text, not a YAML tag ({_cut(str(tagged.ctag), 30)}); quote "
                                          "it, or write Markdown as a `|` block on the next lines"))
            tagged.ctag = None
        if isinstance(event, ScalarEvent):
            if event.style is None and len(event.value) > 1000 and _LONG_NUMBER.fullmatch(event.value):
                self.found.append((loc, line, "a number this long cannot be right; quote it if it is text"))
                event.value = ""
        elif isinstance(event, CollectionStartEvent):
            self.stack.append(_Frame("map" if isinstance(event, MappingStartEvent) else "seq", loc))
            if len(self.stack) > MAX_YAML_DEPTH:
                self._stop(loc, event, f"nested more than {MAX_YAML_DEPTH} levels deep; an issue needs 5 "
                                       "(sections > item > links > item > url)")
        return event


class _GuardedParser(RoundTripParser):
    """ruamel's round-trip parser with every event passed through the loader's _Guard first."""

    def _fill(self) -> None:
        if self.current_event is None and self.state:
            self.current_event = self.loader.issue_guard.see(self.state())

    def check_event(self, *choices: Any) -> bool:
        self._fill()
        return super().check_event(*choices)

    def peek_event(self) -> Any:
        self._fill()
        return super().peek_event()

    def get_event(self) -> Any:
        self._fill()
        return super().get_event()


class _Constructor(RoundTripConstructor):
    """Leaves dates as text so that pydantic validates them (2021-02-30 becomes a located error,
    not an exception thrown by the YAML loader)."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node))


# --- loading ------------------------------------------------------------------------------------------


def _plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)  # ruamel's scalar string subclasses -> plain str
    return node


def _message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field; check the spelling (see the issue-file reference in README.md)"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_type":
        # e.g. `body: [link](...)`: YAML reads a leading [ or { as a list or mapping
        return "must be text; quote it, or write Markdown as a `|` block on the next lines"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def _too_big(path: Path | str) -> Problem:
    return Problem(path, 1, "", f"the file is over {MAX_FILE_BYTES:,} bytes; an issue file is text (the "
                                "13-section example is 15 KB): is this the right file?")


def _file_problems(text: str, path: Path | str) -> list[Problem]:
    """What must be refused before YAML sees the text: its size, and characters YAML cannot read."""
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        return [_too_big(path)]
    if (lines := text.count("\n")) > MAX_FILE_LINES:
        return [Problem(path, MAX_FILE_LINES + 1, "", f"the file has {lines:,} lines; at most {MAX_FILE_LINES:,} "
                                                      "(the 13-section example has 150): is this the right file?")]
    found: list[Problem] = []
    last_line = 0
    for m in _NOT_YAML.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if line != last_line:  # one per line is enough
            found.append(Problem(path, line, "", f"{_char(m.group())} is not allowed in an issue file; delete it "
                                                 "(a text editor may show it as a box or ^@)"))
            last_line = line
        if len(found) >= 20:
            break
    return found


def _text_fields(data: Mapping[str, Any]) -> Iterator[tuple[Loc, Any, str]]:
    """(field path, raw value, kind) of every text field in the raw YAML data, valid or not."""
    for key, kind in (("subject", "merge"), ("preheader", "line"), ("title", "merge"), ("intro", "markdown")):
        yield (key,), data.get(key), kind
    sections = data.get("sections")
    for i, section in enumerate(sections[:MAX_SECTIONS] if isinstance(sections, list) else []):
        if not isinstance(section, Mapping):
            continue
        yield ("sections", i, "title"), section.get("title"), "line"
        yield ("sections", i, "body"), section.get("body"), "markdown"
        links = section.get("links")
        for j, link in enumerate(links[:MAX_YAML_NODES] if isinstance(links, list) else []):
            if isinstance(link, Mapping):
                yield ("sections", i, "links", j, "label"), link.get("label"), "line"
        image = section.get("image")
        if isinstance(image, Mapping):
            yield ("sections", i, "image", "alt"), image.get("alt"), "line"
            yield ("sections", i, "image", "caption"), image.get("caption"), "line"
    yield ("outro",), data.get("outro"), "markdown"


def text_findings(data: Mapping[str, Any]) -> list[tuple[Loc, Finding]]:
    """Every finding in the text fields of raw issue data, whether or not the issue validates:
    control characters, lengths, merge fields, the issue's Markdown budget, links and images."""
    found: list[tuple[Loc, Finding]] = []
    markdown: list[tuple[Loc, str]] = []
    chars = marks = 0
    over_budget = False
    for loc, value, kind in _text_fields(data):
        if not isinstance(value, str):
            continue  # pydantic reports the type
        if kind != "markdown":
            found += [(loc, f) for f in _line_findings(value, merge_fields=kind == "merge")]
            continue
        found += [(loc, f) for f in _markdown_text_findings(value)]
        if len(value) > MAX_MARKDOWN_CHARS:
            continue  # reported above, once is enough
        chars += len(value)
        marks += sum(value.count(c) for c in MARKUP_CHARS)
        if not over_budget and chars > MAX_TEXT_CHARS:
            over_budget = True
            found.append((loc, Finding(None, f"the issue's Markdown is over {MAX_TEXT_CHARS:,} characters by here; an "
                                             "email that long is clipped by Gmail: shorten it or split the issue")))
        elif not over_budget and marks > MAX_MARKUP:
            over_budget = True
            found.append((loc, Finding(None, f"the issue's Markdown has over {MAX_MARKUP:,} marks ([ * _ ~ ` < & and "
                                             "line breaks) by here; a long issue has a few hundred: is this text "
                                             "meant to be Markdown?")))
        markdown.append((loc, value))
    if not over_budget:  # parsing Markdown is the costly part: only within the budget
        for loc, value in markdown:
            found += [(loc, f) for f in markdown_findings(value)]
    return found


def _under(loc: Loc, claimed: set[Loc]) -> bool:
    return any(loc[:n] in claimed for n in range(len(loc) + 1))


def _finish(problems: list[Problem]) -> list[Problem]:
    """De-duplicated, in line order, at most MAX_PROBLEMS."""
    unique = sorted(dict.fromkeys(problems), key=lambda p: p.line or 0)
    if len(unique) > MAX_PROBLEMS:
        rest = len(unique) - MAX_PROBLEMS
        unique = unique[:MAX_PROBLEMS] + [Problem(unique[0].file, unique[MAX_PROBLEMS].line, "",
                                                  f"... and {rest:,} more problems; fix these first")]
    return unique


def parse_issue(text: str, path: Path | str, *, default_language: str = "en") -> Issue:
    """Validate issue-file text; raises IssueError listing every problem with its line."""
    if found := _file_problems(text, path):
        raise IssueError(found)
    guard = _Guard()
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.Parser = _GuardedParser
    yaml.issue_guard = guard  # type: ignore[attr-defined]  # read by _GuardedParser

    def guarded() -> list[Problem]:
        return [Problem(path, line, _field(loc), message) for loc, line, message in guard.found]

    try:
        root = yaml.load(text)
    except _Refused:
        raise IssueError(_finish(guarded())) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        found = guarded()
        if not any(p.line == line for p in found):  # e.g. `<<: *base` fails once its alias is gone
            found.append(Problem(path, line, "yaml", f"{e.problem or e}; fix the YAML syntax"))
        raise IssueError(_finish(found)) from None
    except YAMLError as e:
        raise IssueError(_finish(guarded() + [Problem(path, 1, "yaml", f"{e}; fix the YAML syntax")])) from None
    if not isinstance(root, CommentedMap):
        raise IssueError([Problem(path, 1, "", "an issue file is a YAML mapping (subject:, date:, sections:, ...)")])
    data = _plain(root)
    data.setdefault("language", default_language)
    findings = text_findings(data)
    problems = guarded()
    claimed = {loc for loc, _, _ in guard.found} | {loc for loc, f in findings if f.invalid}
    try:
        issue = Issue.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            if not _under(loc, claimed):  # our own finding there says more, with a better line
                problems.append(Problem(path, _line_for(root, loc), _field(loc), _message(err)))
    else:
        issue._root = root
    if problems or any(f.invalid for _, f in findings):
        problems += [Problem(path, _line_in(root, loc, f.line), _field(loc), f.message)
                     for loc, f in findings if f.severity == "error"]
        raise IssueError(_finish(problems))
    return issue


def load_issue(path: Path, *, default_language: str = "en") -> Issue:
    """Read and validate an issue file."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # never more: the file may be huge, or /dev/zero
    except FileNotFoundError:
        raise IssueError([Problem(path, None, "", "no such issue file")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise IssueError([_too_big(path)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise IssueError([Problem(path, line, "", f"not UTF-8 text ({e.reason}); save it as UTF-8")]) from None
    return parse_issue(text, path, default_language=default_language)
