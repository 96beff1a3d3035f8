"""The command line: parses, calls the library, prints, and decides every exit code.

Exit codes: 0 done; 1 invalid input or failed checks; 2 usage; 3 incomplete send (run it again);
70 a bug in newsletter; 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .errors import IssueError, NewsletterError, Problem, UsageError

if TYPE_CHECKING:  # the pipeline loads on first use, so that --help and --version answer at once
    from rich.console import Console

    from .campaign import Campaign
    from .config import Settings
    from .dispatch import SendReport
    from .pipeline import Prepared

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
        except OSError as e:
            say(f"error: {e.filename or ''}: {e.strerror or e}", "red", stderr=True)
            ctx.exit(EXIT_INVALID)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except Exception as e:  # a bug, not bad input: say so briefly; the traceback is on request
            if os.environ.get("NEWSLETTER_DEBUG"):
                raise
            say(f"internal error: {type(e).__name__}: {e}. This is a bug in newsletter; rerun with "
                "NEWSLETTER_DEBUG=1 for the traceback and report it.", "red", stderr=True)
            ctx.exit(EXIT_BUG)


class _ProviderChoice(click.Choice):
    """The registered providers, looked up only when --provider is used or --help shown."""

    def __init__(self) -> None:
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from .providers import names

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
            from .config import load_settings

            self._settings = load_settings(self.config_path)
        return self._settings

    def prepare(self, issue: Path) -> Prepared:
        from .pipeline import prepare

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


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), default=Path("."))
@click.option("--templates", is_flag=True, help="Also copy the built-in templates into templates/ to edit.")
def init(directory: Path, templates: bool) -> None:
    """Start a newsletter in DIRECTORY (default: here). Never overwrites a file."""
    from .scaffold import init_project

    result = init_project(directory, templates=templates)
    for path in result.written:
        say(f"created {path}")
    for path in result.kept:
        say(f"kept    {path} (already there)", "yellow")
    where = "" if directory == Path(".") else f"cd {directory} && "
    say(f"Next: {where}newsletter check issues/first-issue.yaml, then newsletter send "
        "issues/first-issue.yaml --list readers (a dry run)", "green")


@cli.command()
@click.argument("issue", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--strict", is_flag=True,
              help="Also fail (exit 1) on an email-client feature beyond MJML's own markup that a client in "
                   "[check] clients does not support (graceful ones aside).")
@click.option("--verbose", "-v", is_flag=True, help="Show each compatibility finding, where it is, and notes.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the compatibility report to FILE: .json (everything) or .md (a table).")
@click.pass_obj
def check(ctx: _Context, issue: Path, strict: bool, verbose: bool, report_path: Path | None) -> None:
    """Validate ISSUE and run the pre-send checks (exit 1 on any error), with a compatibility report."""
    from .compat import compat_report
    from .personalize import html_size, sample_message

    prepared = ctx.prepare(issue)
    _print_problems(prepared.problems)
    n_err, n_warn = len(prepared.errors), len(prepared.warnings)
    size = html_size(prepared.rendered, ctx.settings)
    summary = (f"{issue}: {_plural(len(prepared.issue.sections), 'section')}, HTML {size:,} bytes, "
               f"{_plural(n_err, 'error')}, {_plural(n_warn, 'warning')}")
    compat = compat_report(sample_message(prepared.rendered, ctx.settings)[1], ctx.settings.check.clients,
                           mjml=prepared.rendered.mjml, accept=ctx.settings.check.accept)
    for line in compat.summary() + (compat.details() if verbose else []):
        say(line)
    if report_path:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(compat.to_markdown() if report_path.suffix.lower() == ".md" else
                               json.dumps(compat.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        say(f"wrote {report_path}")
    failed = strict and compat.failures
    if failed:
        for f in compat.failures:
            say(f"{issue}: {f.title} is not supported by "
                f"{', '.join(c.name for c in compat.clients if f.level(c) == 'n')} ({f.url}); "
                "change the template or the issue, or list it in [check] accept", "red", stderr=True)
    if n_err or failed:
        say(f"✗ {summary}" + (f", {_plural(len(compat.failures), 'unsupported feature')} (--strict)"
                              if failed else ""), "red", stderr=True, bold=True)
        raise SystemExit(EXIT_INVALID)
    if not verbose and compat.problems():
        say("details: newsletter check --verbose, or --report FILE.md / FILE.json")
    say(f"✓ {summary}", "green")


@cli.command()
@click.argument("issue", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("out"),
              show_default=True, help="Folder for the .html, .txt and .mjml files.")
@click.pass_obj
def render(ctx: _Context, issue: Path, out_dir: Path) -> None:
    """Render ISSUE to HTML, plain text and MJML, as a reader without a name gets it."""
    from .pipeline import write_rendered

    prepared = ctx.prepare(issue)
    _print_problems(prepared.warnings)
    for path in write_rendered(prepared, ctx.settings, out_dir):
        say(f"wrote {path} ({path.stat().st_size:,} bytes)")
    if prepared.errors:
        _print_problems(prepared.errors)
        say("rendered, but `newsletter check` reports errors: fix them before sending", "red", stderr=True)


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the site (default: site/ beside newsletter.toml).")
@click.option("--drafts", is_flag=True, help="Also issues not sent yet, marked as drafts (for a preview).")
@click.pass_obj
def archive(ctx: _Context, out_dir: Path | None, drafts: bool) -> None:
    """Build the web archive: a page per sent issue, an index and an Atom feed, for any static host."""
    import time

    from .archive import build_archive

    start = time.perf_counter()
    site = build_archive(ctx.settings, out_dir, drafts=drafts)
    took = time.perf_counter() - start
    pages = len(site.issues)
    say(f"wrote {site.out}/: {_plural(pages, 'issue page')}, index.html, feed.xml in {took:.1f} s")
    for path in site.removed:
        say(f"removed {path} (no longer published)", "yellow")
    if site.left_out:
        say(f"left out, not sent yet: {', '.join(site.left_out)} (add --drafts to preview them)", "yellow")
    say(f"Publish the folder at {site.url} on any static host: the emails' view-in-browser links point there",
        "green")


@cli.command()
@click.argument("issue", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--list", "list_spec", required=True, metavar="LIST",
              help="A list name from subscribers/ (digest -> subscribers/digest.csv) or a CSV path.")
@click.option("--send", "really", is_flag=True, help="Send for real (default: a dry run that sends nothing).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation before a real send.")
@click.option("--test", "test", is_flag=True, help="Send one [TEST] copy to each preview address.")
@click.option("--provider", type=_ProviderChoice(), default=None,
              help="Mail provider (default: `provider` in newsletter.toml).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the next N readers who have not had this issue yet (staged sends).")
@click.option("--resend-unknown", is_flag=True,
              help="Also resend readers whose earlier batch has no recorded answer (may duplicate).")
@click.option("--worker", is_flag=True,
              help="One of several senders of this issue (PostgreSQL store): each takes its own readers.")
@click.pass_obj
def send(ctx: _Context, issue: Path, list_spec: str, really: bool, yes: bool, test: bool,
         provider: str | None, limit: int | None, resend_unknown: bool, worker: bool) -> None:
    """Send ISSUE to a subscriber list; a dry run unless --send (or --test)."""
    from .campaign import Campaign

    if really and test:
        raise click.UsageError("--test sends only to the preview addresses; drop --send or --test")
    if worker and not (really and yes):
        raise click.UsageError("--worker is for real sends that ask nothing: add --send --yes")
    if worker and not ctx.settings.database_url:
        raise click.UsageError("--worker needs the state store in PostgreSQL (NEWSLETTER_DATABASE_URL), "
                               "shared by every worker; with SQLite one machine sends: use [smtp] "
                               "connections to send over several connections at once")
    prepared = ctx.prepare(issue)
    campaign = Campaign(prepared, ctx.settings, list_spec, provider)
    _print_problems(prepared.problems)
    if prepared.errors and (really or test):
        err.print("✗ `newsletter check` finds errors: nothing was sent; fix them and run again", style="bold red")
        raise SystemExit(EXIT_INVALID)
    if test:
        raise SystemExit(_test_send(campaign))
    if not really:
        code = _dry_run(campaign, issue, list_spec, limit)
        raise SystemExit(EXIT_INVALID if prepared.errors else code)
    raise SystemExit(_real_send(campaign, yes, limit, resend_unknown, worker))


def _test_send(campaign: Campaign) -> int:
    report = campaign.test_send()
    for address in campaign.settings.preview:
        why = report.failed.get(address) or report.unsent.get(address)
        state = f"failed: {why}" if why else "unknown: no answer after it was handed over; look in " \
            "the inbox" if address in report.unknown else "sent"
        out.print(f"[TEST] copy to {address}: {state}", markup=False)
    return EXIT_OK if report.complete else EXIT_INCOMPLETE


def _dry_run(campaign: Campaign, issue: Path, list_spec: str, limit: int | None) -> int:
    report = campaign.dry_run(limit=limit)
    _print_list_problems(report)
    out.print(f"[bold]Dry run[/] of {issue} to {campaign.list_path}: nothing was sent, nothing recorded")
    _print_report(report, campaign)
    if campaign.throwaway_secret:
        err.print("warning: NEWSLETTER_SECRET is not set; the sample unsubscribe links use a "
                  "throwaway key. Set it before --send.", style="yellow")
    out.print(f"Wrote {campaign.outbox}/: {campaign.stem}.html, .txt, .mjml, recipients.csv, "
              f"sample .eml files, report-dry-run.json", markup=False)
    hint = f"newsletter send {issue} --list {list_spec} --send"
    out.print(f"This was a dry run. To send a test copy: add --test; to send: [bold]{hint}[/]")
    return EXIT_OK


def _confirm(campaign: Campaign, count: int) -> None:
    """Ask before a real send; without a terminal to ask, refuse (exit 2)."""
    if not sys.stdin.isatty():
        raise click.UsageError("refusing to send without confirmation: no terminal to ask; add --yes")
    subject = campaign.prepared.issue.subject
    if not click.confirm(f"Send “{subject}” to {count:,} readers via {campaign.provider_name}?"):
        err.print("Nothing was sent.")
        raise SystemExit(EXIT_INVALID)


def _real_send(campaign: Campaign, yes: bool, limit: int | None, resend_unknown: bool,
               worker: bool = False) -> int:
    from .dispatch import StopFlag, graceful_interrupt

    campaign.require_secret()
    sender = campaign.provider()  # a missing key fails before any question
    # the exact count costs a whole extra pass over the list (~20 µs a row): only to ask
    count = None if yes else campaign.plan(limit=limit, resend_unknown=resend_unknown).recipients
    if count:
        _confirm(campaign, count)
    stop = StopFlag()

    def on_ctrl_c() -> None:
        err.print("stopping after the current batch (Ctrl-C again to abort at once)", style="yellow")

    with _progress(count) as advance, graceful_interrupt(stop, on_ctrl_c):
        report = campaign.send(provider=sender, limit=limit, resend_unknown=resend_unknown, stop=stop,
                               on_progress=advance, worker=worker)
    _print_list_problems(report)
    _print_report(report, campaign)
    _print_outcome(report, campaign)
    return EXIT_OK if report.complete else EXIT_INCOMPLETE


class _progress:
    """A rich progress bar; with --yes the total is unknown, and the bar shows the count and rate."""

    def __init__(self, total: int | None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]:.0f}/s"), TimeRemainingColumn())
        self.bar = Progress(*columns, console=err.real(), transient=False, disable=total == 0)
        self.task = self.bar.add_task("send", total=total, rate=0.0)

    def __enter__(self) -> Any:
        self.bar.__enter__()

        def advance(n: int) -> None:
            self.bar.advance(self.task, n)
            self.bar.update(self.task, rate=self.bar.tasks[self.task].speed or 0.0)

        return advance

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)


def _print_outcome(report: SendReport, campaign: Campaign) -> None:
    if report.quota_reached:
        err.print(report.quota_reached, style="yellow", markup=False)
    if report.other_workers:
        out.print(f"{report.other_workers:,} readers were taken by other workers", markup=False)
    for email, why in list(report.failed.items())[:20] + list(report.unsent.items())[:20]:
        err.print(f"{email}: {why}", style="red", markup=False)
    if report.unknown:
        err.print(f"{len(report.unknown)} readers were handed to the provider with no answer recorded (in "
                  "an earlier run that died mid-batch, or a reply lost after the message went out). They "
                  "were NOT resent. Check the provider's activity log (SMTP: the server's log, by the "
                  "Message-ID in the send record; see \"Unknown readers\" in the README); to send them "
                  "again anyway, add --resend-unknown.", style="yellow")
    if report.complete and report.batches == 0:
        out.print(f"Nothing to send: no subscribed reader of {campaign.list_path} is waiting for "
                  f"{campaign.stem}.", markup=False)
    elif report.complete:
        out.print(f"✓ done: {report.sent:,} sent; report in {campaign.outbox}/report-send.json", style="green")
    else:
        err.print(f"✗ incomplete: run the same command again to resume (report in "
                  f"{campaign.outbox}/report-send.json)", style="bold red")


def _print_report(report: SendReport, campaign: Campaign) -> None:
    from rich.table import Table

    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_column()
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped_by_status.items())) or "none"
    dry = report.mode == "dry-run"
    t.add_row("rows in the list", f"{report.rows:,}", str(campaign.list_path))
    t.add_row("would receive it" if dry else "sent", f"{report.sent:,}", "")
    t.add_row("skipped by status", f"{sum(report.skipped_by_status.values()):,}", skipped)
    t.add_row("invalid rows", f"{len(report.invalid):,}", "listed above" if report.invalid else "")
    t.add_row("duplicates", f"{len(report.duplicates):,}", "listed above" if report.duplicates else "")
    t.add_row("suppressed", f"{sum(report.suppressed.values()):,}",
              ", ".join(f"{k} {v}" for k, v in sorted(report.suppressed.items())) or "none")
    t.add_row("already sent", f"{report.already_sent:,}", "in an earlier run")
    if report.left_for_later:
        t.add_row("left for later", f"{report.left_for_later:,}", "--limit or interrupted: run again to go on")
    if report.unknown:
        t.add_row("unknown", f"{len(report.unknown):,}", "handed over earlier, no answer recorded")
    if not dry:
        t.add_row("failed", f"{len(report.failed):,}", "refused by the provider")
        t.add_row("not sent", f"{len(report.unsent):,}", "still failing after retries")
    how = f"would go via {report.provider}" if dry else f"via {report.provider}, {report.requests:,} requests"
    t.add_row("batches", f"{report.batches:,}", how)
    t.add_row("HTML size", f"{report.html_bytes:,}", "bytes, as a reader gets it")
    t.add_row("check warnings", f"{len(report.warnings):,}", "")
    out.print(t)


def _print_list_problems(report: SendReport) -> None:
    for line in report.invalid + report.duplicates:
        err.print(line, style="yellow", markup=False)


# --- suppressions and subscribers: the operator's commands -------------------------------------------


def _since(at: str) -> str:
    return at[:16].replace("T", " ")


@cli.group()
def suppressions() -> None:
    """Who must not get mail any more, and why: list, add, remove, export, sync from SendGrid."""


@suppressions.command("list")
@click.option("--reason", default=None, metavar="REASON",
              help="Only this reason: unsubscribed, bounced, complained, invalid or manual.")
@click.pass_obj
def suppressions_list(ctx: _Context, reason: str | None) -> None:
    """Print the suppression list as a table, and the counts by reason."""
    from rich.table import Table
    from rich.text import Text

    from .suppressions import check_reason

    if reason is not None:
        check_reason(reason)
    with ctx.settings.open_store(create=False) as store:
        rows = list(store.suppressions.all(reason))
        counts = store.suppressions.count()
    if rows:
        t = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
        for name in ("email", "reason", "source", "since", "issue", "detail"):
            t.add_column(name, overflow="fold")
        for s in rows:  # Text: an address or a detail is never read as rich markup
            t.add_row(*(Text(v) for v in (s.email, s.reason, s.source, _since(s.created_at), s.issue or "",
                                          s.detail or "")))
        out.print(t)
    total = sum(counts.values())
    by_reason = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "none"
    shown = f"; {len(rows):,} {reason} shown" if reason else ""
    out.print(f"suppressed {total:,}: {by_reason}{shown}", markup=False)


@suppressions.command("add")
@click.argument("email")
@click.option("--reason", default="manual", show_default=True, metavar="REASON",
              help="unsubscribed, bounced, complained, invalid or manual.")
@click.option("--detail", default=None, help="A note kept with it (why, who asked).")
@click.pass_obj
def suppressions_add(ctx: _Context, email: str, reason: str, detail: str | None) -> None:
    """Suppress EMAIL: no send mails it again until it is removed."""
    from .suppressions import suppress

    with ctx.settings.open_store() as store:
        added, s = suppress(store.suppressions, email, reason, detail=detail)
    if added:
        say(f"suppressed {s.email} ({s.reason})", "green")
    else:
        say(f"{s.email} was already suppressed ({s.reason} via {s.source}, {s.created_at[:10]}); "
            "nothing changed")


@suppressions.command("remove")
@click.argument("email")
@click.pass_obj
def suppressions_remove(ctx: _Context, email: str) -> None:
    """Lift the suppression of EMAIL (the reader asked to come back)."""
    from .suppressions import unsuppress

    with ctx.settings.open_store() as store:
        s = unsuppress(store.suppressions, email)
    if s:
        say(f"removed {s.email} from the suppressions (was {s.reason} via {s.source}, {s.created_at[:10]}); "
            "the list's status column still decides whether the reader gets mail", "green")
    else:
        say(f"{email.strip()} was not suppressed; nothing changed")


@suppressions.command("export")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="CSV file to write (default: standard output).")
@click.option("--reason", default=None, metavar="REASON", help="Only this reason.")
@click.pass_obj
def suppressions_export(ctx: _Context, out_path: Path | None, reason: str | None) -> None:
    """Write the suppression list as CSV (cells a spreadsheet would run as formulas are defused)."""
    from .suppressions import check_reason, export_csv

    if reason is not None:
        check_reason(reason)
    with ctx.settings.open_store(create=False) as store:
        if out_path is None:
            export_csv(store.suppressions, sys.stdout, reason)
            return
        tmp = out_path.with_name(f".{out_path.name}.tmp")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            n = export_csv(store.suppressions, f, reason)
        os.replace(tmp, out_path)
    say(f"wrote {out_path} ({_plural(n, 'suppression')})")


@suppressions.command("sync")
@click.option("--full", is_flag=True, help="Read SendGrid's lists from the start, not from the last sync.")
@click.pass_obj
def suppressions_sync(ctx: _Context, full: bool) -> None:
    """Pull SendGrid's bounces, blocks, spam reports, invalid addresses and unsubscribes (and the
    [sendgrid] asm_group_id group's) into the suppressions."""
    from .providers.sendgrid.sync import sync_suppressions

    settings = ctx.settings
    with settings.open_store() as store:
        report = sync_suppressions(store, settings.provider_settings("sendgrid"), full=full,
                                   attempts=settings.retry_attempts, backoff=settings.retry_backoff)
    for r in report.lists:
        since = "everything" if r.since is None else f"since {_utc(r.since)}"
        say(f"{r.name:<16} {r.read:>7,} read  {r.new:>7,} new ({r.reason}; {since})")
    say(f"✓ {_plural(report.new, 'new suppression')} from SendGrid", "green")


