"""`newsletter send`: the dry run, the test send and the real send, with their report."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .base import (EXIT_INCOMPLETE, EXIT_INVALID, EXIT_OK, _Context,
                   _print_problems, _ProviderChoice, cli, err, out, print_table)

if TYPE_CHECKING:
    from ..campaign import Campaign
    from ..dispatch import SendReport


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
    from ..campaign import Campaign

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
    with _streaming():
        if test:
            raise SystemExit(_test_send(campaign))
        if not really:
            code = _dry_run(campaign, issue, list_spec, limit)
            raise SystemExit(EXIT_INVALID if prepared.errors else code)
        raise SystemExit(_real_send(campaign, yes, limit, resend_unknown, worker))


@contextmanager
def _streaming() -> Iterator[None]:
    """Start-up's leftovers out of the way while the list streams (~2 MB and ~2.5 s at a million
    readers). The locale data the render loaded for the issue's date (~4 MB of Python objects, used
    by no later step; babel reloads it if asked) is dropped, so the readers' objects reuse its
    memory instead of adding to the peak. What remains (the imports, the rendered issue: it lives to
    the end) is kept out of the garbage collector's full passes: each reader's objects outlive a
    batch, so a million readers set off ~30 full passes, and each walked all of start-up again."""
    import babel.localedata

    clear = getattr(babel.localedata, "clear_caches", None)  # Babel 2.19+; older ones keep the data
    if clear is not None:
        clear()
    gc.collect()  # start-up's own garbage goes now, not frozen with the rest
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
    from ..dispatch import StopFlag, graceful_interrupt

    campaign.require_secret()
    sender = campaign.provider()  # a missing key fails before any question
    # the exact count costs a whole extra pass over the list (~20 µs a row): only to ask
    count = None if yes else campaign.plan(limit=limit, resend_unknown=resend_unknown).recipients
    if count:
        _confirm(campaign, count)
    stop = StopFlag()

    def on_ctrl_c() -> None:
        err.print("stopping after the current batch (Ctrl-C again to abort at once)", style="yellow")

    try:
        with _progress(count) as advance, graceful_interrupt(stop, on_ctrl_c):
            report = campaign.send(provider=sender, limit=limit, resend_unknown=resend_unknown, stop=stop,
                                   on_progress=advance, worker=worker)
    except KeyboardInterrupt:
        # the second Ctrl-C: what was being handed over has no recorded answer
        err.print("aborted mid-send: the readers whose message was being handed over are unknown (recorded "
                  "as in flight, never sent again by themselves); run the same command again: it lists "
                  "them and sends everyone else, once", style="yellow")
        raise
    _print_list_problems(report)
    _print_report(report, campaign)
    _print_outcome(report, campaign)
    return EXIT_OK if report.complete else EXIT_INCOMPLETE


class _progress:
    """A rich progress bar; with --yes the total is unknown, and the bar shows the count and rate."""

    def __init__(self, total: int | None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                                   TextColumn, TimeRemainingColumn)
        from rich.text import Text

        class Rate(ProgressColumn):
            # worked out when the bar is drawn (10 times a second), not at each message: Task.speed
            # walks its samples, ~60 µs, a fifth of the CPU time an SMTP message costs
            def render(self, task: Task) -> Text:
                return Text(f"{task.speed or 0:.0f}/s")

        columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn())
        self.bar = Progress(*columns, console=err.real(), transient=False, disable=total == 0)
        self.task = self.bar.add_task("send", total=total)

    def __enter__(self) -> Any:
        self.bar.__enter__()
        bar, task = self.bar, self.task

        def advance(n: int) -> None:
            bar.advance(task, n)

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
    print_table(t)


def _print_list_problems(report: SendReport) -> None:
    for line in report.invalid + report.duplicates:
        err.print(line, style="yellow", markup=False)


# --- suppressions and subscribers: the operator's commands -------------------------------------------
