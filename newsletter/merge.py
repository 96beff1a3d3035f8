"""Merge fields: `{{ subscriber.name | default("reader") }}` inside an issue's prose.

Prose is rendered once per issue with each merge field replaced by a placeholder token; per recipient
only the tokens are filled. A merge field is a strict little grammar, checked when the issue is checked:

    {{ subscriber.<column> }}  or  {{ subscriber['column'] }}
    optionally piped through the filters in ALLOWED_FILTERS, whose arguments are text or number literals

Nothing else: no arithmetic ('x' * 3000000000 fills the memory), no `'%s' % subscriber` (the whole row
would be mailed), no attribute chains or method calls (''.__class__.__mro__ is a sandbox escape), no
`{% %}` statements (they would break the render-once/fill-per-recipient split). An issue file is data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, nodes

STATEMENT_RE = re.compile(r"\{%|\{#")

# A merge field is a column name and a filter or two; a longer one is a mistake or an attack, and the
# cap bounds what the Jinja parser is given (deep parentheses would exhaust its recursion).
MAX_EXPRESSION_CHARS = 200
# Per text field: a handful is normal (a name in the greeting); the cap bounds the parsing work.
MAX_FIELDS_PER_TEXT = 20
# Filter name -> the most literal arguments it takes. `e`/`escape` is left out on purpose: values are
# HTML-escaped for the HTML part already (it would escape twice), and the text part must stay raw.
# `replace` is left out because it can multiply a value's length for every recipient.
ALLOWED_FILTERS: dict[str, int] = {
    "default": 1, "d": 1,  # default("reader"): shown when the reader's cell is missing or empty
    "title": 0, "upper": 0, "lower": 0, "capitalize": 0,
    "trim": 1,  # trim(), or trim(".") to strip given characters
    "urlencode": 0,  # percent-encoded, for a value inside a link's URL (A, B & C -> A%2C%20B%20%26%20C)
}
EXAMPLE = '{{ subscriber.name | default("reader") }}'

# Only parsed, never rendered: a field is evaluated by `compile_field` from its checked shape.
_env = Environment(autoescape=False)


class MergeFieldError(ValueError):
    """A merge field that cannot work; the message says how to write it.

    `offset` is where the field starts in its text (for the line number), when known."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class MergeField:
    source: str  # the expression between the braces, stripped
    evaluate: Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class _Shape:
    """A checked merge field: the column it reads and the filters applied to it, in order."""

    column: str
    filters: tuple[tuple[str, tuple[Any, ...]], ...]