def _utc(ts: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@cli.group()
def subscribers() -> None:
    """Subscriber lists: write the suppressions back into a list as statuses."""


@subscribers.command("apply")
@click.option("--list", "list_spec", required=True, metavar="LIST",
              help="A list name from subscribers/ (digest -> subscribers/digest.csv) or a CSV path.")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.pass_obj
def subscribers_apply(ctx: _Context, list_spec: str, dry_run: bool) -> None:
    """Set the status of every suppressed reader in LIST, changing only those cells."""
    from .applystatus import apply_statuses
    from .subscribers import resolve_list

    path = resolve_list(list_spec, ctx.settings.root)
    with ctx.settings.open_store(create=False) as store:
        result = apply_statuses(path, store.suppressions, dry_run=dry_run)
    for change in result.changes:
        say(change.describe(path))
    would = "would change" if dry_run else "changed"
    if result.added_status_column:
        say(f"{path} has no status column: {'would add' if dry_run else 'added'} one at the end of every row "
            "(the whole file changes)", "yellow")
    if result.changes or result.added_status_column:
        say(f"{_plural(len(result.changes), 'row')} {would} in {path}"
            + (" (dry run: nothing written)" if dry_run else ""), "green")
    else:
        say(f"nothing to change in {path}: no subscribed row is suppressed")
    for change in result.unmatched:
        say(f"{path}:{change.line}: {change.email}: suppressed ({change.because.reason}), but the row could "
            "not be found again as the list reader read it (a row next to it cannot be read; see `newsletter "
            f"send`'s dry run); left alone: fix the list, or set its status to {change.new} by hand",
            "red", stderr=True)
    if result.unmatched:
        raise SystemExit(EXIT_INVALID)


def main() -> None:
    """Console-script entry point."""
    # pydantic looks for plugins through importlib.metadata on first use (~14 ms a start); this
    # command line has none. The library, imported by your own code, is left as it is.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    cli.main(prog_name="newsletter")


if __name__ == "__main__":
    main()
