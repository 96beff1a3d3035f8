"""Which caniemail features an HTML email uses, and where: elements and attributes, CSS properties,
values, units, selectors and at-rules, from style attributes and <style> blocks.

Static, like Mailpit's HTML check: it reads the markup as sent and does not compute styles. Content of
conditional comments (`<!--[if mso]>`) is Outlook-for-Windows-only markup and is not scanned; the
comments themselves count as HTML comments. compat.py turns what this finds into a report.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

# slug -> where (a short description of the place) -> occurrences
Found = dict[str, Counter[str]]


@dataclass
class Scan:
    """What scan() finds: each feature's places, and the values its properties are given."""

    found: Found
    values: dict[str, set[str]]  # slug -> distinct values of the property that is the feature
    dark_only: set[str]  # features used only in dark-mode styles (see Scanner.dark)

_H = {f"h{i}": "html-h1-h6" for i in range(1, 7)}
_SEMANTICS = {t: "html-semantics" for t in (
    "article", "aside", "details", "figcaption", "figure", "footer", "header", "main", "mark", "nav",
    "section", "summary", "time")}
ELEMENTS = {
    "abbr": "html-abbr", "acronym": "html-acronym", "address": "html-address", "audio": "html-audio",
    "base": "html-base", "bdi": "html-bdi", "blockquote": "html-blockquote", "body": "html-body",
    "code": "html-code", "del": "html-del", "dfn": "html-dfn", "dialog": "html-dialog", "div": "html-div",
    "form": "html-form", "hr": "html-hr", "img": "html-img", "link": "html-link", "ul": "html-lists",
    "ol": "html-lists", "dl": "html-lists", "marquee": "html-marquee", "meter": "html-meter",
    "object": "html-object", "embed": "html-object", "p": "html-p", "picture": "html-picture",
    "pre": "html-pre", "progress": "html-progress", "rp": "html-rp", "rt": "html-rt", "ruby": "html-ruby",
    "select": "html-select", "small": "html-small", "span": "html-span", "strike": "html-strike",
    "strong": "html-strong", "style": "html-style", "svg": "html-svg", "table": "html-table",
    "textarea": "html-textarea", "video": "html-video", "wbr": "html-wbr", "map": "html-image-maps",
    **_H, **_SEMANTICS,
}
ATTRIBUTES = {
    "align": "html-align", "background": "html-background", "cellpadding": "html-cellpadding",
    "cellspacing": "html-cellspacing", "dir": "html-dir", "height": "html-height", "hidden": "html-hidden",
    "lang": "html-lang", "loading": "html-loading-attribute", "popover": "html-popover",
    "required": "html-required", "role": "html-role", "srcset": "html-srcset", "sizes": "html-srcset",
    "target": "html-target", "valign": "html-valign", "width": "html-width", "usemap": "html-image-maps",
    "aria-describedby": "html-aria-describedby", "aria-hidden": "html-aria-hidden",
    "aria-label": "html-aria-label", "aria-labelledby": "html-aria-labelledby", "aria-live": "html-aria-live",
    "inert": "css-inert-attribute",
}
INPUTS = {"checkbox", "hidden", "radio", "reset", "submit", "text"}  # html-input-<type>
IMAGES = {  # file extension of an <img src> -> slug
    "apng": "image-apng", "avif": "image-avif", "bmp": "image-bmp", "gif": "image-gif", "hdr": "image-hdr",
    "heif": "image-heif", "heic": "image-heif", "ico": "image-ico", "jpg": "image-jpg", "jpeg": "image-jpg",
    "mp4": "image-mp4", "png": "image-png", "svg": "image-svg", "tif": "image-tiff", "tiff": "image-tiff",
    "webp": "image-webp",
}


def _props(slug: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, slug)


