"""Commands for writing and checking an issue: init, check, render, archive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import Problem
from .base import (EXIT_INVALID, _Context,
                   _plural, _print_problems, cli, say)

if TYPE_CHECKING:
    from ..config import Settings
    from ..pipeline import Prepared


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), default=Path("."))
@click.option("--templates", is_flag=True, help="Also copy the built-in templates into templates/ to edit.")
def init(directory: Path, templates: bool) -> None:
    """Start a newsletter in DIRECTORY (default: here). Never overwrites a file."""
    from ..scaffold import init_project

    result = init_project(directory, templates=templates)
    for path in result.written:
        say(f"created {path}")
    for path in result.kept:
        say(f"kept    {path} (already there)", "yellow")
    where = "" if directory == Path(".") else f"cd {directory} && "
    say(f"Next: {where}newsletter check issues/first-issue.yaml, then newsletter send "
        "issues/first-issue.yaml --list readers (a dry run)", "green")


def _links_and_spam(prepared: Prepared, settings: Settings, links: bool, spam: bool, strict: bool,
                    verbose: bool) -> tuple[int, int]:
    """check --links and --spam: print their lines and problems; (errors, warnings) they add. A spam
    check that cannot run (no SpamAssassin) counts as an error: it was asked for."""
    found: list[Problem] = []
    failed = 0
    if links:
        import time

        from ..linkcheck import LinkCache, check_links, issue_urls

        start = time.perf_counter()
        cache = LinkCache(path=settings.state_dir / "linkcheck.json")
        found += check_links(prepared.issue, prepared.path, settings, cache=cache, stem=prepared.rendered.stem)
        cache.save()
        urls = {p.url for p in issue_urls(prepared.issue, prepared.path, settings, prepared.rendered.stem)
                if p.url.lower().startswith(("http://", "https://"))}
        broken = sum(p.severity == "error" for p in found)
        seconds = time.perf_counter() - start
        if any(p.field == "links" for p in found):  # no network: one problem for them all
            say(f"links: {len(urls)} URLs not checked ({seconds:.1f} s): no network")
        else:
            say(f"links: {len(urls)} URLs checked in {seconds:.1f} s, {broken} broken")
    if spam:
        from ..spamscore import SpamCheckError, sample_eml, spam_score

        try:
            report = spam_score(sample_eml(prepared, settings))
        except SpamCheckError as e:
            say(f"spam score: could not run: {e}", "red", stderr=True)
            failed = 1
        else:
            for line in report.lines(all_rules=verbose):
                say(line)
            if report.is_spam:
                found.append(Problem(prepared.path, None, "spam", f"SpamAssassin scores the sample message "
                                     f"{report.score:.1f}, spam from {report.required:.1f}: change what the rules "
                                     "above point at", "error" if strict else "warning"))
    _print_problems(found)
    return failed + sum(p.severity == "error" for p in found), sum(p.severity == "warning" for p in found)


@cli.command()
@click.argument("issue", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--strict", is_flag=True,
              help="Also fail (exit 1) on an email-client feature beyond MJML's own markup that a client in "
                   "[check] clients does not support (graceful ones aside).")
@click.option("--verbose", "-v", is_flag=True, help="Show each compatibility finding, where it is, and notes.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the compatibility report to FILE: .json (everything) or .md (a table).")
@click.option("--links", is_flag=True, help="Also fetch every link and image (network; results kept 10 minutes "
                                            "in .newsletter/linkcheck.json); broken ones are errors.")
@click.option("--spam", is_flag=True, help="Also score the sample reader's message with SpamAssassin (local "
                                           "tests); a spam score is a warning, an error with --strict.")
@click.pass_obj
def check(ctx: _Context, issue: Path, strict: bool, verbose: bool, report_path: Path | None, links: bool,
          spam: bool) -> None:
    """Validate ISSUE and run the pre-send checks (exit 1 on any error), with a compatibility report."""
    from ..compat import compat_report
    from ..personalize import html_size, sample_message

    prepared = ctx.prepare(issue)
    _print_problems(prepared.problems)
    extra = _links_and_spam(prepared, ctx.settings, links, spam, strict, verbose)
    n_err, n_warn = len(prepared.errors) + extra[0], len(prepared.warnings) + extra[1]
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
    from ..pipeline import write_rendered

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

    from ..archive import build_archive

    start = time.perf_counter()
    site = build_archive(ctx.settings, out_dir, drafts=drafts)
    took = time.perf_counter() - start
    pages = len(site.issues)
    say(f"wrote {site.out}/: {_plural(pages, 'issue page')}, index.html, feed.xml in {took:.1f} s")
    for path in site.removed:
        say(f"removed {path} (no longer published)", "yellow")
    if site.missing:
        say(f"sent but not in issues/, so not published: {', '.join(site.missing)} (their emails' view-in-browser "
            "links lead nowhere now; put each file back as issues/NAME.yaml, under the name it was sent as)",
            "yellow")
    if site.left_out:
        say(f"left out, not sent yet: {', '.join(site.left_out)} (add --drafts to preview them)", "yellow")
    say(f"Publish the folder at {site.url} on any static host: the emails' view-in-browser links point there",
        "green")
