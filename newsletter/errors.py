"""One root exception; every message says where (FILE:LINE) and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One located finding: an error or a warning, printed as `FILE:LINE: field: message`."""

    file: Path | str
    line: int | None
    field: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        field = f" {self.field}:" if self.field else ""
        kind = " warning:" if self.severity == "warning" else ""
        return f"{where}:{field}{kind} {self.message}"


class NewsletterError(Exception):
    """Root of every error the library raises; the CLI turns it into a message and an exit code."""


class ConfigError(NewsletterError):
    """newsletter.toml or an environment variable is missing or wrong."""


class IssueError(NewsletterError):
    """An issue file is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SubscriberListError(NewsletterError):
    """A subscriber list cannot be read at all (missing file, no email column)."""


class UsageError(NewsletterError):
    """The library was asked for something that cannot work as asked (e.g. a test send without
    preview addresses)."""
