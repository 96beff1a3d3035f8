"""`newsletter preview`: the live page in Debian's Chromium (edits on disk show up without a reload,
errors replace the email with the last good render one click away, the test send), and the guard
that keeps other web pages out (Host, Origin, token)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SMALL_ISSUE, Project
from smtp_server import Recorder

from newsletter.studio import Studio, free_port, make_server

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
SECRET = "preview-test-secret-0123456789abcdef0123"
LIST = "email,name,status\ngone@example.com,Gone,unsubscribed\nann@example.com,Ann Lee,subscribed\n"


@dataclass
class Running:
    studio: Studio
    url: str
    issue: Path
    handler: Recorder


def start(studio: Studio) -> tuple[object, threading.Thread, str]:
    port = free_port()
    server = make_server(studio, port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the preview server did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def preview(project: Project, serve) -> Iterator[Running]:
    handler = Recorder()
    smtp_port = serve(handler)
    issue = project.write_issue(SMALL_ISSUE)
    project.write_list(LIST)
    env = {"NEWSLETTER_SMTP_PORT": str(smtp_port), "NEWSLETTER_SECRET": SECRET,
           "NEWSLETTER_RETRY_BACKOFF": "0.05"}
    studio = Studio(issue, project.root / "newsletter.toml", "readers", env=env)
    server, thread, url = start(studio)
    yield Running(studio, url, issue, handler)
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(10)


def token_of(url: str) -> str:
    page = httpx.get(url + "/").text
    return page.split('const TOKEN = "', 1)[1].split('"', 1)[0]


def test_foreign_hosts_origins_and_missing_tokens_are_refused(preview: Running) -> None:
    url, port = preview.url, preview.url.rsplit(":", 1)[1]
    token = token_of(url)
    assert preview.studio.token == token
    # DNS rebinding: a name that resolves to 127.0.0.1 but is not ours
    assert httpx.get(url + "/", headers={"Host": f"evil.example:{port}"}).status_code == 403
    assert httpx.get(url + "/api/state", headers={"Host": f"evil.example:{port}",
                                                  "X-Studio-Token": token}).status_code == 403
    assert httpx.get(url + "/", headers={"Host": f"localhost:{port}"}).status_code == 200
    # reading the state (the list's readers) needs the token
    assert httpx.get(url + "/api/state").status_code == 403
    assert httpx.get(url + "/api/state?reader=1", headers={"X-Studio-Token": "guess"}).status_code == 403
    assert httpx.get(url + "/events").status_code == 403
    state = httpx.get(url + "/api/state?reader=1", headers={"X-Studio-Token": token}).json()
    assert state["readers"] == [{"label": "Ann Lee <ann@example.com>"}]
    # CSRF: no Origin, a foreign Origin, no token, a wrong token: refused, nothing sent
    own = {"Origin": url}
    for headers in ({"X-Studio-Token": token}, {"X-Studio-Token": token, "Origin": "https://evil.example"},
                    {"X-Studio-Token": token, "Origin": "null"}, own, {**own, "X-Studio-Token": "x" * 43}):
        r = httpx.post(url + "/api/send-test", headers=headers)
        assert r.status_code == 403, (headers, r.text)
    assert preview.handler.messages == []
    r = httpx.post(url + "/api/send-test", headers={**own, "X-Studio-Token": token}, timeout=30)
    assert r.status_code == 200 and r.json()["ok"], r.text
    assert [m[1] for m in preview.handler.messages] == [["preview@example.org"]]


def test_headers_tab_shows_what_a_reader_gets(preview: Running) -> None:
    token = token_of(preview.url)
    state = httpx.get(preview.url + "/api/state?reader=1", headers={"X-Studio-Token": token}).json()
    headers = dict(state["headers"])
    assert headers["To"] == "Ann Lee <ann@example.com>"
    assert headers["Subject"] == "Hello Ann Lee: the March digest"
    assert headers["List-Unsubscribe"].startswith("<https://example.org/unsubscribe?email=ann@example.com&token=")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["Preheader (inbox preview)"].startswith("Self-supervised vision")
    assert "Hi Ann Lee!" in state["text"]


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium")
def test_page_follows_edits_without_reloading_and_sends_a_test(preview: Running) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    issue = preview.issue
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            local = preview.url + "/"
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(local)
                       else route.abort())
            page.goto(local)
            desktop = page.frame_locator("#desktop")
            expect(desktop.locator("body")).to_contain_text("SEER")
            expect(page.frame_locator("#phone").locator("body")).to_contain_text("SEER")
            expect(page.locator("#problems")).to_contain_text("none")
            page.evaluate("window.__marker = 42")

            # 1. a title change: the iframe shows it, the page was not reloaded, and neither was the
            # email's frame: the reader's place in it stays where it was
            frame_js = "document.getElementById('desktop').contentWindow"
            scrolled = page.evaluate(f"(() => {{ const w = {frame_js}; w.scrollTo(0, 120); w.__kept = 7;"
                                     " return w.scrollY; })()")
            assert scrolled > 0
            issue.write_text(SMALL_ISSUE.replace("title: SEER", "title: SEER, revised"), encoding="utf-8")
            expect(desktop.locator("body")).to_contain_text("SEER, revised")
            assert page.evaluate("window.__marker") == 42
            assert page.evaluate(f"[{frame_js}.__kept, {frame_js}.scrollY]") == [7, scrolled]

            # 2. a javascript: link: the errors replace the email; the last good render is one click away
            issue.write_text(SMALL_ISSUE.replace("https://ai.facebook.com/blog/seer", "javascript:alert(1)"),
                             encoding="utf-8")
            expect(page.locator("#errorlist")).to_contain_text(f"{issue}:17")
            expect(page.locator("#errorlist")).to_contain_text("javascript:alert(1)")
            expect(page.locator("#problems")).to_contain_text(f"{issue}:17")
            expect(page.locator("#frames")).to_be_hidden()
            page.click("#lastgood")
            expect(page.locator("#frames")).to_be_visible()
            expect(desktop.locator("body")).to_contain_text("SEER, revised")

            # 3. a missing alt text: an error at its line
            issue.write_text(SMALL_ISSUE.replace("      alt: A chart of SEER's accuracy against model size\n", ""),
                             encoding="utf-8")
            expect(page.locator("#problems")).to_contain_text(f"{issue}:9")
            expect(page.locator("#problems")).to_contain_text("sections.0.image.alt")
            expect(page.locator("#frames")).to_be_hidden()

            # 4. fixed: the email is back, the panel is clean
            issue.write_text(SMALL_ISSUE.replace("title: SEER", "title: SEER, fixed"), encoding="utf-8")
            expect(desktop.locator("body")).to_contain_text("SEER, fixed")
            expect(page.locator("#frames")).to_be_visible()
            expect(page.locator("#errors")).to_be_hidden()
            expect(page.locator("#problems")).to_have_text("none")
            assert page.evaluate("window.__marker") == 42

            # the reader picker personalizes, and dark mode marks the email dark
            page.select_option("#reader", "1")
            expect(desktop.locator("body")).to_contain_text("Hi Ann Lee!")
            page.check("#dark")
            expect(desktop.locator("meta[name=color-scheme]")).to_have_attribute("content", "dark")

            # send test: the [TEST] copy reaches the preview address through the SMTP provider
            page.click("#send")
            expect(page.locator("#result")).to_contain_text("preview@example.org: sent", timeout=20_000)
            assert [m[1] for m in preview.handler.messages] == [["preview@example.org"]]
            assert preview.handler.messages[0][2]["Subject"].startswith("[TEST] Hello Ann Lee")
        finally:
            browser.close()


def test_a_template_or_label_change_re_renders(project: Project) -> None:
    issue = project.write_issue(SMALL_ISSUE)
    studio = Studio(issue, project.root / "newsletter.toml", env={})
    assert studio.refresh() and studio.current.ok
    assert not studio.refresh()  # nothing changed: nothing rendered
    templates = project.root / "templates"
    templates.mkdir()
    (templates / "labels.toml").write_text('[en]\nunsubscribe = "Leave this list now"\n', encoding="utf-8")
    assert studio.refresh()
    assert "Leave this list now" in studio.state()["html"]
    (project.root / "newsletter.toml").write_text("[newsletter\n", encoding="utf-8")  # broken TOML
    assert studio.refresh() and not studio.current.ok
    state = studio.state()
    assert "newsletter.toml" in state["problems"][0]["text"] and "Leave this list now" in state["html"]


def test_link_and_spam_checks_run_from_the_page(project: Project) -> None:
    # a link to a local server that answers 404: the panel names the line; the spam score runs
    # Debian's SpamAssassin on the sample reader's message (local tests only)
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/gone"
        # every URL local: tests never reach out (the view-online URL is not configured here)
        issue = (f"subject: Links\ndate: 2021-03-31\npreheader: One link that is gone, to see it reported\n"
                 f"sections:\n  - title: Gone\n    links:\n      - {{label: paper, url: \"{url}\"}}\n"
                 f"    body: Nothing else here.\n")
        studio = Studio(project.write_issue(issue), project.root / "newsletter.toml", env={})
        studio.refresh()
        assert [h["key"] for h in studio.state()["hooks"]] == ["links", "spam"]
        links = studio.run_hook("links")
        assert links["ok"] and any("404" in line and url in line for line in links["lines"]), links
        spam = studio.run_hook("spam")
        assert spam["ok"] and spam["lines"][0].startswith("spam score "), spam
    finally:
        server.shutdown()

def test_a_template_that_raises_is_a_problem_at_its_line_and_the_preview_recovers(project: Project) -> None:
    # {{ n / 0 }} in a template raised ZeroDivisionError out of the watch task: live updates stopped
    # for good, silently, with the page still saying "rendered" (and `check` called it a bug, exit 70)
    import shutil

    from newsletter.templating import builtin_dir

    issue = project.write_issue(SMALL_ISSUE)
    templates = project.root / "templates"
    templates.mkdir()
    shutil.copy(builtin_dir() / "digest.mjml.j2", templates)
    studio = Studio(issue, project.root / "newsletter.toml", env={})
    studio._load_settings()  # as the command does: the templates are watched from the first poll
    assert studio.refresh() and studio.current.ok
    good = (templates / "digest.mjml.j2").read_text(encoding="utf-8")
    lines = good.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if "<mj-title>" in line)
    lines[at] = lines[at].replace("</mj-title>", "{{ sections | length / 0 }}</mj-title>")
    (templates / "digest.mjml.j2").write_text("".join(lines), encoding="utf-8")
    assert studio.refresh() and not studio.current.ok
    [problem] = studio.state()["problems"]
    assert problem["text"].startswith(f"{templates / 'digest.mjml.j2'}:{at + 1}: ZeroDivisionError"), problem
    (templates / "digest.mjml.j2").write_text(good, encoding="utf-8")
    assert studio.refresh() and studio.current.ok



def test_a_bug_while_rendering_does_not_stop_the_live_updates(project: Project, monkeypatch) -> None:
    # anything but a NewsletterError or OSError used to leave refresh() and end the watch task
    import newsletter.pipeline

    issue = project.write_issue(SMALL_ISSUE)
    studio = Studio(issue, project.root / "newsletter.toml", env={})
    studio._load_settings()
    assert studio.refresh() and studio.current.ok
    real = newsletter.pipeline.prepare
    monkeypatch.setattr(newsletter.pipeline, "prepare", lambda *a, **k: [][1])
    issue.write_text(SMALL_ISSUE.replace("title: SEER", "title: SEER, revised"), encoding="utf-8")
    assert studio.refresh() and not studio.current.ok
    assert studio.state()["problems"][0]["text"].startswith("internal error: IndexError: list index out of range")
    assert "SEER" in studio.state()["html"]  # the last good render is still there to show
    monkeypatch.setattr(newsletter.pipeline, "prepare", real)
    issue.write_text(SMALL_ISSUE.replace("title: SEER", "title: SEER, fixed"), encoding="utf-8")
    assert studio.refresh() and "SEER, fixed" in studio.state()["html"]


def test_a_merge_field_the_list_lacks_is_a_problem_at_its_line(project: Project) -> None:
    # with --list, {{ subscriber.nmae }} rendered as its default for every reader and the page said
    # "none" under problems; only the test send (and the real send) refused it
    project.write_list(LIST)
    issue = project.write_issue(SMALL_ISSUE.replace("subscriber.name | default(\"reader\")",
                                                    "subscriber.nmae | default(\"reader\")"))
    studio = Studio(issue, project.root / "newsletter.toml", "readers", env={"NEWSLETTER_SECRET": SECRET})
    assert studio.refresh()
    texts = [p["text"] for p in studio.state()["problems"] if p["severity"] == "error"]
    assert len(texts) == 1 and texts[0].startswith(f"{issue}:6: intro: merge field subscriber.nmae"), texts
    assert "has no column 'nmae'" in texts[0]
    issue.write_text(SMALL_ISSUE, encoding="utf-8")
    assert studio.refresh() and not [p for p in studio.state()["problems"] if p["severity"] == "error"]


def test_stopping_with_the_page_open_is_quick_and_quiet(project: Project, capfd) -> None:
    # the page's event stream held Ctrl-C up for the graceful timeout, then uvicorn cancelled it and
    # printed "Cancel 1 running task(s)" and two tracebacks into the editor's terminal
    studio = Studio(project.write_issue(SMALL_ISSUE), project.root / "newsletter.toml", env={})
    server, thread, url = start(studio)
    opened = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{url}/events?token={studio.token}", timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    opened.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(10)
    began = time.monotonic()
    server.should_exit = True  # type: ignore[attr-defined]  (what Ctrl-C and SIGTERM do)
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - began < 0.9
    listener.join(5)
    assert not listener.is_alive()  # the stream ended: the page shows "disconnected"
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Cancel" not in err, err


def test_a_port_in_use_is_said_plainly(project: Project, cli) -> None:
    # it printed "preview of ...: http://127.0.0.1:PORT/", the address of whatever held the port (another
    # preview), then uvicorn's "[Errno 98] error while attempting to bind" and exit 3 ("incomplete")
    import socket

    project.write_issue(SMALL_ISSUE)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        r = cli("preview", "issues/issue.yaml", "--port", str(port), cwd=project.root)
    assert r.code == 2, r.output
    assert f"error: port {port} on 127.0.0.1 is in use (another preview, or another program); pick another " \
           "with --port N, or --port 0 for any free one" in r.err
    assert "http://" not in r.output


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium")
def test_the_reader_picker_follows_edits_to_the_list(preview: Running) -> None:
    # the picker was rebuilt only when the number of readers changed: a renamed reader kept the old
    # name in the picker while the email already greeted the new one
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    lst = preview.issue.parent.parent / "subscribers" / "readers.csv"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page()
            local = preview.url + "/"
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(local)
                       else route.abort())
            page.goto(local)
            expect(page.locator("#reader option")).to_have_text(["sample reader (no name)", "Ann Lee <ann@example.com>"])
            page.select_option("#reader", "1")
            expect(page.frame_locator("#desktop").locator("body")).to_contain_text("Hi Ann Lee!")
            lst.write_text(LIST.replace("Ann Lee", "Ann Smith"), encoding="utf-8")
            expect(page.frame_locator("#desktop").locator("body")).to_contain_text("Hi Ann Smith!")
            expect(page.locator("#reader option")).to_have_text(["sample reader (no name)", "Ann Smith <ann@example.com>"])
            expect(page.locator("#reader")).to_have_value("1")
            lst.write_text("email,name,status\n", encoding="utf-8")  # the chosen reader is gone
            expect(page.locator("#reader option")).to_have_text(["sample reader (no name)"])
            expect(page.locator("#reader")).to_have_value("0")
            expect(page.frame_locator("#desktop").locator("body")).to_contain_text("Hi reader!")
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium")
def test_after_a_link_in_the_email_was_clicked_the_next_save_brings_the_email_back(preview: Running) -> None:
    # a click on a link took the frame to the linked site; the next update then read that cross-origin
    # frame's scroll position, threw, and the frame stayed on the site for good (and the rest of the page
    # stopped updating after it)
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            local = preview.url + "/"
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            def offline(route: Any) -> None:  # the linked site, served here; nothing leaves the machine
                if route.request.url.startswith(local):
                    route.continue_()
                elif route.request.resource_type == "document":
                    route.fulfill(status=200, content_type="text/html", body="<h1>the linked site</h1>")
                else:
                    route.abort()

            page.route("**/*", offline)
            page.goto(local)
            desktop = page.frame_locator("#desktop")
            expect(desktop.locator("body")).to_contain_text("SEER")
            desktop.locator("a[href='https://arxiv.org/abs/2103.01988']").first.click()
            expect(desktop.locator("h1")).to_have_text("the linked site")
            preview.issue.write_text(SMALL_ISSUE.replace("title: SEER", "title: SEER, revised"), encoding="utf-8")
            expect(desktop.locator("body")).to_contain_text("SEER, revised")
            expect(page.locator("#source")).to_contain_text("SEER, revised")
            assert errors == []
        finally:
            browser.close()
