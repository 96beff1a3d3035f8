"""`newsletter archive`: the web copy of each sent issue, an index and an Atom feed, as a static folder.

What readers and the editor rely on: the email's "view in browser" link finds its page; only issues
that really went out are published (a draft only on request, and gone again after); no page carries
a reader's name, address or unsubscribe token; a feed reader reads the feed; the pages work on a
phone and a desktop, served by a plain static server, with the links between them."""

from __future__ import annotations

import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import feedparser
import pytest

from conftest import SMALL_ISSUE, Project, run_cli
from newsletter.archive import build_archive
from newsletter.config import load_settings
from newsletter.errors import ConfigError
from newsletter.personalize import unsubscribe_token
from smtp_server import Recorder

SECRET = "archive-test-secret-that-is-long-enough-0123456789"
ARCHIVE = "https://example.org/letter/"
READERS = "email,name\nann@example.com,Ann Secretname\nbob@example.com,Bob Hiddenname\n"
DRAFT = """\
subject: "April: {{ subscriber.name | default('friend') }}, the next one"
title: "The April digest"
date: 2021-04-30
language: en
preheader: "Not sent yet: a draft"
intro: Hello {{ subscriber.name | default("friend") }}, this one is a draft.
sections:
  - title: Something new
    body: Text of the draft.
"""


def with_archive(project: Project, extra: str = f'archive_url = "{ARCHIVE}"\n') -> None:
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace("[smtp]", extra + "\n[smtp]"))


@pytest.fixture
def sent_project(project: Project, serve) -> tuple[Project, Recorder]:
    """march.yaml sent for real over SMTP to two readers; april.yaml (newer) only a draft."""
    with_archive(project)
    project.write_issue(SMALL_ISSUE, "march.yaml")
    project.write_issue(DRAFT, "april.yaml")
    project.write_list(READERS)
    handler = Recorder()
    env = {"NEWSLETTER_SMTP_PORT": str(serve(handler)), "NEWSLETTER_SECRET": SECRET}
    r = run_cli("send", "issues/march.yaml", "--list", "readers", "--provider", "smtp", "--send", "--yes",
                cwd=project.root, env=env)
    assert r.code == 0, r.output
    assert len(handler.messages) == 2
    return project, handler


def site_texts(site: Path) -> dict[str, str]:
    return {p.relative_to(site).as_posix(): p.read_text(encoding="utf-8") for p in site.rglob("*") if p.is_file()}


def test_only_sent_issues_are_published_where_the_email_links(sent_project, cli):
    project, handler = sent_project
    r = cli("archive", cwd=project.root)
    assert r.code == 0, r.output
    assert "1 issue page, index.html, feed.xml" in r.out
    assert "left out, not sent yet: april (add --drafts" in r.out
    site = project.root / "site"
    assert sorted(site_texts(site)) == [".newsletter-archive", "feed.xml", "index.html", "march.html"]
    # the sent email's "view in browser" link is the page's address under archive_url
    _, _, msg, _ = handler.messages[0]
    html = msg.get_body(("html",)).get_content()
    links = set(re.findall(r'href="([^"]+)"[^>]*>View in browser<', html))
    assert links == {ARCHIVE + "march.html"}
    page = (site / "march.html").read_text()
    assert page.lower().startswith("<!doctype html>") and "Hi reader!" in page
    assert '<link rel="alternate" type="application/atom+xml" title="Test Digest" href="feed.xml">' in page
    assert f'<link rel="canonical" href="{ARCHIVE}march.html">' in page
    assert "View in browser" not in page  # the web copy does not link to itself
    assert 'href="mailto:unsubscribe@example.org?subject=unsubscribe"' in page  # no token: the mailto
    assert 'href="index.html"' in page and "noindex" not in page


