"""What a text field of an issue file may hold: the limits, the characters, the links.

Every text field is bounded here before the expensive work (Markdown, merge fields) runs; the findings
carry their line inside the text, so that issue.py can locate them in the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from markdown_it import MarkdownIt

from . import merge

SAFE_MARKDOWN_SCHEMES = ("http://", "https://", "mailto:")

# --- limits -------------------------------------------------------------------------------------------
# Each bounds the time and memory `check` spends on one file; each is far above what an issue needs
# (the 13-section example is 15 KB, its longest text 732 characters, its Markdown 53 marks).
# Gmail clips an email above ~102 KB of HTML, so nothing bigger can reach a reader whole anyway.
# A pure-Python YAML parser (ruamel.yaml then; PyYAML's now, when libyaml refuses a file, see
# issueyaml.py) spends ~3 µs a character on a long plain scalar, ~16 µs a comment line, ~100 µs a value
# in flow style. These three bound its work to well under a second (libyaml needs a fraction of it):
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
# merge-field syntax in a field that fills none: it would be mailed as written
_MERGE_SYNTAX = re.compile(r"\{\{.{0,40}?(\}\}|$)|\{%|\{#")
_NOT_MARKDOWN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# characters YAML readers refuse (libyaml's and PyYAML's printable set), found here with their line
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


def describe_char(c: str) -> str:
    cp = ord(c)
    name = _CHAR_NAMES.get(cp) or ("a line break" if c in _LINE_BREAKS else
                                   "not a character" if 0xD800 <= cp < 0xE000 or cp > 0xFFFD else "a control character")
    return f"U+{cp:04X} ({name})"


def shorten(value: str, width: int = 60) -> str:
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


def line_findings(v: str, *, merge_fields: bool = False, limit: int = MAX_LINE_CHARS) -> list[Finding]:
    """One-line fields: no line breaks or control characters (header injection), bounded length."""
    if len(v) > limit:
        return [Finding(None, f"is {len(v):,} characters; at most {limit:,} on one line")]
    found = []
    if m := _NOT_ONE_LINE.search(v.strip(" \t\r\n")):
        c = m.group()
        if c in _LINE_BREAKS:
            found.append(Finding(None, f"must be one line (a line break in a mail header is header injection): "
                                    f"{describe_char(c)} inside the text"))
        else:
            found.append(Finding(None, f"{describe_char(c)} is not allowed in one-line text (it can inject mail headers "
                                    "or break the layout); delete it"))
    if merge_fields:
        found += [Finding(None, message) for _, message in merge.field_problems(v)]
    elif m := _MERGE_SYNTAX.search(v):
        found.append(Finding(None, f"{m.group()} would reach every reader as written: merge fields are filled only in "
                                   "subject, title, intro, outro and section bodies; write the text out here"))
    return found


def markdown_text_findings(v: str) -> list[Finding]:
    """Markdown fields, before any Markdown is parsed: length, control characters, merge fields."""
    if len(v) > MAX_MARKDOWN_CHARS:
        return [Finding(None, f"is {len(v):,} characters; at most {MAX_MARKDOWN_CHARS:,} (an email is clipped by "
                           "Gmail at ~102 KB anyway): shorten it, or link to the full text")]
    found = []
    if m := _NOT_MARKDOWN.search(v):
        found.append(Finding(v.count("\n", 0, m.start()), f"{describe_char(m.group())} is not allowed in text; delete it"))
    for offset, message in merge.field_problems(v):
        found.append(Finding(v.count("\n", 0, offset), message))
    return found


def _link_problem(href: str) -> str | None:
    """Why a link target (as markdown-it normalized it: entities decoded, percent-encoded) is refused."""
    if not href.strip():
        return "a link without a URL; write [label](https://...)"
    if href.strip().lower().startswith(SAFE_MARKDOWN_SCHEMES):
        return None
    if href.startswith(MERGE_TOKEN):
        return ("a link whose URL starts with a merge field: a reader's cell would choose where the link goes "
                "(javascript: included); start it with https:// and put the field after, e.g. "
                "https://example.org/?c={{ subscriber.x | urlencode }}")
    shown = shorten(unquote(href))
    # what a browser would make of it: it drops tabs, line breaks and other controls inside a URL
    seen = re.sub(r"[\x00-\x20\x7f-\x9f]", "", unquote(href)).lower()
    if seen.startswith(("javascript:", "vbscript:", "data:", "file:")):
        return f"link {shown!r}: javascript:, data:, vbscript: and file: links are not allowed"
    return f"link {shown!r}: only http(s):// and mailto: links are allowed"


MERGE_TOKEN = "NLMF0H"  # what a merge field becomes before Markdown is parsed, as when rendering


def markdown_targets(text: str, token_for: Callable[[str], str] = lambda expr: MERGE_TOKEN
                     ) -> Iterator[tuple[int | None, str, str, str]]:
    """(line inside the text, "link" | "image", URL, alt text) of each link and image in Markdown, read
    as markdown-it reads it (entities decoded, reference links resolved). Merge fields become tokens
    first (`token_for(expression)`, letters and digits), as when rendering: a field inside a URL must
    not change its shape."""
    for block in _md.parse(merge.tokenize(text, token_for)):
        if block.type != "inline" or not block.children:
            continue
        line = block.map[0] if block.map else None
        for tok in block.children:
            if tok.type in ("softbreak", "hardbreak") and line is not None:
                line += 1
            elif tok.type == "link_open":
                yield line, "link", str(tok.attrGet("href") or ""), ""
            elif tok.type == "image":
                yield line, "image", str(tok.attrGet("src") or ""), tok.content


def unencoded_url_fields(text: str) -> Iterator[tuple[int | None, str]]:
    """(line inside the text, expression) of each merge field inside a link's or image's URL, after
    the URL's start, without `| urlencode` last: a value with a space, &, # or ? there breaks that
    reader's link (`?c={{ subscriber.company }}` for "A, B & C" ends the parameter at the &). A field
    that is the whole URL, or its start, is a URL of the reader's own and is left alone."""
    exprs: list[str] = []

    def numbered(expr: str) -> str:  # letters and digits: the URL keeps its shape, as when rendering
        exprs.append(expr)
        return f"NLMFURL{len(exprs) - 1}X"

    for line, _kind, url, _alt in markdown_targets(text, numbered):
        for m in re.finditer(r"NLMFURL(\d+)X", url):
            expr = exprs[int(m.group(1))]
            if m.start() > 0 and not _urlencoded(expr):
                yield line, expr


