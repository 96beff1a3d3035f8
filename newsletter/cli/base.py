"""The command line's frame: the group, the error handling that turns the library's exceptions into
messages and exit codes, the consoles. The commands live beside it (editor, sending, lists, preview).

Exit codes: 0 done; 1 invalid input or failed checks; 2 usage; 3 incomplete send (run it again);
70 a bug in newsletter; 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import __version__
from ..errors import IssueError, NewsletterError, Problem, UsageError

if TYPE_CHECKING:  # the pipeline loads on first use, so that --help and --version answer at once
    from rich.console import Console

    from ..config import Settings
    from ..pipeline import Prepared

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 70, 130


class _LazyConsole:
    """A rich Console made on first use: rich costs ~15 ms to import, and check/render
    mostly print plain lines."""

    def __init__(self, stderr: bool):
        self.stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            # file=None: rich looks up sys.stdout/sys.stderr at each print, so a test's capture works
            self._console = Console(stderr=self.stderr, highlight=False, soft_wrap=True)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)


def say(text: str, color: str | None = None, *, stderr: bool = False, bold: bool = False) -> None:
    """One plain line; rich (~15 ms to import) is kept for send's table and progress bar."""
    click.secho(text, fg=color, bold=bold, err=stderr)


def print_table(table: Any) -> None:
    """A rich table on standard output. Into a pipe or a CI log (no terminal) it is printed at its
    natural width: rich would fit it into 80 columns, folding addresses and cutting paths short."""
    from rich.console import Console

    console = out.real()
    if console.is_terminal:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update_width(100_000)).maximum
    Console(width=max(console.width, natural), highlight=False, soft_wrap=True).print(table)


def _print_problems(problems: list[Problem]) -> None:
    for p in problems:
        say(str(p), "red" if p.severity == "error" else "yellow", stderr=True)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


class _Group(click.Group):
    """Turns the library's errors into a message and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IssueError as e:
            _print_problems(e.problems)
            say(f"✗ {_plural(len(e.problems), 'error')}: fix the issue file and run again",
                "red", stderr=True, bold=True)
            ctx.exit(EXIT_INVALID)
        except UsageError as e:
            say(f"error: {e}", "red", stderr=True)
            ctx.exit(EXIT_USAGE)
        except NewsletterError as e:
            say(f"error: {e}", "red", stderr=True)
            ctx.exit(EXIT_INVALID)
        except KeyboardInterrupt:
            say("interrupted", stderr=True)
            ctx.exit(EXIT_INTERRUPTED)
        except click.Abort:  # Ctrl-C or end of input at a question
            say("aborted", stderr=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
            try:  # and keep Python from failing again when it flushes standard output at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            ctx.exit(EXIT_INVALID)
        except OSError as e:
            say(f"error: {f'{e.filename}: ' if e.filename else ''}{e.strerror or e}", "red", stderr=True)
            ctx.exit(EXIT_INVALID)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except Exception as e:
            if (where := _state_store(ctx, e)) is not None:  # a full disk, a read-only folder, ...
                say(f"error: the state store {where} failed: {e}; make sure there is free space and "
                    "that its folder is writable (NEWSLETTER_STATE_DIR), or that PostgreSQL answers, "
                    "then run the same command again: a send goes on where it stopped, and reports "
                    "the readers whose message was out at that moment as unknown", "red", stderr=True)
                ctx.exit(EXIT_INVALID)
            # a bug, not bad input: say so briefly; the traceback is on request
            if os.environ.get("NEWSLETTER_DEBUG"):
                raise
            say(f"internal error: {type(e).__name__}: {e}. This is a bug in newsletter; rerun with "
                "NEWSLETTER_DEBUG=1 for the traceback and report it.", "red", stderr=True)
            ctx.exit(EXIT_BUG)


def _state_store(ctx: click.Context, e: Exception) -> str | None:
    """Where the state store is, when `e` is its database failing (SQLite or PostgreSQL); else None."""
    import sqlite3

    psycopg = sys.modules.get("psycopg")  # loaded only with NEWSLETTER_DATABASE_URL
    if not isinstance(e, sqlite3.Error) and not (psycopg is not None and isinstance(e, psycopg.Error)):
        return None
    from ..store.db import SQLITE_NAME, _without_password

    settings = ctx.obj._settings if isinstance(ctx.obj, _Context) else None
    if settings is not None and settings.database_url:
        return _without_password(settings.database_url)
    return str((settings.state_dir if settings is not None else Path(".newsletter")) / SQLITE_NAME)


class _ProviderChoice(click.Choice):
    """The registered providers, looked up only when --provider is used or --help shown."""

    def __init__(self) -> None:
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from ..providers import names

        return tuple(names())

    @choices.setter
    def choices(self, value: object) -> None:
        pass


class _Context:
    def __init__(self, config: Path | None):
        self.config_path = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from ..config import load_settings

            self._settings = load_settings(self.config_path)
        return self._settings

    def prepare(self, issue: Path) -> Prepared:
        from ..pipeline import prepare

        return prepare(issue, self.settings)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
              help="newsletter.toml to use (default: the nearest one from here up); templates/, "
                   "subscribers/ and outbox/ are beside it.")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Write, check, render and send an email newsletter from issue files in git."""
    ctx.obj = _Context(config)


def main() -> None:
    """Console-script entry point."""
    # pydantic looks for plugins through importlib.metadata on first use (~14 ms a start); this
    # command line has none. The library, imported by your own code, is left as it is.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    cli.main(prog_name="newsletter")


if __name__ == "__main__":
    main()