def test_no_reader_name_address_or_token_in_any_file(sent_project, cli):
    project, _ = sent_project
    assert cli("archive", "--drafts", cwd=project.root).code == 0
    texts = site_texts(project.root / "site")
    tokens = [unsubscribe_token(SECRET, a) for a in ("ann@example.com", "bob@example.com")]
    for name, text in texts.items():
        for secret in ("ann@example.com", "bob@example.com", "Secretname", "Hiddenname", "Ann", "token=",
                       "reader@example.com", "NLMF", *tokens):
            assert secret not in text, (name, secret)
        assert not re.search(r"<img[^>]+(width=\"1\"|height=\"1\")", text), name  # no tracking pixel


def test_drafts_on_request_newest_first_and_gone_again(sent_project, cli):
    project, _ = sent_project
    site = project.root / "site"
    r = cli("archive", "--drafts", cwd=project.root)
    assert r.code == 0, r.output
    assert "2 issue pages" in r.out
    index = (site / "index.html").read_text()
    # newest first by date (april.yaml sorts before march.yaml by name)
    titles = re.findall(r'<h2><a href="([^"]+)">([^<]+)</a></h2>', index)
    assert titles == [("april.html", "The April digest"), ("march.html", "Hello reader: the March digest")]
    assert index.index("April 30, 2021") < index.index("March 31, 2021")
    assert "Not sent yet: a draft" in index and "Self-supervised vision" in index  # the preheaders
    assert index.count('class="draft">Draft<') == 1
    draft = (site / "april.html").read_text()
    assert '<meta name="robots" content="noindex">' in draft and "Hello friend, this one is a draft." in draft
    r = cli("archive", cwd=project.root)
    assert r.code == 0 and "removed" in r.out and "april.html" in r.out
    assert not (site / "april.html").exists() and (site / "march.html").exists()
    assert "april.html" not in (site / "index.html").read_text()


def test_feed_is_valid_atom_for_a_feed_reader(sent_project, cli):
    project, _ = sent_project
    assert cli("archive", "--drafts", cwd=project.root).code == 0
    feed = feedparser.parse(str(project.root / "site" / "feed.xml"))
    assert feed.bozo == 0, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title == "Test Digest" and feed.feed.language == "en"
    assert [e.link for e in feed.entries] == [ARCHIVE + "april.html", ARCHIVE + "march.html"]
    march = feed.entries[1]
    assert march.title == "Hello reader: the March digest"
    assert march.summary.startswith("Self-supervised vision")
    assert "Hi reader!" in march.content[0].value and "<h2>SEER</h2>" in march.content[0].value
    assert march.published_parsed[:3] >= (2021, 3, 31)  # when it went out
    assert feed.entries[0].published.startswith("2021-04-30")  # a draft: its own date
    assert any(link.rel == "self" and link.href == ARCHIVE + "feed.xml" for link in feed.feed.links)


def test_archive_url_and_view_online_url_agree(project):
    with_archive(project)
    project.write_issue(SMALL_ISSUE, "march.yaml")
    settings = load_settings(project.root / "newsletter.toml", env={})
    assert settings.view_online_url == ARCHIVE + "{issue}.html"  # one setting for both
    site = build_archive(settings, drafts=True)
    assert site.out == project.root / "site" and site.url == ARCHIVE
    assert [(i.page, i.url) for i in site.issues] == [("march.html", ARCHIVE + "march.html")]


def test_an_existing_view_online_url_keeps_working(project):
    """A configuration from before archive_url: the archive is served from view_online_url's folder,
    and a URL per folder ({issue}/) puts the page at march/index.html with links that still work."""
    with_archive(project, 'view_online_url = "https://example.org/old/{issue}/"\n')
    project.write_issue(SMALL_ISSUE, "march.yaml")
    settings = load_settings(project.root / "newsletter.toml", env={})
    site = build_archive(settings, project.root / "old-site", drafts=True)
    assert site.url == "https://example.org/old/"
    assert site.issues[0].page == "march/index.html" and site.issues[0].url == "https://example.org/old/march/"
    page = (project.root / "old-site" / "march" / "index.html").read_text()
    assert 'href="../index.html"' in page and 'href="../feed.xml"' in page
    assert 'href="march/index.html"' in (project.root / "old-site" / "index.html").read_text()