def _spans(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, stripped expression) of every `{{ ... }}` in text, in order.

    str.find keeps this linear: a regex like `\\{\\{(.*?)\\}\\}` rescans to the end of the text from
    every unclosed `{{`, which took 30 s on 40 KB of `{{`. An unclosed `{{` ends the scan with
    MergeFieldError."""
    pos = 0
    while (start := text.find("{{", pos)) != -1:
        end = text.find("}}", start + 2)
        if end == -1:
            raise MergeFieldError("unclosed merge field: '{{' without '}}'", start)
        yield start, end + 2, text[start + 2:end].strip()
        pos = end + 2


def _shown(expr: str) -> str:
    """The field as the editor wrote it, on one line."""
    return "{{ " + " ".join(expr.split()) + " }}"


def _literal(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Const):
        return isinstance(node.value, (str, int, float, bool))
    return isinstance(node, (nodes.Neg, nodes.Pos)) and isinstance(node.node, nodes.Const) \
        and isinstance(node.node.value, (int, float))


def _column(node: nodes.Node, shown: str) -> str:
    """The column a `subscriber.x` / `subscriber['x']` node reads; MergeFieldError for anything else."""
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "subscriber":
        column = node.attr
    elif (isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and node.node.name == "subscriber"
          and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)):
        column = node.arg.value
    else:
        names = {n.name for n in node.find_all(nodes.Name)} | ({node.name} if isinstance(node, nodes.Name) else set())
        if names - {"subscriber"}:
            bad = ", ".join(sorted(names - {"subscriber"}))
            raise MergeFieldError(f"merge field {shown} uses {bad}; only subscriber.<column> is available, "
                                  f"e.g. {EXAMPLE}")
        raise MergeFieldError(
            f"merge field {shown} is not allowed: write subscriber.<column> or subscriber['column'], "
            f"optionally followed by | and one of {', '.join(ALLOWED_FILTERS)}, e.g. {EXAMPLE}"
        )
    if not column or column.startswith("_"):
        raise MergeFieldError(f"merge field {shown}: a column name must not be empty or start with _")
    return column


def _shape(expr: str) -> _Shape:
    """Check one expression against the grammar; raises MergeFieldError saying how to write it."""
    shown = _shown(expr)
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise MergeFieldError(f"merge field of {len(expr):,} characters: a merge field is subscriber.<column> "
                              f"and a filter or two (at most {MAX_EXPRESSION_CHARS} characters)")
    try:
        body = _env.parse("{{ " + expr + " }}").body
    except TemplateSyntaxError as e:
        raise MergeFieldError(f"merge field {shown}: {e.message}") from None
    except RecursionError:  # pathological nesting, e.g. 150 parentheses
        raise MergeFieldError(f"merge field {shown} is nested too deeply; write subscriber.<column>") from None
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        raise MergeFieldError(f"merge field {shown}: write one expression, e.g. {EXAMPLE}")
    node: Any = body[0].nodes[0]
    filters: list[tuple[str, tuple[Any, ...]]] = []
    while isinstance(node, nodes.Filter):
        if node.name not in ALLOWED_FILTERS:
            raise MergeFieldError(f"merge field {shown}: filter {node.name!r} is not allowed; "
                                  f"the allowed filters are {', '.join(ALLOWED_FILTERS)}")
        if node.kwargs or node.dyn_args or node.dyn_kwargs or not all(_literal(a) for a in node.args):
            raise MergeFieldError(f"merge field {shown}: filter {node.name} takes only text or number "
                                  'literals, e.g. default("reader")')
        if len(node.args) > ALLOWED_FILTERS[node.name]:
            raise MergeFieldError(f"merge field {shown}: filter {node.name} takes at most "
                                  f"{ALLOWED_FILTERS[node.name]} argument(s)")
        filters.append((node.name, tuple(a.as_const() for a in node.args)))
        node = node.node
    return _Shape(_column(node, shown), tuple(reversed(filters)))


@lru_cache(maxsize=1024)
def _checked(expr: str) -> _Shape:
    """_shape, remembered: the same few fields recur in every text and at every render."""
    return _shape(expr)


def field_problems(text: str) -> list[tuple[int, str]]:
    """Every merge-field problem in text, as (character offset, message); empty when all is well."""
    found: list[tuple[int, str]] = []
    if m := STATEMENT_RE.search(text):
        found.append((m.start(), "only {{ subscriber.<field> }} merge fields are allowed here, "
                                 "not {% ... %} or {# ... #}"))
    count = 0
    try:
        for start, _end, expr in _spans(text):
            count += 1
            if count > MAX_FIELDS_PER_TEXT:
                found.append((start, f"more than {MAX_FIELDS_PER_TEXT} merge fields in one text; "
                                     "a newsletter needs a few (the reader's name, say)"))
                break
            try:
                _checked(expr)
            except MergeFieldError as e:
                found.append((start, str(e)))
    except MergeFieldError as e:
        found.append((e.offset or 0, str(e)))
    return found


def parse_fields(text: str) -> list[str]:
    """The merge-field expressions in `text`, validated; raises MergeFieldError (the first problem)."""
    problems = field_problems(text)
    if problems:
        offset, message = problems[0]
        raise MergeFieldError(message, offset)
    return [expr for _start, _end, expr in _spans(text)]


def referenced_columns(text: str) -> set[str]:
    """Subscriber columns a text's merge fields read (`subscriber.x` and `subscriber['x']`)."""
    return {_checked(expr).column for expr in parse_fields(text)}