_SIDES = ("top", "right", "bottom", "left")
_LOGICAL = [f"{a}-{b}" for a in ("inline", "block") for b in ("start", "end")]
PROPERTIES: dict[str, str] = {
    # a property whose name is its feature: css-<name>
    **{p: f"css-{p}" for p in (
        "accent-color", "align-items", "aspect-ratio", "backdrop-filter", "background-blend-mode",
        "background-clip", "background-color", "background-image", "background-origin",
        "background-position", "background-repeat", "background-size", "background", "border-collapse",
        "border-image", "border-spacing", "box-shadow", "box-sizing", "caption-side", "clear", "clip-path",
        "column-count", "cursor", "direction", "empty-cells", "filter", "flex-direction", "flex-wrap", "float",
        "font-kerning", "font-size-adjust", "font-size", "font-stretch", "font-weight", "height",
        "hyphenate-character", "hyphenate-limit-chars", "hyphens", "inline-size", "justify-content",
        "letter-spacing", "line-height", "list-style-image", "list-style-position", "list-style-type",
        "list-style", "mask-image", "max-block-size", "max-height", "max-inline-size", "max-width",
        "min-block-size", "min-height", "min-inline-size", "min-width", "mix-blend-mode", "object-fit",
        "object-position", "opacity", "orphans", "outline-offset", "overflow-wrap", "position", "resize",
        "shape-margin", "shape-outside", "tab-size", "table-layout", "text-align-last", "text-align",
        "text-decoration-color", "text-decoration-line", "text-decoration-skip-ink", "text-decoration-style",
        "text-decoration-thickness", "text-decoration", "text-emphasis-position", "text-indent",
        "text-justify", "text-orientation", "text-overflow", "text-shadow", "text-transform",
        "text-underline-offset", "text-underline-position", "text-wrap", "transform", "user-select",
        "vertical-align", "visibility", "white-space-collapse", "white-space", "widows", "width",
        "word-break", "word-spacing", "word-wrap", "writing-mode", "z-index", "color-scheme")},
    **_props("css-animation", "animation", "animation-name", "animation-duration", "animation-delay",
             "animation-iteration-count", "animation-timing-function", "animation-fill-mode",
             "animation-direction", "animation-play-state"),
    **_props("css-transition", "transition", "transition-property", "transition-duration",
             "transition-delay", "transition-timing-function"),
    **_props("css-block-inline-size", "block-size"),
    **_props("css-border", "border", "border-width", "border-style", "border-color",
             *(f"border-{s}{p}" for s in _SIDES for p in ("", "-width", "-style", "-color"))),
    **_props("css-border-radius", "border-radius",
             *(f"border-{v}-{h}-radius" for v in ("top", "bottom") for h in ("left", "right"))),
    **_props("css-border-radius-logical", *(f"border-{a}-{b}-radius" for a in ("start", "end")
                                            for b in ("start", "end"))),
    **_props("css-border-image", "border-image-source", "border-image-slice", "border-image-width",
             "border-image-outset", "border-image-repeat"),
    **_props("css-border-inline-block", "border-inline", "border-block"),
    **_props("css-border-inline-block-individual",
             *(f"border-{a}-{p}" for a in ("inline", "block") for p in ("color", "style", "width")),
             *(f"border-{x}" for x in _LOGICAL)),
    **_props("css-border-inline-block-longhand",
             *(f"border-{x}-{p}" for x in _LOGICAL for p in ("color", "style", "width"))),
    **_props("css-column-layout-properties", "columns", "column-fill", "column-rule", "column-rule-color",
             "column-rule-style", "column-rule-width", "column-span", "column-width"),
    **_props("css-font", "font"),
    **_props("css-gap", "gap", "row-gap", "column-gap"),
    **_props("css-grid-template", "grid-template", "grid-template-areas", "grid-template-columns",
             "grid-template-rows"),
    **_props("css-inset", "inset", "inset-block", "inset-inline", *(f"inset-{x}" for x in _LOGICAL)),
    **_props("css-left-right-top-bottom", *_SIDES),
    **_props("css-margin", "margin", *(f"margin-{s}" for s in _SIDES)),
    **_props("css-margin-block-start-end", "margin-block-start", "margin-block-end"),
    **_props("css-margin-inline-block", "margin-inline", "margin-block"),
    **_props("css-margin-inline-start-end", "margin-inline-start", "margin-inline-end"),
    **_props("css-padding", "padding", *(f"padding-{s}" for s in _SIDES)),
    **_props("css-padding-block-start-end", "padding-block-start", "padding-block-end"),
    **_props("css-padding-inline-block", "padding-inline", "padding-block"),
    **_props("css-padding-inline-start-end", "padding-inline-start", "padding-inline-end"),
    **_props("css-outline", "outline", "outline-color", "outline-style", "outline-width"),
    **_props("css-overflow", "overflow", "overflow-x", "overflow-y", "overflow-block", "overflow-inline"),
    **_props("css-scroll-snap", "scroll-snap-type", "scroll-snap-align", "scroll-snap-stop"),
    **_props("css-text-emphasis", "text-emphasis", "text-emphasis-color", "text-emphasis-style"),
    **_props("css-text-wrap", "text-wrap-mode", "text-wrap-style"),
}
FUNCTIONS = {
    "rgb": "css-rgb", "rgba": "css-rgba", "calc": "css-unit-calc", "min": "css-function-min",
    "max": "css-function-max", "clamp": "css-function-clamp", "light-dark": "css-function-light-dark",
    "var": "css-variables", "linear-gradient": "css-linear-gradient",
    "repeating-linear-gradient": "css-linear-gradient", "radial-gradient": "css-radial-gradient",
    "repeating-radial-gradient": "css-radial-gradient", "conic-gradient": "css-conic-gradient",
    "lch": "css-modern-color", "oklch": "css-modern-color", "lab": "css-modern-color",
    "oklab": "css-modern-color",
}
UNITS = {u: f"css-unit-{u}" for u in ("ch", "cm", "em", "ex", "in", "mm", "pc", "pt", "px", "rem", "vh",
                                      "vmax", "vmin", "vw")}
