"""The stages every command shares: load an issue, render it once, run the pre-send checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .checks import check_issue
from .config import Settings
from .errors import IssueError, Problem
from .issue import Issue, load_issue
from .message import Rendered
from .personalize import sample_message
from .render import Renderer


@dataclass
class Prepared:
    """An issue file, validated, rendered once and checked."""

    path: Path
    issue: Issue
    rendered: Rendered
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def prepare(path: Path, settings: Settings, renderer: Renderer | None = None) -> Prepared:
    """Validate, render once and check an issue file; raises IssueError when it is invalid.
    Pass a `renderer` to reuse its templates and inliner across calls (the preview does)."""
    path = Path(path)  # a str too: scripts pass "issues/2021-03.yaml"
    if m := re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", path.stem):
        # the name is the issue's id: in mail headers, links, the send record and the outbox
        raise IssueError([Problem(path, None, "", f"the file name has a control character (U+{ord(m.group()):04X}, "
                                                  "a line break?); rename the file, e.g. 2021-03.yaml")])
    issue = load_issue(path, default_language=settings.language)
    renderer = renderer or Renderer(settings)
    if renderer.templates.find(f"{issue.template}.mjml.j2") is None:
        looked = " and ".join(str(d) for d in renderer.templates.dirs)
        raise IssueError([Problem(path, issue.line_of("template"), "template",
                                  f"no template {issue.template!r} ({issue.template}.mjml.j2 is not in {looked}); "
                                  "fix the name, or add its files to templates/ beside newsletter.toml")])
    rendered = renderer.render(issue, path.stem)
    return Prepared(path, issue, rendered, check_issue(issue, path, settings, rendered))


def write_rendered(prepared: Prepared, settings: Settings, out_dir: Path) -> list[Path]:
    """Write <stem>.html, .txt and .mjml as the sample reader gets them (see sample_message)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    r = prepared.rendered
    _, html, text = sample_message(r, settings)
    paths = []
    for suffix, content in ((".html", html), (".txt", text), (".mjml", r.mjml)):
        p = out_dir / f"{r.stem}{suffix}"
        p.write_text(content, encoding="utf-8")
        paths.append(p)
    return paths
