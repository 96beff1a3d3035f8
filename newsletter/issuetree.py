"""An issue file's YAML events -> plain data (dicts, lists, scalars) and the line of every field.

Built here rather than by a YAML library's composer and constructor, so that nothing but plain data and
an index of lines is made: ~1 µs an event. The events have passed the guard (issueyaml.py) first: no
aliases reach this module, and the nesting is bounded, so the recursion is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from yaml.events import (DocumentStartEvent, MappingEndEvent, MappingStartEvent, ScalarEvent, SequenceEndEvent,
                         SequenceStartEvent, StreamEndEvent)

from .issuetext import shorten

Loc = tuple[Any, ...]  # a field path, e.g. ("sections", 2, "image")
Found = tuple[Loc, int, str]  # (field path, line, message)


class Broken(Exception):
    """The text is not YAML, or not YAML that makes one mapping: (line, what is wrong)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line, self.problem = line, problem


# --- plain scalars ------------------------------------------------------------------------------------
# YAML 1.2, as ruamel.yaml resolved plain scalars when it read issue files (`title: yes` stays text, only
# true and false are booleans), or YAML 1.1 under a `%YAML 1.1` directive, as ruamel.yaml did too. Timestamps stay text, so that pydantic validates dates (2021-02-30
# becomes a located error, not an exception thrown while reading).

_NULL = frozenset(("", "~", "null", "Null", "NULL"))
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_BOOL_11 = _BOOL | dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "on", "On", "ON"), True) \
                 | dict.fromkeys(("n", "N", "no", "No", "NO", "off", "Off", "OFF"), False)
_FLOAT = re.compile(r"""[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                       |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                       |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
                       |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)""", re.VERBOSE)
_FLOAT_11 = re.compile(r"""[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                          |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                          |\.[0-9_]+(?:[eE][-+][0-9]+)?
                          |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                          |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)""", re.VERBOSE)
_INT = re.compile(r"[-+]?(?:0b[0-1_]+|0o?[0-7_]+|[0-9_]+|0x[0-9a-fA-F_]+)")
_INT_11 = re.compile(r"""[-+]?(?:0b[0-1_]+|0?[0-7_]+|(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+
                        |[1-9][0-9_]*(?::[0-5]?[0-9])+)""", re.VERBOSE)


def _sexagesimal(text: str, kind: Callable[[str], Any]) -> Any:
    value = kind("0")
    for part in text.split(":"):
        value = value * 60 + kind(part)
    return value


def _number(text: str, yaml11: bool) -> Any:
    """The int or float a plain scalar means, or None if it is not one."""
    is_float = (_FLOAT_11 if yaml11 else _FLOAT).fullmatch(text)
    if not is_float and not (_INT_11 if yaml11 else _INT).fullmatch(text):
        return None
    digits = text.replace("_", "").lower()
    sign = -1 if digits[0] == "-" else 1
    digits = digits.lstrip("+-")
    try:
        if is_float:
            if digits in (".inf", ".nan"):
                return sign * float(digits[1:])
            return sign * (_sexagesimal(digits, float) if ":" in digits else float(digits))
        if base := {"0b": 2, "0x": 16, "0o": 8}.get(digits[:2]):
            return sign * int(digits[2:], base)
        if ":" in digits:  # YAML 1.1 only: 1:30 is 90
            return sign * _sexagesimal(digits, int)
        return sign * int(digits, 8 if yaml11 and len(digits) > 1 and digits[0] == "0" else 10)
    except ValueError:  # "_", "0b_", "._": nothing but underscores and signs after all
        return None


def _scalar(event: ScalarEvent, yaml11: bool) -> Any:
    text = event.value
    if not event.implicit[0]:  # quoted, a block, or tagged: the text as written
        return text
    if text in _NULL:
        return None
    if (flag := (_BOOL_11 if yaml11 else _BOOL).get(text)) is not None:
        return flag
    if text[0] in "-+.0123456789" and (number := _number(text, yaml11)) is not None:
        return number
    return text


# --- the tree -----------------------------------------------------------------------------------------