UNITS["%"] = "css-unit-percent"
SYSTEM_FONTS = {"system-ui", "ui-serif", "ui-sans-serif", "ui-rounded", "ui-monospace"}
MEDIA_FEATURES = {
    "prefers-color-scheme": "css-at-media-prefers-color-scheme",
    "prefers-reduced-motion": "css-at-media-prefers-reduced-motion",
    "orientation": "css-at-media-orientation", "hover": "css-at-media-hover", "any-hover": "css-at-media-hover",
    "-webkit-device-pixel-ratio": "css-at-media-device-pixel-ratio",
    "-webkit-min-device-pixel-ratio": "css-at-media-device-pixel-ratio",
    "-webkit-max-device-pixel-ratio": "css-at-media-device-pixel-ratio",
}
AT_RULES = {"font-face": "css-at-font-face", "import": "css-at-import", "keyframes": "css-at-keyframes",
            "-webkit-keyframes": "css-at-keyframes", "media": "css-at-media", "supports": "css-at-supports"}
PSEUDO_CLASSES = {p: f"css-pseudo-class-{p}" for p in (
    "active", "checked", "default", "first-child", "first-of-type", "focus-visible", "focus-within", "focus",
    "has", "hover", "lang", "last-child", "last-of-type", "link", "not", "nth-child", "nth-last-child",
    "nth-last-of-type", "nth-of-type", "only-child", "only-of-type", "target", "visited")}
PSEUDO_ELEMENTS = {p: f"css-pseudo-element-{p}" for p in (
    "after", "before", "first-letter", "first-line", "marker", "placeholder")}

# Features the code below finds by other means than the tables above
BY_CODE = {
    "html-doctype", "html-comments", "html-anchor-links", "html-mailto-links", "html-meta-color-scheme", "amp",
    *(f"html-input-{t}" for t in INPUTS), "html-button-reset", "html-button-submit", "image-base64",
    "css-comments", "css-nesting", "css-important", "css-variables", "css-display", "css-display-flex",
    "css-display-grid", "css-display-none", "css-sytem-ui", "css-intrinsic-size", "css-unit-initial",
    "css-selector-grouping", "css-selector-child", "css-selector-adjacent-sibling", "css-selector-general-sibling",
    "css-selector-descendant", "css-selector-type", "css-selector-universal", "css-selector-id",
    "css-selector-class", "css-selector-attribute", "css-selector-chaining",
}
# Features in the data that no static reading of the HTML can see, with the reason
NOT_SCANNED = {"bimi": "a DNS record and a mail header, not markup"}

