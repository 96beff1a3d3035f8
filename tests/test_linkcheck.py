"""`check --links` against real local HTTP servers: 200, 404, 500, redirects, loops, slow answers,
HEAD refused, a refused port, TLS spoken to a plain-HTTP server. No request leaves 127.0.0.1."""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from conftest import SMALL_ISSUE

from newsletter.config import load_settings
from newsletter.issue import load_issue
from newsletter.linkcheck import (
    LinkCache,
    check_links,
    fetch_status,
    issue_urls,
    mailto_problem,
)


class Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, str | None]]] = {
        "/ok": (200, None), "/missing": (404, None), "/boom": (500, None),
        "/moved": (301, "/ok"), "/hop1": (302, "/hop2"), "/hop2": (307, "/ok"),
        "/loop-a": (301, "/loop-b"), "/loop-b": (301, "/loop-a"), "/forbidden": (403, None),
        "/to-js": (302, "javascript:alert(1)"), "/to-file": (301, "file:///etc/passwd"),
        "/to-nowhere": (302, "http://[::1"),
    }
    heads: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, head: bool) -> None:
        path = self.path.split("?")[0]
        if path == "/slow":
            time.sleep(3)
        if path == "/no-head" and head:
            status, location = 405, None
        elif path == "/no-head":
            status, location = 200, None
        else:
            status, location = self.routes.get(path, (200, None) if path == "/slow" else (404, None))
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        body = b"" if head else b"hello"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        Handler.heads.append(self.path)
        self._answer(True)

    def do_GET(self) -> None:
        self._answer(False)


class Server(ThreadingHTTPServer):
    request_queue_size = 64  # the default 5 drops concurrent SYNs: the client retries after 1 s


@pytest.fixture(scope="module")
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def refused_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_fetch_status_statuses_and_redirect_chain(server):
    assert fetch_status(f"{server}/ok").status == 200
    assert fetch_status(f"{server}/missing").status == 404
    assert fetch_status(f"{server}/boom").broken
    r = fetch_status(f"{server}/hop1")
    assert (r.status, r.final_url, r.error) == (200, f"{server}/ok", None)
    assert r.chain == ((302, f"{server}/hop2"), (307, f"{server}/ok"))
    assert r.describe_chain() == f"{server}/hop1 → 302 {server}/hop2 → 307 {server}/ok"


def test_fetch_status_failures(server):
    loop = fetch_status(f"{server}/loop-a")
    assert loop.error == "redirect loop" and loop.broken
    assert fetch_status(f"{server}/slow", timeout=0.5).error == "timed out after 0.5 s"
    assert fetch_status(f"http://127.0.0.1:{refused_port()}/x").error == "connection refused"
    tls = fetch_status(server.replace("http://", "https://") + "/ok")
    assert tls.error and tls.error.startswith("TLS failure"), tls
    dns = fetch_status("http://no-such-host.invalid/")
    assert dns.error and dns.error.startswith("DNS"), dns


def test_head_refused_falls_back_to_get(server):
    r = fetch_status(f"{server}/no-head")
    assert (r.status, r.method, r.broken) == (200, "GET", False)


def test_mailto_is_checked_for_syntax_only():
    assert mailto_problem("mailto:editor@example.org?subject=hi") is None
    assert mailto_problem("mailto:a@example.org,b@example.org") is None
    assert "is not an email address" in mailto_problem("mailto:not-an-address")
    assert mailto_problem("mailto:") == "mailto: link without an address"


ISSUE = """\
subject: Links
date: 2021-03-31
preheader: "Every kind of link, working and not, to see check --links find them"
intro: |
  Hello. A [good link]({S}/ok) and

  a [missing one]({S}/missing) and an [email](mailto:nobody) and a
  [loop]({S}/loop-a).
sections:
  - title: One
    image:
      src: {TLS}/chart.png
      alt: a chart
    links:
      - label: moved
        url: {S}/moved
      - label: forbidden
        url: {S}/forbidden
      - label: refused
        url: http://127.0.0.1:{P}/gone
    body: |
      Text with ![a picture]({S}/ok), ![a chart]({S}/boom) and a slow [page]({S}/slow).
"""


