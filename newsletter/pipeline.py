"""The stages most commands share: load an issue, render it once, run the pre-send checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checks import check_issue
from .config import Settings
from .errors import Problem
from .issue import Issue, load_issue
from .render import SAMPLE_SUBSCRIBER, Rendered, render_issue


@dataclass
class Prepared:
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


def prepare(path: Path, settings: Settings) -> Prepared:
    """Validate, render once and check an issue file; raises IssueError when it is invalid."""
    issue = load_issue(path, default_language=settings.language)
    rendered = render_issue(issue, settings, path.stem)
    return Prepared(path, issue, rendered, check_issue(issue, path, settings, rendered))


def sample_unsubscribe_url(settings: Settings, email: str = SAMPLE_SUBSCRIBER["email"]) -> str:
    """What a reader's unsubscribe link looks like, for previews (the token is a placeholder)."""
    if not settings.unsubscribe_url:
        return "#unsubscribe"
    return settings.unsubscribe_url.format(email=email, token="PREVIEW-TOKEN")


def write_rendered(prepared: Prepared, settings: Settings, out_dir: Path) -> list[Path]:
    """Write <stem>.html, .txt and .mjml, filled for a sample reader without a name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    r = prepared.rendered
    _, html, text = r.personalize(SAMPLE_SUBSCRIBER, sample_unsubscribe_url(settings))
    paths = []
    for suffix, content in ((".html", html), (".txt", text), (".mjml", r.mjml)):
        p = out_dir / f"{r.stem}{suffix}"
        p.write_text(content, encoding="utf-8")
        paths.append(p)
    return paths