_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_FUNCTION = re.compile(r"(?<![\w-])([a-z][a-z-]*)\(", re.IGNORECASE)
_UNIT = re.compile(r"(?<![\w#.-])[+-]?(?:\d+\.?\d*|\.\d+)(%|[a-z]+\b)", re.IGNORECASE)
_INTRINSIC = re.compile(r"\b(fit-content|min-content|max-content)\b", re.IGNORECASE)
MAX_DEPTH = 20  # nested @media / @supports / rules read; real style sheets nest two or three
_IMPORTANT = re.compile(r"!\s*important\s*$", re.IGNORECASE)
_DARK_MEDIA = re.compile(r"prefers-color-scheme\s*:\s*dark", re.IGNORECASE)
_OUTLOOK_DARK = re.compile(r"\[data-og[sa][cb]\b", re.IGNORECASE)
_HEX = re.compile(r"#[0-9a-f]+")
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")


def scannable() -> set[str]:
    """Every feature slug scan() can report."""
    tables = (ELEMENTS, ATTRIBUTES, IMAGES, PROPERTIES, FUNCTIONS, UNITS, MEDIA_FEATURES, AT_RULES,
              PSEUDO_CLASSES, PSEUDO_ELEMENTS)
    return {slug for table in tables for slug in table.values()} | BY_CODE


def split_outside(text: str, sep: str) -> list[str]:
    """`text` split at `sep` outside quotes and parentheses (url(data:...;base64,...) stays whole)."""
    if not ("(" in text or '"' in text or "'" in text):
        return text.split(sep)
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


class Scanner:
    """Collects features into `found` as it reads declarations, selectors and markup."""

    def __init__(self) -> None:
        self.found: Found = defaultdict(Counter)
        self.values: dict[str, set[str]] = defaultdict(set)
        self.light: set[str] = set()  # features used outside dark-mode styles
        self.dark = 0  # > 0 while reading styles that apply only in dark mode

    def add(self, slug: str, where: str, n: int = 1) -> None:
        self.found[slug][where] += n
        if not self.dark:
            self.light.add(slug)

    def result(self) -> Scan:
        return Scan(dict(self.found), dict(self.values), set(self.found) - self.light)

    # --- CSS -------------------------------------------------------------------------------
    def declarations(self, block: str, where: str) -> None:
        """`prop: value; ...` from a style attribute or a rule's body."""
        for name, value, slugs in _declarations(block):
            place = f"{name} in {where}" if name else where
            for slug in slugs:
                self.add(slug, place)
            if name in PROPERTIES and len(self.values[PROPERTIES[name]]) < 50:
                self.values[PROPERTIES[name]].add(value)

    def stylesheet(self, css: str, where: str, depth: int = 0) -> None:
        """A <style> block: rules, at-rules (recursing into @media and @supports), selectors. Blocks
        nested deeper than MAX_DEPTH are not read: each level copies its body, and Python's stack ends
        near 500 levels (a template's hundreds of nested @media were an internal error)."""
        if depth > MAX_DEPTH:
            return
        if "/*" in css:
            self.add("css-comments", where)
            css = _COMMENT.sub("", css)
        for prelude, body in _rules(css):
            if prelude.startswith("@"):
                self._at_rule(prelude, body, where, depth)
                continue
            place = f"{where}: {_short(prelude)}"
            # Outlook.com marks what it darkens with data-ogsc/data-ogsb: such rules apply only there
            dark = all(_OUTLOOK_DARK.match(sel.strip()) for sel in split_outside(prelude, ","))
            self.dark += dark
            self.selectors(prelude, place)
            if body is not None:
                if "{" in body:  # rules inside a rule: CSS nesting
                    self.add("css-nesting", place)
                    self.stylesheet(body, where, depth + 1)
                    body = re.sub(r"[^;{}]*\{[^{}]*\}", "", body)
                self.declarations(body, place)
            self.dark -= dark

    def _at_rule(self, prelude: str, body: str | None, where: str, depth: int) -> None:
        name = re.match(r"@([\w-]+)", prelude)
        kind = name.group(1).lower() if name else ""
        place = f"{where}: {_short(prelude)}"
        if kind in AT_RULES:
            self.add(AT_RULES[kind], place)
        if kind == "media":
            for feature in re.findall(r"\(\s*([\w-]+)", prelude.lower()):
                if feature in MEDIA_FEATURES:
                    self.add(MEDIA_FEATURES[feature], place)
        if body is None:
            return
        if kind in ("media", "supports", "document", "container", "layer"):
            dark = bool(kind == "media" and _DARK_MEDIA.search(prelude))
            self.dark += dark
            self.stylesheet(body, f"{where} {_short(prelude, 40)}", depth + 1)
            self.dark -= dark
        elif kind in ("font-face", "page"):
            self.declarations(body, place)

    def selectors(self, prelude: str, where: str) -> None:
        group = [s.strip() for s in split_outside(prelude, ",") if s.strip()]
        if len(group) > 1:
            self.add("css-selector-grouping", where)
        for selector in group:
            self.selector(selector, where)

    def selector(self, selector: str, where: str) -> None:
        sel = _STRING.sub('""', selector)
        for kind, name in re.findall(r"(::?)([\w-]+)", re.sub(r"\[[^\]]*\]", "[]", sel)):
            name = name.lower()
            if name in PSEUDO_ELEMENTS and (kind == "::" or name in ("before", "after", "first-letter",
                                                                      "first-line")):
                self.add(PSEUDO_ELEMENTS[name], where)
            elif kind == ":" and name in PSEUDO_CLASSES:
                self.add(PSEUDO_CLASSES[name], where)
        # drop pseudo parts and what is inside their parentheses; then read compounds and combinators
        bare = re.sub(r"::?[\w-]+(\((?:[^()]|\([^()]*\))*\))?", "", re.sub(r"\[[^\]]*\]", "[]", sel))
        for combinator in re.findall(r"\s*([>+~])\s*", bare):
            self.add({">": "css-selector-child", "+": "css-selector-adjacent-sibling",
                      "~": "css-selector-general-sibling"}[combinator], where)
        compounds = [c for c in re.split(r"\s*[>+~]\s*|\s+", bare.strip()) if c]
        if len(re.split(r"\s+", re.sub(r"\s*[>+~]\s*", ">", bare.strip()))) > 1:
            self.add("css-selector-descendant", where)
        for compound in compounds:
            simple = 0
            if re.match(r"[a-zA-Z][\w-]*", compound):
                self.add("css-selector-type", where)
                simple += 1
            elif compound.startswith("*"):
                self.add("css-selector-universal", where)
            for kind, slug in (("#", "css-selector-id"), (".", "css-selector-class"), ("[", "css-selector-attribute")):
                n = compound.count(kind)
                if n:
                    self.add(slug, where)
                    simple += n
            if simple > 1:
                self.add("css-selector-chaining", where)


