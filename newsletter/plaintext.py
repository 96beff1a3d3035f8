"""The text part: Markdown made plain text, wrapped by display width, URLs never broken.

Lines are filled to WIDTH columns, counted as a terminal or a monospaced mail client shows them: an
East Asian wide character or an emoji takes two columns, a combining mark or a joiner none. A word
longer than a line (a URL, most often) gets a line of its own and is never broken. No Markdown is
left in: emphasis and code marks go, struck-through text goes with its marks (the HTML shows it
as no longer true), headings in prose get a dotted rule, tables become aligned columns (or one
"header: value" line per cell when they do not fit), links become `label (URL)`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

WIDTH = 76  # columns; leaves room for a "> " when a reader quotes it in a reply
_ZERO_WIDTH = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\ufe0e", "\ufe0f"}
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_URL = re.compile(r"(https?://|mailto:|www\.)", re.IGNORECASE)
# Fast paths: text made only of these is one column a character (Latin, Greek, Cyrillic and the
# usual punctuation, without their combining marks); CJK is looked for only where this may occur.
_NARROW = re.compile(r"[\x20-\x7e\xa0-\xac\xae-\u02ff\u0370-\u0482\u048a-\u052f\u2010-\u2027\u2030-\u205e]*")
_MAYBE_CJK = re.compile(r"[\u1100-\u115f\u2e80-\ua4cf\ua960-\ua97f\uac00-\ud7a3\uf900-\ufaff\uff00-\uff60\U00016fe0-\U0001b2ff\U00020000-\U0003fffd]")


@lru_cache(maxsize=4096)
def char_width(ch: str) -> int:
    """Columns one character takes: 0, 1 or 2."""
    if ch in _ZERO_WIDTH or ord(ch) in _SKIN_TONES or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return 2
    return 1


def width(text: str) -> int:
    """Display width of a line: wide characters and emoji count 2, and a ZWJ sequence or a
    character with the emoji variation selector counts as the one glyph it shows."""
    if _NARROW.fullmatch(text):
        return len(text)
    total, previous = 0, ""
    for ch in text:
        if previous == "\u200d":
            w = 0  # the rest of a ZWJ sequence joins the glyph before it
        elif ch == "\ufe0f" and previous and char_width(previous) == 1:
            w = 1  # VS16 turns a text-style symbol (☀) into a two-column emoji
        else:
            w = char_width(ch)
        total += w
        previous = ch
    return total


@lru_cache(maxsize=4096)
def _cjk(ch: str) -> bool:
    """A wide letter (Han, kana, Hangul): lines may break next to it without a space."""
    return char_width(ch) == 2 and unicodedata.category(ch).startswith("L")


def _pieces(text: str) -> list[tuple[str, bool]]:
    """(piece, space before it) for wrapping: words split at spaces, and runs of wide characters
    split between characters (CJK breaks anywhere); URLs stay whole."""
    out: list[tuple[str, bool]] = []
    for word in text.split(" "):
        if not word:
            continue
        if not _MAYBE_CJK.search(word) or _URL.search(word):
            out.append((word, True))
            continue
        chunk, first, wide_before = "", True, False
        for ch in word:
            wide = _cjk(ch)
            # a break may come before or after a CJK character, never before punctuation (。、）)
            if chunk and (wide or wide_before) and not unicodedata.category(ch).startswith("P"):
                out.append((chunk, first))
                chunk, first = "", False
            chunk += ch
            wide_before = wide
        if chunk:
            out.append((chunk, first))
    return out


def wrap(text: str, columns: int = WIDTH, indent: str = "", first: str | None = None) -> str:
    """Fill `text` to `columns`: each line starts with `indent` (the first with `first`, when
    given); hard line breaks are kept; nothing is broken inside a word or a URL. Code blocks are
    not passed through here: they keep their lines as written."""
    lines = []
    lead = indent if first is None else first
    for paragraph in text.split("\n"):
        line, used, empty = lead, width(lead), True
        for piece, space in _pieces(paragraph):
            w = width(piece)
            gap = 1 if space and not empty else 0
            if not empty and used + gap + w > columns:
                lines.append(line.rstrip())
                line, used, gap = indent, width(indent), 0
            line += " " * gap + piece
            used += gap + w
            empty = False
        lines.append(line.rstrip())
        lead = indent
    return "\n".join(lines)


def underline(title: str, char: str, columns: int = WIDTH) -> str:
    """A heading with a line of `char` as wide as it shows (CJK and emoji count two columns)."""
    text = wrap(" ".join(title.split()), columns)
    return text + "\n" + char * max(width(line) for line in text.split("\n"))


class TextRenderer:
    """Markdown tokens (markdown-it) -> plain text."""

    def __init__(self, columns: int = WIDTH):
        self.columns = columns

    def render(self, tokens: list[Token]) -> str:
        return self._blocks(SyntaxTreeNode(tokens).children, self.columns, tight=False).strip("\n")

    def _blocks(self, nodes: Iterable[SyntaxTreeNode], columns: int, tight: bool) -> str:
        parts = [self._block(node, max(columns, 20)) for node in nodes]
        return ("\n" if tight else "\n\n").join(p for p in parts if p)

    def _block(self, node: SyntaxTreeNode, columns: int) -> str:
        kind = node.type
        if kind in ("paragraph", "heading"):
            text = wrap(self.inline(node.children[0]) if node.children else "", columns)
            if kind == "heading" and text:
                # a dotted rule: "=" and "-" are the template's title and section headings
                text += "\n" + "·" * max(width(line) for line in text.split("\n"))
            return text
        if kind in ("bullet_list", "ordered_list"):
            return self._list(node, columns)
        if kind == "blockquote":
            inner = self._blocks(node.children, columns - 2, tight=False)
            return "\n".join(("> " + line).rstrip() for line in inner.split("\n"))
        if kind in ("fence", "code_block"):
            return "\n".join(("    " + line).rstrip() for line in node.content.rstrip("\n").split("\n"))
        if kind == "hr":
            return "----"
        if kind == "table":
            return self._table(node, columns)
        return self._blocks(node.children, columns, tight=False)  # anything else: its content

    def _list(self, node: SyntaxTreeNode, columns: int) -> str:
        tight = all(p.hidden for item in node.children for p in item.children if p.type == "paragraph")
        number = int(node.attrGet("start") or 1)
        items = []
        for item in node.children:
            marker = f"{number}. " if node.type == "ordered_list" else "- "
            number += 1
            lead, indent = "  " + marker, " " * (2 + len(marker))
            body = self._blocks(item.children, columns - len(indent), tight)
            lines = body.split("\n")
            items.append("\n".join([lead + lines[0]] + [(indent + line).rstrip() for line in lines[1:]]))
        return ("\n" if tight else "\n\n").join(items)

    def _table(self, node: SyntaxTreeNode, columns: int) -> str:
        rows: list[list[str]] = []
        right: list[bool] = []
        for section in node.children:
            for tr in section.children:
                cells = [" ".join(self.inline(c.children[0]).split()) if c.children else "" for c in tr.children]
                rows.append(cells)
                if not right:
                    right = ["right" in str(c.attrGet("style") or "") for c in tr.children]
        if not rows:
            return ""
        header, body = rows[0], rows[1:]
        widths = [max(width(r[i]) for r in rows if i < len(r)) for i in range(len(header))]
        if sum(widths) + 2 * (len(widths) - 1) <= columns:
            def line(cells: list[str]) -> str:
                padded = []
                for i, w in enumerate(widths):
                    cell = cells[i] if i < len(cells) else ""
                    pad = " " * (w - width(cell))
                    padded.append(pad + cell if right[i] else cell + pad)
                return "  ".join(padded).rstrip()

            return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in body])
        # too wide for a line: one "header: value" line per cell, a blank line between rows
        records = []
        for r in body:
            records.append("\n".join(wrap(f"{h}: {v}", columns, indent="  ", first="") for h, v in zip(header, r)))
        return "\n\n".join(records)

    def inline(self, node: SyntaxTreeNode) -> str:
        """An inline node's text: marks dropped, links as `label (URL)`, images as `[alt]`."""
        out = []
        for child in node.children:
            kind = child.type
            if kind == "text" or kind == "code_inline":
                out.append(child.content)
            elif kind == "softbreak":
                out.append(" ")
            elif kind == "hardbreak":
                out.append("\n")
            elif kind == "s":
                continue  # struck-through text is what the HTML shows as no longer true
            elif kind == "link":
                out.append(self._link(child))
            elif kind == "image":
                alt = "".join(c.content for c in child.children if c.type == "text") or str(child.attrGet("alt") or "")
                out.append(f"[{alt}]" if alt else "")
            else:
                out.append(self.inline(child))
        return "".join(out)

    def _link(self, node: SyntaxTreeNode) -> str:
        label, url = self.inline(node).strip(), str(node.attrGet("href") or "")
        bare = url.removeprefix("mailto:")
        if not label or label in (url, bare) or node.markup in ("autolink", "linkify"):
            return bare if url.startswith("mailto:") else url
        return f"{label} ({bare if url.startswith('mailto:') else url})"
