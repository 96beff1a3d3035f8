"""Merge fields: `{{ subscriber.name | default("reader") }}` inside an issue's prose.

Prose is rendered once per issue with each merge field replaced by a placeholder token; per recipient
only the tokens are filled. A field is one Jinja *expression* over `subscriber`; statements (`{% %}`)
are refused so that the render-once/fill-per-recipient split stays exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

FIELD_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
STATEMENT_RE = re.compile(r"\{%|\{#")

# Prose expressions run in a sandbox: an issue file is data, not code.
_env = SandboxedEnvironment(autoescape=False)


class MergeFieldError(ValueError):
    """A merge field that cannot work; the message says how to write it."""


@dataclass(frozen=True)
class MergeField:
    source: str  # the expression between the braces, stripped
    evaluate: Callable[[Mapping[str, Any]], str]


def parse_fields(text: str) -> list[str]:
    """The merge-field expressions in `text`, validated; raises MergeFieldError."""
    if STATEMENT_RE.search(text):
        raise MergeFieldError(
            "only {{ subscriber.<field> }} merge fields are allowed here, not {% ... %} or {# ... #}"
        )
    exprs = []
    for m in FIELD_RE.finditer(text):
        expr = m.group(1).strip()
        try:
            ast = _env.parse("{{ " + expr + " }}")
        except TemplateSyntaxError as e:
            raise MergeFieldError(f"merge field {{{{ {expr} }}}}: {e.message}") from None
        names = meta.find_undeclared_variables(ast)
        if names - {"subscriber"}:
            bad = ", ".join(sorted(names - {"subscriber"}))
            raise MergeFieldError(
                f"merge field {{{{ {expr} }}}} uses {bad}; only subscriber.<column> is available, "
                'e.g. {{ subscriber.name | default("reader") }}'
            )
        exprs.append(expr)
    if "{{" in FIELD_RE.sub("", text):
        raise MergeFieldError("unclosed merge field: '{{' without '}}'")
    return exprs


def referenced_columns(text: str) -> set[str]:
    """Subscriber columns a text's merge fields read (`subscriber.x` and `subscriber['x']`)."""
    cols = set()
    for expr in parse_fields(text):
        cols.update(re.findall(r"subscriber\.(\w+)", expr))
        cols.update(re.findall(r"subscriber\[['\"](\w+)['\"]\]", expr))
    return cols


def compile_field(expr: str) -> MergeField:
    """Compile one expression into a function of the subscriber's fields."""
    template = _env.from_string("{{ " + expr + " }}")

    def evaluate(subscriber: Mapping[str, Any]) -> str:
        # empty columns are left out, so `default("reader")` applies to a blank name
        present = {k: v for k, v in subscriber.items() if v not in (None, "")}
        return template.render(subscriber=present)

    return MergeField(expr, evaluate)


def tokenize(text: str, token_for: Callable[[str], str]) -> str:
    """Replace each merge field in `text` with the token `token_for(expression)` returns."""
    return FIELD_RE.sub(lambda m: token_for(m.group(1).strip()), text)


class Filler:
    """A string with placeholder tokens, split once so that filling it is one join.

    Tokens look like NLMF<n>H (value HTML-escaped) or NLMF<n>T (value raw): letters and digits only,
    so Markdown, MJML, premailer and html2text all pass them through untouched.
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


@lru_cache(maxsize=16)
def filler(text: str) -> Filler:
    """The Filler for `text`, split once: the issue's render and each send's envelope share it."""
    return Filler(text)


def token(slot: int, html: bool) -> str:
    return f"NLMF{slot}{'H' if html else 'T'}"
