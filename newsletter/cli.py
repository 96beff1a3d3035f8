"""The command line: parses, calls the library, turns errors into messages and exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from . import __version__
from .config import Settings, load_settings
from .errors import IssueError, NewsletterError, Problem
from .pipeline import Prepared, prepare, write_rendered

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_problems(problems: list[Problem]) -> None:
    for p in problems:
        style = "red" if p.severity == "error" else "yellow"
        err.print(str(p), style=style, markup=False)


class _Context:
    def __init__(self, config: Path | None):
        self.config_path = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


def _prepare(ctx: _Context, issue: Path) -> Prepared:
    return prepare(issue, ctx.settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
              help="newsletter.toml to use (default: ./newsletter.toml); templates/ is beside it.")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Write, check, render and send an email newsletter from issue files in git."""
    ctx.obj = _Context(config)


@cli.command()
@click.argument("issue", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def check(ctx: _Context, issue: Path) -> None:
    """Validate ISSUE and run the pre-send checks (exit 1 on any error)."""
    prepared = _prepare(ctx, issue)
    _print_problems(prepared.problems)
    r = prepared.rendered
    from .checks import html_size

    n_err, n_warn = len(prepared.errors), len(prepared.warnings)
    summary = (f"{issue}: {len(prepared.issue.sections)} sections, HTML {html_size(r):,} bytes, "
               f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}")
    if n_err:
        err.print(f"✗ {summary}", style="bold red", markup=False)
        raise SystemExit(1)
    out.print(f"✓ {summary}", style="green", markup=False)


@cli.command()
@click.argument("issue", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("out"),
              show_default=True, help="Folder for the .html, .txt and .mjml files.")
@click.pass_obj
def render(ctx: _Context, issue: Path, out_dir: Path) -> None:
    """Render ISSUE to HTML, plain text and MJML, filled for a sample reader."""
    prepared = _prepare(ctx, issue)
    _print_problems(prepared.warnings)
    for path in write_rendered(prepared, ctx.settings, out_dir):
        out.print(f"wrote {path} ({path.stat().st_size:,} bytes)", markup=False)
    if prepared.errors:
        _print_problems(prepared.errors)
        err.print("rendered, but `newsletter check` reports errors: fix them before sending", style="red")


def main() -> None:
    """Console-script entry point: library errors become messages and exit codes, never tracebacks."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except IssueError as e:
        _print_problems(e.problems)
        n = len(e.problems)
        err.print(f"✗ {n} error{'s' * (n != 1)}: fix the issue file and run again", style="bold red")
        sys.exit(e.exit_code)
    except NewsletterError as e:
        err.print(f"error: {e}", style="red", markup=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OSError as e:
        err.print(f"error: {e.filename or ''}: {e.strerror or e}", style="red", markup=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
