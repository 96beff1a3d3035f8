"""The web copy of each sent issue, and the archive around it: a static folder any host can serve.

    site/index.html     every published issue, newest first (date, title, preheader)
    site/feed.xml       an Atom feed of the same issues
    site/2021-03.html   the issue as email, at the address its "view in browser" link points to

A page is the email's own HTML, rendered with the project's templates and filled for a reader who has
no fields (merge fields show their defaults) and no unsubscribe token: its unsubscribe link becomes
`unsubscribe_mailto`, or the index's note on how to unsubscribe. Only issues the send record has
delivered at least once are published, unless drafts are asked for. Links between the pages are
relative; the feed's are absolute, under `archive_url`.
"""

from __future__ import annotations

import html as html_lib
import posixpath
import re
from dataclasses import dataclass
from datetime import datetime, time, timezone
from pathlib import Path
from urllib.parse import quote, unquote
from xml.etree import ElementTree as ET

from babel.dates import format_date

from . import __version__, merge
from .colors import palette
from .config import Settings
from .errors import ConfigError
from .issue import Issue, load_issue
from .message import Rendered
from .render import Renderer

INDEX, FEED = "index.html", "feed.xml"
MANIFEST = ".newsletter-archive"  # what the last build wrote, so that the next one removes what is stale
FEED_ENTRIES = 50
ATOM = "http://www.w3.org/2005/Atom"
_FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


@dataclass
class ArchivedIssue:
    """One issue as the archive publishes it."""

    stem: str  # the issue file's name without .yaml: its id in the send record and in URLs
    issue: Issue
    title: str  # the heading, merge fields filled for the neutral reader
    preheader: str
    page: str  # path inside the site, e.g. "2021-03.html"
    url: str  # where the page is served
    sent: datetime | None  # when its first delivery was recorded as sent; None for a draft

    @property
    def draft(self) -> bool:
        return self.sent is None

    @property
    def published(self) -> datetime:
        return self.sent or datetime.combine(self.issue.date, time(), timezone.utc)


@dataclass
class Archive:
    """What build_archive wrote."""

    out: Path
    url: str  # where the folder is served
    issues: list[ArchivedIssue]  # newest first
    written: list[Path]
    removed: list[Path]  # pages an earlier build wrote that are no longer published
    left_out: list[str]  # issues not sent yet, left out without drafts=True
    missing: list[str]  # issues the send record shows sent that have no file in issues/: no page


def archive_url(settings: Settings) -> str:
    """Where the archive is served: `archive_url`, or the folder of `view_online_url`."""
    if settings.archive_url:
        return settings.archive_url
    if settings.view_online_url and "{issue}" in settings.view_online_url:
        return settings.view_online_url.split("{issue}")[0].rsplit("/", 1)[0] + "/"
    raise ConfigError(f"{settings.path or 'newsletter.toml'}: archive_url: not set; add archive_url = "
                      '"https://…/issues/" (where the archive folder will be served) to [newsletter]')


def page_path(settings: Settings, base: str, stem: str) -> tuple[str, str]:
    """(path inside the site, URL) of an issue's page: where the email's view-in-browser link points."""
    if settings.view_online_url and "{issue}" not in re.split(r"[?#]", settings.view_online_url)[0]:
        raise ConfigError(
            f"{settings.path or 'newsletter.toml'}: view_online_url: {settings.view_online_url} does not have "
            "{issue} in its path, so every issue would get the same web copy; put it before any ? or #, "
            "e.g. https://example.org/issues/{issue}.html")
    url = settings.view_online(stem) or base + quote(stem, safe="") + ".html"
    if not url.startswith(base):
        raise ConfigError(
            f"{settings.path or 'newsletter.toml'}: view_online_url: {url} is not under archive_url {base}, so "
            "the emails' view-in-browser links would miss the web copies; remove view_online_url (it "
            "follows archive_url) or make it start with archive_url")
    rel = unquote(re.split(r"[?#]", url[len(base):])[0])  # the file a static server finds there
    if not rel.endswith((".html", ".htm")):  # .../2021-03 or .../2021-03/: a folder, or hosts serve a download
        rel = rel if rel == "" or rel.endswith("/") else rel + "/"
        rel += INDEX
    rel = posixpath.normpath(rel)
    if rel.startswith("..") or rel in (INDEX, FEED) or rel.startswith("/"):
        raise ConfigError(f"issues/{stem}.yaml: its web copy would be {rel}, which the archive cannot use; "
                          "rename the issue file")
    return rel, quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def neutral(text: str | None) -> str:
    """`text` with each merge field as a reader without fields sees it (defaults shown)."""
    if not text:
        return ""
    return merge.tokenize(text, lambda expr: merge.compile_field(expr).evaluate({}))