@pytest.fixture
def links_issue(project, server):
    text = ISSUE.replace("{TLS}", server.replace("http://", "https://")).replace("{S}", server).replace("{P}", str(refused_port()))
    return project.write_issue(text, "links.yaml")


def test_check_links_locates_each_problem(project, links_issue, server):
    settings = load_settings(project.root / "newsletter.toml")
    issue = load_issue(links_issue)
    port = re.search(r"127.0.0.1:(\d+)/gone", links_issue.read_text()).group(1)
    found = check_links(issue, "issues/links.yaml", settings, timeout=1, cache=None)
    lines = sorted(str(p) for p in found)
    tls = server.replace("http://", "https://")
    assert lines == sorted([
        ("issues/links.yaml:7: intro: link mailto:nobody: 'nobody' is not an email address "
        "(An email address must have an @-sign.)"),
        f"issues/links.yaml:7: intro: link {server}/missing: HTTP 404; fix or remove the link",
        (f"issues/links.yaml:8: intro: link {server}/loop-a: redirect loop ({server}/loop-a → 301 "
        f"{server}/loop-b → 301 {server}/loop-a); fix or remove the link"),
        (f"issues/links.yaml:12: sections.0.image.src: image {tls}/chart.png: TLS failure: WRONG_VERSION_NUMBER; "
        "fix or remove the link"),
        (f"issues/links.yaml:16: sections.0.links.0.url: warning: link {server}/moved redirects to a page that "
        f"is not https ({server}/moved → 301 {server}/ok); link the final address, or an https one"),
        (f"issues/links.yaml:18: sections.0.links.1.url: warning: link {server}/forbidden: HTTP 403; the server "
        "refuses robots, open it in a browser to be sure"),
        (f"issues/links.yaml:20: sections.0.links.2.url: link http://127.0.0.1:{port}/gone: connection refused; "
        "fix or remove the link"),
        f"issues/links.yaml:22: sections.0.body: image {server}/boom: HTTP 500; fix or remove the link",
        f"issues/links.yaml:22: sections.0.body: link {server}/slow: timed out after 1 s; fix or remove the link",
    ]), "\n".join(lines)


def test_every_kind_of_url_is_collected(project):
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace('provider = "smtp"', 'provider = "smtp"\narchive_url = '
                                           '"https://example.org/issues/"\n[brand]\nlogo = "https://example.org/logo.png"', 1))
    settings = load_settings(cfg)
    path = project.write_issue(SMALL_ISSUE)
    places = issue_urls(load_issue(path), path, settings)
    assert [(p.line, p.field, p.kind, p.url) for p in places] == [
        (10, "sections.0.image.src", "image", "https://example.org/seer.png"),
        (15, "sections.0.links.0.url", "link", "https://arxiv.org/abs/2103.01988"),
        (17, "sections.0.links.1.url", "link", "https://ai.facebook.com/blog/seer"),
        (19, "sections.0.body", "link", "https://instagram.com/?a=1&b=2"),
        (12, "archive_url", "view-online link", "https://example.org/issues/issue.html"),
        (14, "brand.logo", "logo", "https://example.org/logo.png"),
    ]


def test_results_are_cached_with_a_ttl(project, server, tmp_path):
    path = project.write_issue(f"""\
        subject: Cached
        date: 2021-03-31
        preheader: "One link, fetched once and then remembered for ten minutes"
        sections:
          - title: One
            body: "[a]({server}/ok?cached) [b]({server}/ok?cached)"
        """)
    settings = load_settings(project.root / "newsletter.toml")
    issue = load_issue(path)
    cache = LinkCache(path=tmp_path / "linkcheck.json")
    Handler.heads.clear()
    assert check_links(issue, path, settings, cache=cache) == []
    assert Handler.heads == ["/ok?cached"]  # two links, one request
    assert check_links(issue, path, settings, cache=cache) == []
    assert Handler.heads == ["/ok?cached"]  # from the cache
    cache.save()
    assert check_links(issue, path, settings, cache=LinkCache(path=tmp_path / "linkcheck.json")) == []
    assert Handler.heads == ["/ok?cached"]  # from the file
    stale = LinkCache(path=tmp_path / "linkcheck.json", ttl_ok=0)
    assert check_links(issue, path, settings, cache=stale) == []
    assert Handler.heads == ["/ok?cached"] * 2


