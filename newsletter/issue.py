"""The issue file: YAML -> validated `Issue`, with every error located as FILE:LINE: field: message."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

from . import merge
from .errors import IssueError, Problem

_md = MarkdownIt("commonmark", {"html": False})
SAFE_MARKDOWN_SCHEMES = ("http://", "https://", "mailto:")


def _one_line(v: str) -> str:
    v = v.strip()
    if "\n" in v or "\r" in v:
        raise ValueError("must be one line (a line break in a mail header is header injection)")
    return v


def _http_url(v: str) -> str:
    v = v.strip()
    if not re.match(r"https?://[^\s/$.?#][^\s]*$", v, re.IGNORECASE):
        raise ValueError(f"{v!r} is not an http(s) URL; write it as https://...")
    return v


def _with_merge_fields(v: str) -> str:
    try:
        merge.parse_fields(v)
    except merge.MergeFieldError as e:
        raise ValueError(str(e)) from None
    return v


def _safe_markdown(v: str) -> str:
    """Markdown links and images must be http(s) (or mailto: for links)."""
    _with_merge_fields(v)
    for tok in _md.parse(v):
        for child in tok.children or []:
            target = child.attrGet("href") or child.attrGet("src")
            if target and not str(target).lower().startswith(SAFE_MARKDOWN_SCHEMES):
                raise ValueError(f"link {target!r}: only http(s) and mailto: links are allowed")
    # markdown-it silently drops links it considers unsafe (javascript:): catch those too
    if re.search(r"\]\(\s*(javascript|data|vbscript|file):", v, re.IGNORECASE):
        raise ValueError("javascript:, data:, vbscript: and file: links are not allowed")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Link(_Model):
    label: str = Field(min_length=1)
    url: str

    _url = field_validator("url")(_http_url)


class Image(_Model):
    src: str
    alt: str
    caption: str | None = None

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
        if not v.strip():
            raise ValueError("alt text is required: describe the picture for readers who cannot see it")
        return v.strip()


class Section(_Model):
    title: str = Field(min_length=1)
    body: str
    links: list[Link] = Field(default_factory=list)
    image: Image | None = None

    _title = field_validator("title")(_one_line)
    _body = field_validator("body")(_safe_markdown)


class Issue(_Model):
    subject: str = Field(min_length=1, max_length=150)
    date: dt.date
    language: str = "en"
    preheader: str | None = None
    title: str | None = None
    intro: str | None = None
    outro: str | None = None
    template: str = "digest"
    sections: list[Section] = Field(min_length=1)
    _root: Any = PrivateAttr(default=None)  # the YAML tree, for locating later findings

    def line_of(self, *loc: str | int, at: int | None = None) -> int | None:
        """The issue file's line for a field path, e.g. line_of("sections", 2, "image");
        with `at`, the line of that character offset inside a `|` block's text."""
        if self._root is None:
            return None
        line = _line_for(self._root, loc)
        value: Any = self._root
        for part in loc:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return line
        if at is not None and line is not None and isinstance(value, LiteralScalarString):
            line += 1 + value[:at].count("\n")  # a literal block starts below its key, verbatim
        return line

    @field_validator("subject", mode="before")
    @classmethod
    def _subject(cls, v: Any) -> Any:
        return _with_merge_fields(_one_line(v)) if isinstance(v, str) else v

    _preheader = field_validator("preheader")(_one_line)

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        return _with_merge_fields(_one_line(v))
    _prose = field_validator("intro", "outro")(_safe_markdown)

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        try:
            Locale.parse(v.replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            raise ValueError(f"{v!r} is not a known BCP 47 language tag (e.g. en, ru, pt-BR)") from None
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", v):
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


# --- loading ----------------------------------------------------------------------------------------


def _plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)  # ruamel's scalar string subclasses -> plain str
    return node


def _line_for(root: Any, loc: tuple[Any, ...]) -> int | None:
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


def _message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field; check the spelling (see the issue-file reference in README.md)"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_type":
        # e.g. `body: ![img](...)`: YAML reads a leading ! as a tag, [ or { as a list or mapping
        return "must be text; quote it, or write Markdown as a `|` block on the next lines"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


class _Constructor(RoundTripConstructor):
    """Leaves dates as text so that pydantic validates them (2021-02-30 becomes a located error,
    not an exception thrown by the YAML loader)."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node))


def parse_issue(text: str, path: Path | str, *, default_language: str = "en") -> Issue:
    """Validate issue-file text; raises IssueError listing every problem with its line."""
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    try:
        root = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise IssueError([Problem(path, line, "yaml", f"{e.problem or e}; fix the YAML syntax")]) from None
    if not isinstance(root, CommentedMap):
        raise IssueError([Problem(path, 1, "", "an issue file is a YAML mapping (subject:, date:, sections:, ...)")])
    data = _plain(root)
    data.setdefault("language", default_language)
    try:
        issue = Issue.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc)
            problems.append(Problem(path, _line_for(root, loc), field, _message(err)))
        problems.sort(key=lambda p: p.line or 0)
        raise IssueError(problems) from None
    issue._root = root
    return issue


def load_issue(path: Path, *, default_language: str = "en") -> Issue:
    """Read and validate an issue file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IssueError([Problem(path, None, "", "no such issue file")]) from None
    except UnicodeDecodeError as e:
        raise IssueError([Problem(path, None, "", f"not UTF-8 text ({e.reason}); save it as UTF-8")]) from None
    return parse_issue(text, path, default_language=default_language)