@dataclass
class Tree:
    """An issue file's YAML as plain data, with the line of every mapping key and sequence item."""
    data: Any
    found: list[Found]  # what the guard reported
    lines: dict[Loc, int] = field(default_factory=dict)  # 1-based; () is the root
    literal: set[Loc] = field(default_factory=set)  # the texts written as `|` blocks

    def value_at(self, loc: Loc) -> Any:
        value = self.data
        for part in loc:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value

    def line_for(self, loc: Loc) -> int | None:
        """1-based line of the deepest key or item of `loc` that exists in the file."""
        line = self.lines.get(())
        for n in range(1, len(loc) + 1):
            if (here := self.lines.get(loc[:n])) is None:
                break
            line = here
        return line

    def line_in(self, loc: Loc, text_line: int | None) -> int | None:
        """The file line of line `text_line` of the text at `loc`: exact inside a `|` block (it starts on
        the line below its key, verbatim); otherwise the key's line."""
        line = self.line_for(loc)
        if text_line is not None and line is not None and loc in self.literal:
            line += 1 + text_line
        return line


_MERGE = object()  # a plain `<<` key: YAML's merge key


class Composer:
    """Parser events -> plain data, the line index and the first problem that is not syntax (a
    duplicate key), reported once the whole document has been read, so the guard has seen it all."""

    def __init__(self, next_event: Callable[[], Any]) -> None:
        self.next = next_event
        self.tree = Tree(None, [])
        self.yaml11 = False
        self.problem: Broken | None = None

    def _problem(self, line: int, text: str) -> None:
        if self.problem is None:
            self.problem = Broken(line, text)

    def document(self) -> Tree:
        self.next()  # stream start
        start = self.next()
        if isinstance(start, DocumentStartEvent):
            self.yaml11 = start.version == (1, 1)
            root = self.next()
            if isinstance(root, MappingStartEvent):
                self.tree.lines[()] = root.start_mark.line + 1
            self.tree.data = self.node(root, ())
            self.next()  # document end
            if not isinstance(after := self.next(), StreamEndEvent):
                raise Broken(after.start_mark.line + 1, "but found another document")
        if self.problem:
            raise self.problem
        return self.tree

    def node(self, event: Any, loc: Loc) -> Any:
        kind = type(event)
        if kind is ScalarEvent:
            if event.style == "|":
                self.tree.literal.add(loc)
            return _scalar(event, self.yaml11)
        if kind is SequenceStartEvent:
            items: list[Any] = []
            while type(event := self.next()) is not SequenceEndEvent:
                here = loc + (len(items),)
                self.tree.lines[here] = event.start_mark.line + 1
                items.append(self.node(event, here))
            return items
        return self.mapping(loc)

    def mapping(self, loc: Loc) -> dict[str, Any]:
        data: dict[str, Any] = {}
        seen: set[Any] = set()  # the keys as YAML reads them: 1 and 0x1 are the same key
        merged: list[dict[str, Any]] = []
        while type(key_event := self.next()) is not MappingEndEvent:
            key = self.key(key_event, loc)
            value_event = self.next()
            if key is _MERGE:
                if merged:
                    self._problem(key_event.start_mark.line + 1, 'found duplicate merge key "<<"')
                merged += self.merge(value_event, self.node(value_event, loc + ("<<",)), loc + ("<<",))
                continue
            name = key if isinstance(key, str) else str(key)
            self.tree.lines[loc + (name,)] = key_event.start_mark.line + 1
            value = self.node(value_event, loc + (name,))
            if key in seen:  # ruamel.yaml's words, with the values cut to one short line
                self._problem(key_event.start_mark.line + 1, f'found duplicate key "{shorten(name)}" with value '
                              f'"{shorten(str(value))}" (original value: "{shorten(str(data.get(name)))}")')
            seen.add(key)
            data[name] = value
        for source in merged:  # keys written in the mapping itself win, then the first merged mapping
            for name, value in source.items():
                data.setdefault(name, value)
        return data

    def key(self, event: Any, loc: Loc) -> Any:
        if type(event) is ScalarEvent:
            if event.implicit[0] and event.value == "<<":
                return _MERGE
            return _scalar(event, self.yaml11)
        value = self.node(event, loc + (None,))  # a mapping or sequence as a key: never a field name
        return str(tuple(value)) if isinstance(value, list) else str(value)

    def merge(self, event: Any, value: Any, loc: Loc) -> list[dict[str, Any]]:
        """The mappings a `<<` key merges in: a mapping or a list of mappings (as ruamel.yaml did)."""
        if isinstance(value, dict):
            return [value]
        if not isinstance(value, list):
            self._problem(event.start_mark.line + 1, "expected a mapping or list of mappings for merging, "
                                                     "but found scalar")
            return []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                kind = "sequence" if isinstance(item, list) else "scalar"
                self._problem(self.tree.lines[loc + (i,)], f"expected a mapping for merging, but found {kind}")
                return []
        return value
