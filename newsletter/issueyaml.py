"""The issue file's YAML, bounded while it is parsed: no anchors or aliases, limited depth, values and
sections, so that no file can make `check` run for minutes or fill the memory.

libyaml (PyYAML's C parser) reads the 15 KB example in under a millisecond where ruamel.yaml's pure-Python
round-trip loader took 30-45 ms, and the live preview re-reads the issue on every save. Only the parser's
events are used: the guard sees each one first, and issuetree.py builds plain data and the line index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yaml.error import MarkedYAMLError, YAMLError
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, MappingStartEvent, NodeEvent, ScalarEvent
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.scanner import Scanner

from .issuetext import _LONG_NUMBER, MAX_SECTIONS, MAX_YAML_DEPTH, MAX_YAML_NODES, shorten
from .issuetree import Broken, Composer, Found, Loc, Tree

try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # PyYAML built without libyaml: the same events, only slower
    _CParser = None


class _Refused(Exception):
    """The YAML guard stopped parsing: going on would cost unbounded time or memory."""


class YAMLStopped(Exception):
    """The file could not be read into data: the guard's findings, and the syntax problem if any."""

    def __init__(self, found: list[Found], broken: Broken | None, by_parser: bool = False) -> None:
        super().__init__(broken.problem if broken else "refused")
        self.found, self.broken = found, broken
        self.by_parser = by_parser  # the parser refused the text (not the guard, not a duplicate key)


@dataclass
class _Frame:
    kind: str  # "map" | "seq"
    loc: Loc
    items: int = 0
    key: Any = None
    expect_key: bool = True


class _Guard:
    """Watches every parser event before the composer sees it.

    Anything walking a tree that keeps aliases expands them (a 1 KB alias bomb became 7.9 GB in 251 s);
    a composer recurses per nesting level, and pure-Python scanners slow down quadratically with flow
    nesting. So: aliases become empty values and anchors, aliases and tags are reported; depth, node
    count and the number of sections stop the parse at once."""

    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.nodes = 0
        self.found: list[Found] = []

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
        if tagged.tag is not None:
            # a leading ! makes YAML read a tag, e.g. `body: ![chart](...)`
            self.found.append((loc, line, f"must be text, not a YAML tag ({shorten(str(tagged.tag), 30)}); quote "
                                          "it, or write Markdown as a `|` block on the next lines"))
            tagged.tag = None  # a tagged scalar stays text: its `implicit` flags say it is not plain
        if isinstance(event, ScalarEvent):
            if not event.style and len(event.value) > 1000 and _LONG_NUMBER.fullmatch(event.value):
                self.found.append((loc, line, "a number this long cannot be right; quote it if it is text"))
                event.value = ""
        elif isinstance(event, CollectionStartEvent):
            self.stack.append(_Frame("map" if isinstance(event, MappingStartEvent) else "seq", loc))
            if len(self.stack) > MAX_YAML_DEPTH:
                self._stop(loc, event, f"nested more than {MAX_YAML_DEPTH} levels deep; an issue needs 5 "
                                       "(sections > item > links > item > url)")
        return event


class _PureParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python parser: events only, nothing composed or constructed."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)


# YAML 1.1 (libyaml, PyYAML) reads NEL, LS and PS as line breaks; YAML 1.2 (and ruamel.yaml, which read
# issue files before) as text. As breaks they would split a pasted sentence into broken YAML and shift
# every later line number away from the editor's; so they stand in for characters the file does not
# hold while it is parsed, and come back in the values.
_BREAKS_1_1 = "\x85\u2028\u2029"


def _stand_ins(text: str) -> tuple[str, dict[int, str] | None]:
    """The text with NEL, LS and PS swapped for private-use characters it does not hold, and the way back."""
    if not any(c in text for c in _BREAKS_1_1):
        return text, None
    free = [chr(c) for c in range(0xE000, 0xE100) if chr(c) not in text][:3]
    there = str.maketrans(dict(zip(_BREAKS_1_1, free)))
    return text.translate(there), str.maketrans(dict(zip(free, _BREAKS_1_1)))


def _read(text: str, parser_class: Any, back: dict[int, str] | None) -> Tree:
    guard = _Guard()
    parser = parser_class(text)

    def next_event() -> Any:
        event = parser.get_event()
        if back and type(event) is ScalarEvent:
            event.value = event.value.translate(back)
        return guard.see(event)

    composer = Composer(next_event)
    try:
        tree = composer.document()
    except _Refused:
        raise YAMLStopped(guard.found, None) from None
    except Broken as e:
        raise YAMLStopped(guard.found, e) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise YAMLStopped(guard.found, Broken(mark.line + 1 if mark else 1, str(e.problem or e)), True) from None
    except YAMLError as e:
        raise YAMLStopped(guard.found, Broken(1, str(e)), True) from None
    tree.found = guard.found
    return tree


def read_yaml(text: str) -> Tree:
    """The issue file's YAML as a Tree; raises YAMLStopped with what is wrong and where."""
    text, back = _stand_ins(text)
    if _CParser is not None:
        try:
            return _read(text, _CParser, back)
        except YAMLStopped as e:
            if not e.by_parser:
                raise
            # libyaml refuses some YAML that PyYAML's pure-Python parser (like ruamel.yaml before it)
            # reads: a tag that starts `![`, as a Markdown image at the start of a text does, and
            # "\uD800" escapes. So when libyaml refuses a file, that parser reads it again and has the
            # last word: a refused file costs ~20 ms more, and the editor is told what ruamel.yaml told.
    return _read(text, _PureParser, back)
