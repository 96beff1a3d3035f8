"""`newsletter init`: a new newsletter project that works as it is, and that never overwrites a file."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from .templating import copy_builtin

STARTER = Path(__file__).resolve().parent / "starter"
# starter file -> where it goes in the project (gitignore is stored without its dot: the wheel
# and git both treat a packaged .gitignore specially)
FILES = {
    "newsletter.toml": "newsletter.toml",
    "issues/first-issue.yaml": "issues/first-issue.yaml",
    "subscribers/readers.csv": "subscribers/readers.csv",
    "gitignore": ".gitignore",
}


@dataclass
class InitResult:
    root: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # already there: left untouched


def init_project(root: Path, *, templates: bool = False, today: dt.date | None = None) -> InitResult:
    """Create a working newsletter in `root`: settings, one example issue, one small list and a
    .gitignore; with `templates`, copies of the built-in templates to edit. Existing files are kept."""
    result = InitResult(root)
    root.mkdir(parents=True, exist_ok=True)
    for src, dest in FILES.items():
        target = root / dest
        if target.exists():
            result.kept.append(target)
            continue
        text = (STARTER / src).read_text(encoding="utf-8")
        if src.startswith("issues/"):
            text = text.replace("date: 2026-01-31", f"date: {(today or dt.date.today()).isoformat()}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("x", encoding="utf-8") as f:  # "x": never overwrite, even in a race
            f.write(text)
        result.written.append(target)
    if templates:
        written = copy_builtin(root / "templates")
        result.written += written
        result.kept += [p for p in sorted((root / "templates").iterdir()) if p not in written]
    return result