def last_filter(expr: str) -> str | None:
    """The filter a checked expression applies last (`urlencode` in `subscriber.x | urlencode`)."""
    filters = _checked(expr).filters
    return filters[-1][0] if filters else None


def column_offsets(text: str) -> list[tuple[int, str]]:
    """(character offset, column) of each merge field in an already checked text."""
    return [(start, _checked(expr).column) for start, _end, expr in _spans(text)]


_MISSING = object()  # a missing or empty cell: what Jinja would see as Undefined


def compile_field(expr: str) -> MergeField:
    """Compile one checked expression into a plain function of the subscriber's fields.

    Built once per issue from the field's checked shape: a column look-up and a chain of the allowed
    filters (Jinja's own filter functions, called directly), with no template, no Undefined object
    and no per-reader dispatch on names. Same results as Jinja (tests/test_merge_compile.py)."""
    shape = _checked(expr)
    column = shape.column
    # (default value, None) for default/d; (None, function) for the others
    steps: list[tuple[Any, Callable[[Any], Any] | None]] = []
    for name, args in shape.filters:
        if name in ("default", "d"):
            steps.append((args[0] if args else "", None))
        else:
            steps.append((None, _bound(_env.filters[name], args)))

    if not steps:
        def evaluate(subscriber: Mapping[str, Any]) -> str:
            value = subscriber.get(column)
            return "" if value is None or value == "" else value if type(value) is str else str(value)
    elif len(steps) == 1 and steps[0][1] is None:  # the usual `| default("reader")`
        fallback = str(steps[0][0])

        def evaluate(subscriber: Mapping[str, Any]) -> str:
            value = subscriber.get(column)
            return fallback if value is None or value == "" else value if type(value) is str else str(value)
    else:
        def evaluate(subscriber: Mapping[str, Any]) -> str:
            value = subscriber.get(column)
            # an empty cell counts as missing, so that `default("reader")` applies to a blank name
            current: Any = _MISSING if value is None or value == "" else value
            for fallback_value, function in steps:
                if function is None:
                    if current is _MISSING:
                        current = fallback_value
                else:  # Jinja's filters see Undefined as ""
                    current = function("" if current is _MISSING else current)
            return "" if current is _MISSING else str(current)

    return MergeField(expr, evaluate)


def _bound(function: Callable[..., Any], args: tuple[Any, ...]) -> Callable[[Any], Any]:
    if not args:
        return function
    return lambda value: function(value, *args)


def tokenize(text: str, token_for: Callable[[str], str]) -> str:
    """Replace each merge field in `text` with the token `token_for(expression)` returns.

    Text after an unclosed `{{` is left as it is (validation reports it)."""
    out: list[str] = []
    pos = 0
    try:
        for start, end, expr in _spans(text):
            out += [text[pos:start], token_for(expr)]
            pos = end
    except MergeFieldError:
        pass
    out.append(text[pos:])
    return "".join(out)


class Filler:
    """A string with placeholder tokens, split once so that filling it is one join.

    Tokens look like NLMF<n>H (value HTML-escaped) or NLMF<n>T (value raw): letters and digits only,
    so Markdown, MJML, premailer and the text part all pass them through untouched.
    """

    TOKEN_RE = re.compile(r"NLMF(\d+)[HT]")

    def __init__(self, text: str):
        parts = self.TOKEN_RE.split(text)
        self.literals: list[str] = parts[0::2]
        self.slots: list[int] = [int(n) for n in parts[1::2]]

    def fill(self, values: Sequence[str]) -> str:
        out = [self.literals[0]]
        for slot, literal in zip(self.slots, self.literals[1:]):
            out.append(values[slot])
            out.append(literal)
        return "".join(out)


def token(slot: int, html: bool) -> str:
    return f"NLMF{slot}{'H' if html else 'T'}"