def _href(from_page: str, to: str) -> str:
    """A relative link from one page of the site to another, URL-quoted."""
    return quote(posixpath.relpath(to, posixpath.dirname(from_page) or "."))


def build_archive(settings: Settings, out: Path | None = None, *, drafts: bool = False) -> Archive:
    """Write the archive of the project's issues (`issues/*.yaml`) into `out` (default: site/ beside
    newsletter.toml): the sent ones, and with `drafts` the others too, marked as drafts."""
    base = archive_url(settings)
    out = out if out is not None else settings.root / "site"
    with settings.open_store(create=False) as store:  # read only; no send record yet: nothing sent
        sent = {issue: datetime.fromisoformat(when) for issue, when in store.first_sent().items()}
    # the web copy does not link to itself: no view-in-browser link in its header and footer
    renderer = Renderer(settings.model_copy(update={"view_online_url": None}))
    published: list[tuple[ArchivedIssue, Rendered]] = []
    left_out = []
    pages: dict[str, str] = {}  # page -> the issue file it is the web copy of
    folder = settings.root / "issues"
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    for path in paths:
        if path.stem not in sent and not drafts:
            left_out.append(path.stem)
            continue
        issue = load_issue(path, default_language=settings.language)
        page, url = page_path(settings, base, path.stem)
        if page in pages:
            raise ConfigError(f"issues/{pages[page]} and issues/{path.name} would share one web copy, "
                              f"{page}; rename one of them")
        pages[page] = path.name
        item = ArchivedIssue(path.stem, issue, neutral(issue.heading), neutral(issue.preheader), page, url,
                             sent.get(path.stem))
        published.append((item, renderer.render(issue, path.stem)))
    published.sort(key=lambda p: (p[0].issue.date, p[0].stem), reverse=True)
    issues = [item for item, _ in published]
    labels = renderer.templates.labels(settings.language)
    files = {INDEX: _index(renderer, settings, issues, labels), FEED: _feed(renderer, settings, base, issues)}
    for item, rendered in published:
        files[item.page] = _page(rendered, item, settings, renderer.templates.labels(item.issue.language))
    written, removed = _write(out, files)
    missing = sorted(set(sent) - {path.stem for path in paths})
    return Archive(out, base, issues, written, removed, left_out, missing)


def _page(rendered: Rendered, item: ArchivedIssue, settings: Settings, labels: dict[str, str]) -> str:
    """The email's HTML for the neutral reader, with the feed link, a way back to the index, and no token."""
    unsubscribe = (f"mailto:{settings.unsubscribe_mailto}?subject=unsubscribe" if settings.unsubscribe_mailto
                   else _href(item.page, INDEX) + "#unsubscribe")
    _, escaped = rendered.values({}, unsubscribe)
    page = merge.Filler(rendered.html).fill(escaped)
    esc = html_lib.escape
    colors = palette(settings.brand)
    head = (f'<link rel="alternate" type="application/atom+xml" title="{esc(settings.name)}" '
            f'href="{_href(item.page, FEED)}">\n<link rel="canonical" href="{esc(item.url)}">\n'
            + (f'<meta name="description" content="{esc(item.preheader)}">\n' if item.preheader else "")
            + ('<meta name="robots" content="noindex">\n' if item.draft else "")
            # the line above the email: its text is muted grey, which the email's own dark rules do not reach
            + f"<style>@media (prefers-color-scheme: dark) {{ .nl-archive-nav {{ color: {colors['dark']['muted']} "
            "!important; } }</style>\n")
    link = f"color:{settings.brand.color};text-decoration:underline"
    nav = (f'<nav class="nl-archive-nav" aria-label="{esc(labels.get("archive", "Archive"))}" style="max-width:600px;'
           f"margin:0 auto;padding:12px 24px;box-sizing:border-box;font-family:{_FONT};font-size:14px;"
           f'line-height:1.5;color:{colors["light"]["muted"]}"><a href="{_href(item.page, INDEX)}" style="{link}">&larr; '
           f'{esc(labels.get("all_issues", "All issues"))}</a>'
           + (f' &middot; <strong>{esc(labels.get("draft", "Draft"))}</strong>' if item.draft else "")
           + f' &middot; <a href="{_href(item.page, FEED)}" style="{link}">{esc(labels.get("feed", "Feed"))}</a>'
           "</nav>")
    page = page.replace("</head>", head + "</head>", 1)
    return re.sub(r"(<body\b[^>]*>)", lambda m: m.group(1) + nav, page, count=1)


