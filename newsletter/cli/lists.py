"""The operator's commands for who gets mail: suppressions (list, add, remove, export, sync) and
`subscribers apply`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .base import (EXIT_INVALID, _Context,
                   _plural, cli, out, print_table, say)

if TYPE_CHECKING:
    pass


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

    from ..suppressions import check_reason

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
        print_table(t)
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
    from ..suppressions import suppress

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
    from ..suppressions import unsuppress

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
    from ..suppressions import check_reason, export_csv

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
    from ..providers.sendgrid.sync import sync_suppressions

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
    from ..applystatus import apply_statuses
    from ..subscribers import resolve_list

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
