"""Where templates, CSS and labels come from: the project's own `templates/` first, file by file,
then the ones that ship inside the package.

The built-in set is the repository's top-level `templates/` folder: the wheel installs it as the
package data `newsletter/templates/` (see pyproject.toml); a source checkout reads it in place.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

from .errors import NewsletterError

LABELS_NAME = "labels.toml"


def builtin_dir() -> Path:
    """The templates that ship with newsletter."""
    here = Path(__file__).resolve().parent
    installed = here / "templates"  # a wheel's package data
    return installed if installed.is_dir() else here.parent / "templates"  # a source checkout


class TemplateSet:
    """The templates one project sees: `project_dir` (may be missing) over the built-in ones."""

    def __init__(self, project_dir: Path | None):
        self.dirs = [d for d in (project_dir, builtin_dir()) if d is not None and d.is_dir()]
        self.env = Environment(
            loader=ChoiceLoader([FileSystemLoader(str(d)) for d in self.dirs]),
            # MJML is markup: escape everything; the plain-text template is not
            autoescape=lambda name: name is None or not name.endswith(".txt.j2"),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._labels = self._read_labels()

    def find(self, name: str) -> Path | None:
        """The file `name` resolves to (the project's first), or None."""
        return next((d / name for d in self.dirs if (d / name).is_file()), None)

    def read(self, name: str) -> str:
        """The text of `name`, or "" when no folder has it (a template without CSS)."""
        path = self.find(name)
        return path.read_text(encoding="utf-8") if path else ""

    def _read_labels(self) -> dict[str, dict[str, str]]:
        # built-in first, then the project's: the project overrides label by label
        merged: dict[str, dict[str, str]] = {}
        for d in reversed(self.dirs):
            path = d / LABELS_NAME
            if not path.is_file():
                continue
            try:
                table = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as e:
                raise NewsletterError(f"{path}: {e}; fix the TOML syntax") from None
            except UnicodeDecodeError as e:
                raise NewsletterError(f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8") from None
            for language, labels in table.items():
                if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                    raise NewsletterError(f"{path}: [{language}] must be a table of text labels")
                merged.setdefault(language, {}).update(labels)
        return merged

    def labels(self, language: str) -> dict[str, str]:
        """Labels for a BCP 47 tag, falling back pt-BR -> pt -> en, label by label."""
        merged = dict(self._labels.get("en", {}))
        merged.update(self._labels.get(language.split("-")[0].lower(), {}))
        merged.update(self._labels.get(language, {}))
        return merged


def copy_builtin(dest: Path) -> list[Path]:
    """Copy the built-in templates into `dest` for editing; never overwrites. Returns what it wrote."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(builtin_dir().iterdir()):
        if src.is_file() and not src.name.startswith(("_", ".")) and not (dest / src.name).exists():
            shutil.copyfile(src, dest / src.name)
            written.append(dest / src.name)
    return written