def _index(renderer: Renderer, settings: Settings, issues: list[ArchivedIssue], labels: dict[str, str]) -> str:
    locale = settings.language.replace("-", "_")
    entries = [{"title": i.title, "preheader": i.preheader, "href": _href(INDEX, i.page), "draft": i.draft,
                "date": format_date(i.issue.date, format="long", locale=locale),
                "date_iso": i.issue.date.isoformat()} for i in issues]
    # a project's own archive.html.j2 may be wrong: a message naming it and the line, not an internal error
    return renderer._render_template("archive.html.j2", {
        "settings": settings, "brand": settings.brand, "labels": labels, "lang": settings.language,
        "issues": entries, "feed_href": FEED, "mailto": settings.unsubscribe_mailto,
        "palette": palette(settings.brand),
        "intro": labels.get("archive_intro", "").replace("{name}", settings.name)})


def _feed(renderer: Renderer, settings: Settings, base: str, issues: list[ArchivedIssue]) -> str:
    """Atom (RFC 4287): the newest issues, each with its preheader and its text as simple HTML."""
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        el.text = text
        return el

    entries = issues[:FEED_ENTRIES]
    feed = ET.Element(f"{{{ATOM}}}feed", {"{http://www.w3.org/XML/1998/namespace}lang": settings.language})
    sub(feed, "title", settings.name)
    sub(feed, "link", rel="self", type="application/atom+xml", href=base + FEED)
    sub(feed, "link", rel="alternate", type="text/html", href=base)
    sub(feed, "id", base + FEED)
    newest = max((i.published for i in entries), default=datetime(2000, 1, 1, tzinfo=timezone.utc))
    sub(feed, "updated", _rfc3339(newest))
    sub(sub(feed, "author"), "name", settings.from_name or settings.name)
    sub(feed, "generator", "newsletter", version=__version__)
    for item in entries:
        entry = sub(feed, "entry")
        sub(entry, "title", item.title)
        sub(entry, "link", rel="alternate", type="text/html", href=item.url)
        sub(entry, "id", item.url)
        sub(entry, "published", _rfc3339(item.published))
        sub(entry, "updated", _rfc3339(item.published))
        if item.preheader:
            sub(entry, "summary", item.preheader)
        sub(entry, "content", _feed_html(renderer, item.issue), type="html")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode") + "\n"


def _feed_html(renderer: Renderer, issue: Issue) -> str:
    """The issue's text as plain HTML for feed readers (no email layout tables)."""
    esc, md = html_lib.escape, renderer.markdown.render
    parts = [md(neutral(issue.intro))]
    for s in issue.sections:
        parts.append(f"<h2>{esc(s.title)}</h2>")
        if s.image:
            parts.append(f'<p><img src="{esc(s.image.src)}" alt="{esc(s.image.alt)}"></p>')
        if s.links:
            parts.append("<p>" + " / ".join(f'<a href="{esc(link.url)}">{esc(link.label)}</a>'
                                            for link in s.links) + "</p>")
        parts.append(md(neutral(s.body)))
    parts.append(md(neutral(issue.outro)))
    return "".join(parts)


def _rfc3339(when: datetime) -> str:
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    # not strftime("%Y"): that writes the year 999 as "999", which is no RFC 3339 date
    return when.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _write(out: Path, files: dict[str, str]) -> tuple[list[Path], list[Path]]:
    """Write the files; remove those the previous build wrote that this one does not (a draft page
    from a --drafts build must not stay online). Files it never wrote are left alone."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    before = set(manifest.read_text(encoding="utf-8").split("\n")) - {""} if manifest.is_file() else set()
    removed = []  # first: a page that was the file 2021-03 may now be the folder 2021-03/, or back
    for rel in sorted(before - set(files)):
        path = out / rel
        if path.is_file() and out.resolve() in path.resolve().parents:
            path.unlink()
            removed.append(path)
            for folder in path.parents:  # the folder of a per-folder page, once it is empty
                if folder == out or any(folder.iterdir()):
                    break
                folder.rmdir()
    written = []
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    manifest.write_text("\n".join(sorted(files)) + "\n", encoding="utf-8")
    return written, removed