def _urlencoded(expr: str) -> bool:
    """Whether a merge field ends with `| urlencode`; a field that does not check counts as such:
    validation reports it, with its own message."""
    try:
        return merge.last_filter(expr) == "urlencode"
    except merge.MergeFieldError:
        return True


@lru_cache(maxsize=256)
def markdown_findings(text: str) -> tuple[Finding, ...]:
    """Links and images in Markdown: unsafe links (invalid), images without alt text (a check error),
    images not on https (a warning). Cached: validation and the checks ask about the same texts."""
    found: list[Finding] = []
    for line, kind, url, alt in markdown_targets(text):
        if kind == "link":
            if problem := _link_problem(url):
                found.append(Finding(line, problem))
            continue
        if not url.lower().startswith(("https://", "http://")):
            found.append(Finding(line, f"image {shorten(unquote(url))!r}: images must be https:// URLs"))
        elif not url.lower().startswith("https://"):
            found.append(Finding(line, f"image {shorten(url)} is not https: many mail clients block it",
                                 "warning", invalid=False))
        if not alt.strip():
            found.append(Finding(line, f"image {shorten(url)} has no alt text: write "
                                       f"![what it shows]({shorten(url)})", invalid=False))
    for line, expr in unencoded_url_fields(text):
        field = "{{ " + " ".join(expr.split()) + " }}"
        found.append(Finding(line, f"merge field {field} is inside a link's URL: a value with a space, &, # or ? "
                                   f"would break that reader's link; write {field[:-3]} | urlencode }}}}",
                             "warning", invalid=False))
    return tuple(found)


def _raise_first(found: list[Finding]) -> None:
    if found:
        raise ValueError(found[0].message)


# The validators below also run for an explicit `preheader: null` on optional fields: None passes.


def one_line(v: str | None) -> str | None:
    if v is None:
        return v
    _raise_first(line_findings(v))
    return v.strip()


def with_merge_fields(v: str | None) -> str | None:
    if v is None:
        return v
    _raise_first(line_findings(v, merge_fields=True))
    return v.strip()


def markdown_text(v: str | None) -> str | None:
    """Markdown fields: links and images are checked by parse_issue and check_issue, with their lines."""
    if v is None:
        return v
    _raise_first(markdown_text_findings(v))
    return v


def http_url(v: str) -> str:
    v = v.strip()
    if len(v) > MAX_URL_CHARS:
        raise ValueError(f"URL of {len(v):,} characters; at most {MAX_URL_CHARS:,}")
    if "{{" in v or "{%" in v:
        raise ValueError(f"{shorten(v)!r}: merge fields are not filled in links[].url or image.src; link to "
                         "one address for every reader (a Markdown link in the body may hold merge fields)")
    if not re.match(r"https?://[^\s/$.?#][^\s\x00-\x1f\x7f-\x9f]*$", v, re.IGNORECASE):
        if re.match(r"https?://[^\s/$.?#]", v, re.IGNORECASE) and (m := re.search(r"\s", v)):
            raise ValueError(f"{shorten(v)!r} has a space at character {m.start() + 1}; a URL has none (write a "
                             "space as %20)")
        raise ValueError(f"{shorten(v)!r} is not an http(s) URL; write it as https://...")
    return v