@lru_cache(maxsize=4096)
def _declarations(block: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(property, value, features) of each declaration in `block`; MJML repeats the same style
    attribute on many elements, so each distinct one is read once."""
    out: list[tuple[str, str, tuple[str, ...]]] = []
    if "/*" in block:
        out.append(("", "", ("css-comments",)))
        block = _COMMENT.sub("", block)
    for part in split_outside(block, ";"):
        name, colon, value = part.partition(":")
        name, value = name.strip().lower(), value.strip()
        # vendor properties (mso-*, -webkit-*) address one client that knows them; caniemail has none
        if colon and name and (name.startswith("--") or not name.startswith(("mso-", "-"))):
            bare = _IMPORTANT.sub("", value).strip().lower()
            out.append((name, bare, tuple(dict.fromkeys(_declaration(name, value)))))
    return tuple(out)


def _declaration(name: str, value: str) -> Iterator[str]:
    if name.startswith("--"):
        yield "css-variables"
    elif name in PROPERTIES:
        yield PROPERTIES[name]
    if _IMPORTANT.search(value):
        yield "css-important"
        value = _IMPORTANT.sub("", value).strip()
    low = _STRING.sub('""', value.lower())
    if name == "display":
        yield {"flex": "css-display-flex", "inline-flex": "css-display-flex", "grid": "css-display-grid",
               "inline-grid": "css-display-grid", "none": "css-display-none"}.get(low, "css-display")
    elif name == "font-family" and SYSTEM_FONTS & {f.strip(" \"'") for f in low.split(",")}:
        yield "css-sytem-ui"
    for fn in _FUNCTION.findall(low):
        if fn in FUNCTIONS:
            yield FUNCTIONS[fn]
    for unit in _UNIT.findall(_HEX.sub("", low)):
        if unit in UNITS:
            yield UNITS[unit]
    if _INTRINSIC.search(low):
        yield "css-intrinsic-size"
    if low == "initial":
        yield "css-unit-initial"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rules(css: str) -> Iterator[tuple[str, str | None]]:
    """(prelude, body) of each top-level rule or at-rule; body None for `@import ...;`."""
    i, n = 0, len(css)
    while i < n:
        m = re.compile(r"[{};]").search(css, i)
        if m is None:
            return
        prelude = css[i:m.start()].strip()
        if m.group() == ";" or m.group() == "}":
            if prelude.startswith("@"):
                yield prelude, None
            i = m.end()
            continue
        depth, j = 1, m.end()
        while j < n and depth:
            if css[j] == "{":
                depth += 1
            elif css[j] == "}":
                depth -= 1
            j += 1
        if prelude:
            yield prelude, css[m.end():j - 1]
        i = j


def scan(html: str) -> Scan:
    """Every feature `html` uses: slug -> {where: occurrences}, and the values of its properties."""
    from lxml import etree  # premailer's parser, already loaded by the renderer

    s = Scanner()
    if re.match(r"\s*<!doctype html\s*>", html, re.IGNORECASE):
        s.add("html-doctype", "<!doctype html>")
    doc = etree.fromstring(html, etree.HTMLParser())
    if doc is None:
        return s.result()
    for el in doc.iter():
        if el.tag is etree.Comment:
            text = (el.text or "").strip()
            s.add("html-comments", "conditional comments (Outlook)" if text.startswith(("[if", "<![endif]"))
                  else "comments")
            continue
        if not isinstance(el.tag, str):
            continue
        _element(s, el, el.tag.lower())
    return s.result()


def _element(s: Scanner, el: Any, tag: str) -> None:
    where = describe(el)
    if tag in ELEMENTS:
        s.add(ELEMENTS[tag], where)
    attrs = {k.lower(): v for k, v in el.attrib.items()}
    if tag == "html" and ({"amp4email", "\u26a14email"} & set(attrs)):
        s.add("amp", where)
    elif tag == "input" and attrs.get("type", "text").lower() in INPUTS:
        s.add(f"html-input-{attrs.get('type', 'text').lower()}", where)
    elif tag == "button" and attrs.get("type", "submit").lower() in ("reset", "submit"):
        s.add(f"html-button-{attrs.get('type', 'submit').lower()}", where)
    elif tag == "meta" and attrs.get("name", "").lower() in ("color-scheme", "supported-color-schemes"):
        s.add("html-meta-color-scheme", f'<meta name="{attrs["name"]}">')
    elif (tag == "ol" and "reversed" in attrs) or (tag == "li" and "value" in attrs):
        s.values["html-lists"].add(f"{tag} {'reversed' if tag == 'ol' else 'value'}")
    elif tag == "a":
        href = attrs.get("href", "").strip().lower()
        if href.startswith("#"):
            s.add("html-anchor-links", where)
        elif href.startswith("mailto:"):
            s.add("html-mailto-links", where)
    elif tag == "img":
        src = attrs.get("src", "").strip()
        if src.lower().startswith("data:image/"):
            s.add("image-base64", where)
        else:
            ext = urlsplit(src).path.rsplit(".", 1)[-1].lower() if "." in urlsplit(src).path else ""
            if ext in IMAGES:
                s.add(IMAGES[ext], where)
    elif tag == "style":
        if attrs.get("media"):
            s.add("css-at-media", f'<style media="{_short(attrs["media"], 40)}">')
        s.stylesheet(el.text or "", "<style>")
    for name in attrs:
        if name in ATTRIBUTES:
            s.add(ATTRIBUTES[name], f"{name}= on {where}")
    if attrs.get("style"):
        s.declarations(attrs["style"], f"style= of {where}")


def describe(el: Any) -> str:
    """`<td.nl-prose>`, or `<p> in .nl-prose` after the nearest ancestor with a class: enough to find it."""
    tag = str(el.tag).lower()
    cls = (el.get("class") or "").split()
    if cls:
        return f"<{tag}.{cls[-1]}>"
    parent, depth = el.getparent(), 0
    while parent is not None and depth < 8:
        pcls = (parent.get("class") or "").split()
        if pcls:
            return f"<{tag}> in .{pcls[-1]}"
        parent, depth = parent.getparent(), depth + 1
    return f"<{tag}>"