def test_cli_check_links(project, links_issue, cli, server):
    r = cli("check", "issues/links.yaml", cwd=project.root)
    assert r.code == 0, r.output  # without --links nothing is fetched
    assert "/missing" not in r.output
    r = cli("check", "issues/links.yaml", "--links", cwd=project.root)
    assert r.code == 1, r.output
    assert f"issues/links.yaml:7: intro: link {server}/missing: HTTP 404; fix or remove the link" in r.err
    assert "links: 9 URLs checked in " in r.out and ", 6 broken" in r.out
    assert "6 errors, 4 warnings" in r.err
    assert (project.root / ".newsletter" / "linkcheck.json").is_file()


@pytest.fixture
def raw_server():
    """A TCP server whose answer is `script(conn)`: for servers no http.server handler can imitate."""
    servers = []

    def start(script):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        servers.append(listener)

        def serve():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=_run, args=(script, conn), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for listener in servers:
        listener.close()


def _run(script, conn):
    try:
        conn.recv(65536)
        script(conn)
    except OSError:
        pass
    finally:
        conn.close()


def _trickle(conn):
    for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: yes\r\n" * 100:
        conn.sendall(bytes([byte]))
        time.sleep(0.3)


def test_a_server_trickling_its_answer_times_out_after_the_timeout_in_all(raw_server):
    """httpx's timeout bounds each read: a byte every 0.3 s never trips a 1 s timeout, and the answer
    takes 7 minutes. The whole request is cut at the timeout."""
    url = raw_server(_trickle)
    start = time.monotonic()
    r = fetch_status(f"{url}/trickle", timeout=1)
    assert r.error == "timed out after 1 s", r
    assert time.monotonic() - start < 3


def test_no_network_is_one_message_not_a_dns_error_at_every_link(project, server):
    path = project.write_issue("""\
        subject: Offline
        date: 2021-03-31
        preheader: "Links to hosts that do not resolve, as every host does on a machine without network"
        sections:
          - title: One
            body: "[a](https://a.no-such-host.invalid/x) [b](https://b.no-such-host.invalid/y) [c](https://c.no-such-host.invalid/)"
        """)
    settings = load_settings(project.root / "newsletter.toml")
    found = check_links(load_issue(path), path, settings, cache=None)
    assert len(found) == 1, found
    assert found[0].line is None and found[0].severity == "error"
    assert found[0].message.startswith("no network: none of the 3 hosts of the links can be reached "
                                       "(a.no-such-host.invalid, b.no-such-host.invalid, c.no-such-host.invalid; DNS: ")
    assert found[0].message.endswith("run check --links on a machine with internet access, or leave --links out")
    # one host answering: the network is there, and each unknown host is a broken link at its line
    path.write_text(path.read_text().replace("https://c.no-such-host.invalid/", f"{server}/ok"))
    found = check_links(load_issue(path), path, settings, cache=None)
    assert [(p.line, p.message.split(":")[0]) for p in found] == [
        (6, "link https"), (6, "link https")], found
    assert all("DNS: the host name does not resolve" in p.message for p in found)


def test_cli_check_links_without_network(project, cli):
    project.write_issue("""\
        subject: Offline
        date: 2021-03-31
        preheader: "Links to hosts that do not resolve, as every host does on a machine without network"
        sections:
          - title: One
            body: "[a](https://a.no-such-host.invalid/x) [b](https://b.no-such-host.invalid/y)"
        """, "offline.yaml")
    r = cli("check", "issues/offline.yaml", "--links", cwd=project.root)
    assert r.code == 1, r.output
    assert "links: 2 URLs not checked (" in r.out and "): no network" in r.out
    assert r.err.count("no network") == 1 and "issues/offline.yaml: links: no network: " in r.err
    assert "1 error, 0 warnings" in r.err


def test_a_redirect_to_something_not_web_says_where_it_goes(server):
    r = fetch_status(f"{server}/to-js")
    assert r.error == "redirects to 'javascript:alert(1)', which is not a web address", r
    r = fetch_status(f"{server}/to-file")
    assert r.error == "redirects to 'file:///etc/passwd', which is not a web address", r
    assert r.chain == ((301, "file:///etc/passwd"),)
    r = fetch_status(f"{server}/to-nowhere")
    assert r.error == "redirects to 'http://[::1', which is not a web address", r