def test_view_online_url_outside_the_archive_is_refused(project, cli):
    with_archive(project, f'archive_url = "{ARCHIVE}"\nview_online_url = "https://elsewhere.org/{{issue}}.html"\n')
    project.write_issue(SMALL_ISSUE, "march.yaml")
    r = cli("archive", "--drafts", cwd=project.root)
    assert r.code == 1 and "is not under archive_url" in r.err
    settings = load_settings(project.root / "newsletter.toml", env={})
    with pytest.raises(ConfigError, match="view_online_url"):
        build_archive(settings, drafts=True)
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace('view_online_url = "https://elsewhere.org/{issue}.html"\n', "")
                   .replace(f'archive_url = "{ARCHIVE}"\n', ""))
    r = cli("archive", cwd=project.root)
    assert r.code == 1 and "archive_url: not set" in r.err
    r = cli("archive", cwd=project.root, env={"NEWSLETTER_ARCHIVE_URL": "ftp://example.org/"})
    assert r.code == 1 and "NEWSLETTER_ARCHIVE_URL: archive_url: must be an http(s) URL" in r.err


def test_pages_speak_the_newsletters_language(project):
    with_archive(project)
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace('language = "en"', 'language = "ru"'))
    project.write_issue(SMALL_ISSUE.replace("language: en", "language: ru"), "march.yaml")
    settings = load_settings(cfg, env={})
    site = build_archive(settings, project.root / "site", drafts=True)
    index = (site.out / "index.html").read_text()
    assert '<html lang="ru">' in index and "<h1>Архив</h1>" in index and "31 марта 2021" in index
    assert "Лента (Atom)" in index and "Черновик" in index
    assert "Все выпуски" in (site.out / "march.html").read_text()


@pytest.mark.browser
@pytest.mark.parametrize("width", [375, 1024])
def test_index_and_issue_pages_in_chromium(sent_project, cli, width):
    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM, LAUNCH_ARGS, image_bytes

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium")
    project, _ = sent_project
    assert cli("archive", "--drafts", cwd=project.root).code == 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(project.root / "site")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"

    def offline(route):  # only this static server; images get a wide local PNG; nothing else leaves
        url = route.request.url
        if url.startswith(base):
            route.continue_()
        elif route.request.resource_type == "image":
            route.fulfill(status=200, content_type="image/png", body=image_bytes())
        else:
            route.abort()

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": width, "height": 800}, is_mobile=width < 600)
            page.route("**/*", offline)
            page.goto(base, wait_until="load")  # the folder's address: index.html
            assert page.title() == "Archive · Test Digest"
            assert no_horizontal_scroll(page), "index scrolls sideways"
            page.get_by_role("link", name="Hello reader: the March digest").click()
            page.wait_for_url(base + "march.html")
            page.wait_for_load_state("load")
            assert no_horizontal_scroll(page), "issue page scrolls sideways"
            assert page.get_by_role("heading", name="Hello reader: the March digest").is_visible()
            page.get_by_role("link", name="← All issues").click()
            page.wait_for_url(base + "index.html")
            assert page.get_by_role("link", name="The April digest").is_visible()
            page.get_by_role("link", name="Feed (Atom)").click()
            page.wait_for_load_state()
            assert "feed.xml" in page.url
            browser.close()
    finally:
        server.shutdown()


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_odd_issue_file_name_gets_a_page_its_email_link_finds(project):
    """A space, #, ? or % in the file name: the email's link is percent-encoded, and the page is the file
    a static server finds at that address (not a page named after the part before the # or ?)."""
    from urllib.request import urlopen

    from newsletter.issue import load_issue
    from newsletter.render import Renderer

    with_archive(project)
    for stem in ("a b#c", "a b?c", "100%"):
        project.write_issue(SMALL_ISSUE, f"{stem}.yaml")
    settings = load_settings(project.root / "newsletter.toml", env={})
    site = build_archive(settings, drafts=True)
    assert sorted(i.page for i in site.issues) == ["100%.html", "a b#c.html", "a b?c.html"]
    html = Renderer(settings).render(load_issue(project.root / "issues" / "a b#c.yaml"), "a b#c").html
    assert f'href="{ARCHIVE}a%20b%23c.html"' in html
    text = Renderer(settings).render(load_issue(project.root / "issues" / "100%.yaml"), "100%").text
    assert f"{ARCHIVE}100%25.html" in text
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(site.out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = f"http://127.0.0.1:{server.server_address[1]}/"
        index = urlopen(local).read().decode()
        for href in ("a%20b%23c.html", "a%20b%3Fc.html", "100%25.html"):
            assert f'href="{href}"' in index
            with urlopen(local + href) as page:
                assert page.status == 200 and "Hello reader" in page.read().decode()
    finally:
        server.shutdown()


def test_two_issues_never_share_one_web_copy(project, cli):
    """{issue} only in the query string, or two files with one name: refused, not one page overwritten."""
    with_archive(project, 'view_online_url = "https://example.org/view?issue={issue}"\n')
    project.write_issue(SMALL_ISSUE, "march.yaml")
    project.write_issue(DRAFT, "april.yaml")
    r = cli("archive", "--drafts", cwd=project.root)
    assert r.code == 1 and "does not have {issue} in its path" in r.err and "Traceback" not in r.err
    assert not (project.root / "site" / "view").exists()
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace('view_online_url = "https://example.org/view?issue={issue}"\n',
                                           f'archive_url = "{ARCHIVE}"\n'))
    project.write_issue(DRAFT, "march.yml")
    r = cli("archive", "--drafts", cwd=project.root)
    assert r.code == 1 and "issues/march.yaml and issues/march.yml would share one web copy" in r.err


