"""The issue file's YAML, bounded while it is parsed: no anchors or aliases, limited depth, values
and sections, so that no file can make `check` run for minutes or fill the memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.events import (AliasEvent, CollectionEndEvent, CollectionStartEvent, MappingStartEvent,
                                NodeEvent, ScalarEvent)
from ruamel.yaml.parser import RoundTripParser

from .issuetext import _LONG_NUMBER, MAX_SECTIONS, MAX_YAML_DEPTH, MAX_YAML_NODES, shorten

Loc = tuple[Any, ...]  # a field path, e.g. ("sections", 2, "image")



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
            self.found.append((loc, line, f"must be text, not a YAML tag ({shorten(str(tagged.ctag), 30)}); quote "
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
