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
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .errors import IssueError, Problem
from .issuetext import (_NOT_YAML, MARKUP_CHARS, MAX_FILE_BYTES, MAX_FILE_LINES,
                        MAX_MARKDOWN_CHARS, MAX_MARKUP, MAX_PROBLEMS, MAX_SECTIONS, MAX_TEXT_CHARS,
                        MAX_YAML_NODES, Finding, describe_char, http_url, line_findings, markdown_findings,
                        markdown_text, markdown_text_findings, one_line, shorten, with_merge_fields)
from .issueyaml import Loc, Tree, YAMLStopped, read_yaml

def language_tag(v: str) -> str:
    """A language babel knows, as a BCP 47 tag (an issue's `language`, newsletter.toml's default)."""
    try:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,35}", v):
            raise ValueError
        Locale.parse(v.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        raise ValueError(f"{shorten(v)!r} is not a known BCP 47 language tag (e.g. en, ru, pt-BR)") from None
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Link(_Model):
    label: str = Field(min_length=1)
    url: str

    _label = field_validator("label")(one_line)
    _url = field_validator("url")(http_url)


class Image(_Model):
    src: str
    alt: str
    caption: str | None = None

    _caption = field_validator("caption")(one_line)

    @field_validator("src")
    @classmethod
    def _https(cls, v: str) -> str:
        v = http_url(v)
        if not v.lower().startswith("https://"):
            raise ValueError("images must be served over https:// (mail clients block http images)")
        return v

    @field_validator("alt")
    @classmethod
    def _alt(cls, v: str) -> str:
        alt = one_line(v)
        if not alt:
            raise ValueError("alt text is required: describe the picture for readers who cannot see it")
        return alt


class Section(_Model):
    title: str = Field(min_length=1)
    body: str
    links: list[Link] = Field(default_factory=list)
    image: Image | None = None

    _title = field_validator("title")(one_line)
    _body = field_validator("body")(markdown_text)


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
    _root: Tree | None = PrivateAttr(default=None)  # the YAML and its lines, for locating later findings

    def line_of(self, *loc: str | int, at: int | None = None, text_line: int | None = None) -> int | None:
        """The issue file's line for a field path, e.g. line_of("sections", 2, "image"); with `at` (a
        character offset) or `text_line` (0 = first), a line inside that field's `|` block."""
        if self._root is None:
            return None
        if at is not None and text_line is None:
            value = self._root.value_at(loc)
            text_line = value[:at].count("\n") if isinstance(value, str) else None
        return self._root.line_in(loc, text_line)

    @field_validator("subject", mode="before")
    @classmethod
    def _subject(cls, v: Any) -> Any:
        return with_merge_fields(v) if isinstance(v, str) else v

    _preheader = field_validator("preheader")(one_line)

    _title = field_validator("title")(with_merge_fields)

    _prose = field_validator("intro", "outro")(markdown_text)

    _language = field_validator("language")(language_tag)

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


def _field(loc: Loc) -> str:
    return ".".join(shorten(str(p), 40) for p in loc)


# --- loading ------------------------------------------------------------------------------------------


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
            found.append(Problem(path, line, "", f"{describe_char(m.group())} is not allowed in an issue file; delete it "
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
            found += [(loc, f) for f in line_findings(value, merge_fields=kind == "merge")]
            continue
        found += [(loc, f) for f in markdown_text_findings(value)]
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
    try:
        tree = read_yaml(text)
    except YAMLStopped as e:
        found = [Problem(path, line, _field(loc), message) for loc, line, message in e.found]
        # e.g. `<<: *base` fails once its alias is gone: the alias is the problem to tell
        if e.broken and not any(p.line == e.broken.line for p in found):
            found.append(Problem(path, e.broken.line, "yaml", f"{e.broken.problem}; fix the YAML syntax"))
        raise IssueError(_finish(found)) from None
    data = tree.data
    if not isinstance(data, dict):
        raise IssueError([Problem(path, 1, "", "an issue file is a YAML mapping (subject:, date:, sections:, ...)")])
    data.setdefault("language", default_language)
    findings = text_findings(data)
    problems = [Problem(path, line, _field(loc), message) for loc, line, message in tree.found]
    claimed = {loc for loc, _, _ in tree.found} | {loc for loc, f in findings if f.invalid}
    try:
        issue = Issue.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            if not _under(loc, claimed):  # our own finding there says more, with a better line
                problems.append(Problem(path, tree.line_for(loc), _field(loc), _message(err)))
    else:
        issue._root = tree
    if problems or any(f.invalid for _, f in findings):
        problems += [Problem(path, tree.line_in(loc, f.line), _field(loc), f.message)
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
    except IsADirectoryError:
        raise IssueError([Problem(path, None, "", "a folder, not an issue file; name a .yaml file in it")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise IssueError([_too_big(path)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise IssueError([Problem(path, line, "", f"not UTF-8 text ({e.reason}); save it as UTF-8")]) from None
    return parse_issue(text, path, default_language=default_language)