def test_a_sent_issue_renamed_afterwards_is_reported_not_silently_dropped(sent_project, cli):
    project, _ = sent_project
    assert cli("archive", cwd=project.root).code == 0
    (project.root / "issues" / "march.yaml").rename(project.root / "issues" / "march-renamed.yaml")
    r = cli("archive", cwd=project.root)
    assert r.code == 0, r.output
    assert "sent but not in issues/, so not published: march (their emails' view-in-browser links" in r.out
    assert "put each file back as issues/NAME.yaml" in r.out
    assert build_archive(load_settings(project.root / "newsletter.toml", env={})).missing == ["march"]


def test_feed_dates_are_rfc3339_for_any_year(project):
    """A draft dated 0999 (a typo for 1999, say) still gives a feed with four-digit years."""
    with_archive(project)
    project.write_issue(DRAFT.replace("date: 2021-04-30", "date: 0999-06-01"), "typo.yaml")
    site = build_archive(load_settings(project.root / "newsletter.toml", env={}), drafts=True)
    feed = (site.out / "feed.xml").read_text()
    dates = re.findall(r"<(?:published|updated)>([^<]+)<", feed)
    assert dates and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d) for d in dates), dates
    assert "<published>0999-06-01T00:00:00Z</published>" in feed


def test_a_view_online_url_without_html_gets_a_page_not_a_download(project):
    """https://…/{issue} (no .html): the page is march/index.html, which static servers answer with a
    redirect to march/; a file named march would be served as application/octet-stream, a download.
    Changing the URL's shape later removes the old page and its empty folder."""
    from urllib.request import urlopen

    with_archive(project, f'archive_url = "{ARCHIVE}"\nview_online_url = "{ARCHIVE}{{issue}}"\n')
    project.write_issue(SMALL_ISSUE, "march.yaml")
    cfg = project.root / "newsletter.toml"
    site = build_archive(load_settings(cfg, env={}), drafts=True)
    assert [(i.page, i.url) for i in site.issues] == [("march/index.html", ARCHIVE + "march")]
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(site.out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with urlopen(f"http://127.0.0.1:{server.server_address[1]}/march") as page:
            assert page.headers.get_content_type() == "text/html" and page.url.endswith("/march/")
            assert 'href="../index.html"' in page.read().decode()
    finally:
        server.shutdown()
    cfg.write_text(cfg.read_text().replace(f'view_online_url = "{ARCHIVE}{{issue}}"\n', ""))
    site = build_archive(load_settings(cfg, env={}), drafts=True)
    assert (site.out / "march.html").is_file() and not (site.out / "march").exists()
    cfg.write_text(cfg.read_text().replace(f'archive_url = "{ARCHIVE}"\n',
                                           f'archive_url = "{ARCHIVE}"\nview_online_url = "{ARCHIVE}{{issue}}.html/"\n'))
    site = build_archive(load_settings(cfg, env={}), drafts=True)  # the file march.html becomes a folder
    assert (site.out / "march.html" / "index.html").is_file()


def test_a_projects_label_with_a_stray_brace_shows_as_written(project, cli):
    """{name} is filled; any other brace in the project's own labels stays (it was an internal error)."""
    with_archive(project)
    project.write_issue(SMALL_ISSUE, "march.yaml")
    (project.root / "templates").mkdir(exist_ok=True)
    (project.root / "templates" / "labels.toml").write_text(
        '[en]\narchive_intro = "All {issues} of {name}"\nwhy = "You joined {name} {"\n')
    r = cli("archive", "--drafts", cwd=project.root)
    assert r.code == 0, r.output
    assert "All {issues} of Test Digest" in (project.root / "site" / "index.html").read_text()
    assert "You joined Test Digest {" in (project.root / "site" / "march.html").read_text()


@pytest.mark.browser
def test_the_line_above_the_email_reads_in_dark_mode(project):
    """'← All issues · Draft · Feed' on a dark page: the grey that suits the light page was 2.96:1."""
    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM, LAUNCH_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium")
    with_archive(project)
    project.write_issue(DRAFT, "april.yaml")
    site = build_archive(load_settings(project.root / "newsletter.toml", env={}), drafts=True)
    contrast = """el => {
        const rgb = s => s.match(/[\\d.]+/g).map(Number);
        const lum = c => c.slice(0, 3).map(v => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
                            .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
        let bg = el;
        while (bg && rgb(getComputedStyle(bg).backgroundColor)[3] === 0) bg = bg.parentElement;
        const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(rgb(getComputedStyle(bg).backgroundColor))];
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    }"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        for scheme in ("light", "dark"):
            page = browser.new_page(color_scheme=scheme)
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                       else route.abort())
            page.goto((site.out / "april.html").as_uri())
            for name in ("nav strong", "nav a"):
                ratio = page.locator(name).first.evaluate(contrast)
                assert ratio >= 4.5, (scheme, name, ratio)
        browser.close()


def test_the_index_takes_the_brands_dark_colours(project):
    """[brand] dark_background and dark_color colour the index in dark mode, as they do the email (it
    had GitHub's dark blue and #58a6ff whatever the brand)."""
    with_archive(project)
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text() + '\n[brand]\ncolor = "#d1242f"\ndark_background = "#202020"\n'
                   'dark_color = "#ff9900"\n')
    project.write_issue(SMALL_ISSUE, "march.yaml")
    site = build_archive(load_settings(cfg, env={}), drafts=True)
    index = (site.out / "index.html").read_text()
    dark = index[index.index("prefers-color-scheme: dark"):]
    assert "background: #202020" in dark and "a, .name { color: #ff9900; }" in dark and "#58a6ff" not in index


@pytest.mark.parametrize("template, message", [
    ("<p>{{ issue.title }}</p>\n", "templates/archive.html.j2:1: 'issue' is undefined"),
    ("<ol>\n{% for i in issues %}\n", "templates/archive.html.j2:2: Unexpected end of template"),
])
def test_a_mistake_in_the_projects_index_template_is_a_message(project, cli, template, message):
    with_archive(project)
    project.write_issue(SMALL_ISSUE, "march.yaml")
    (project.root / "templates").mkdir(exist_ok=True)
    (project.root / "templates" / "archive.html.j2").write_text(template)
    r = cli("archive", "--drafts", cwd=project.root)
    assert r.code == 1 and message in r.err and "internal error" not in r.err, r.output
