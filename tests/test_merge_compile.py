"""compile_field's plain closures give what Jinja's evaluation gave, for every allowed filter."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import Undefined

from newsletter import merge

EXPRESSIONS = [
    "subscriber.name", "subscriber['name']", 'subscriber.name | default("читатель")', "subscriber.name | d('x')",
    "subscriber.name | default", "subscriber.name | default()", "subscriber.name | default(5)",
    "subscriber.name | default(-1.5)", "subscriber.name | default(true)", "subscriber.name | title",
    "subscriber.name | upper", "subscriber.name | lower", "subscriber.name | capitalize", "subscriber.name | trim",
    "subscriber.name | trim('.')", "subscriber.name | trim('-_ ')", 'subscriber.name | default("a b") | title',
    "subscriber.name | title | default('x')", "subscriber.name | trim | default('nobody') | upper",
    "subscriber.name | upper | lower | capitalize | title", "subscriber.name | default(7) | upper",
    "subscriber.company | default('') | trim", "subscriber['first name'] | default('friend')",
    "subscriber.email", "subscriber.name | d(0) | trim",
]
VALUES: list[Any] = [None, "", " ", "anna", "ANNA maria", "  anna  ", "o'neil-smith", "élise (bob)", "ß straße",
                     ".dots.", "-_x_-", "ǆemal", "ﬁne", "İstanbul", "\u00a0nbsp\u00a0", "<b>&amp;</b>", "0", "x" * 300]


def _jinja(expr: str, fields: dict[str, Any]) -> str:
    """The evaluation compile_field did before: Undefined for a missing cell, Jinja's filters."""
    shape = merge._checked(expr)
    value = fields.get(shape.column)
    current: Any = Undefined() if value in (None, "") else value
    for name, args in shape.filters:
        current = merge._env.filters[name](current, *args)
    return str(current)


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_compiled_fields_match_jinja(expr: str) -> None:
    field = merge.compile_field(expr)
    column = merge._checked(expr).column
    for value in VALUES:
        fields = {} if value is None else {column: value}
        assert field.evaluate(fields) == _jinja(expr, fields), (expr, value)
