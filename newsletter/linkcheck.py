"""`check --links`: fetch every link and image of an issue, report the broken ones at FILE:LINE.

Off unless asked: it touches the network. Each distinct URL is fetched once (HEAD, then GET when HEAD
is refused or fails oddly), a bounded number at a time, redirects followed by hand so that the chain can
be shown and loops caught. Results are kept in a LinkCache (memory, optionally a JSON file) for a while,
so that a live preview or a second `check` does not fetch them all again.
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from .config import Settings
from .deadline import Deadline
from .errors import Problem
from .issue import Issue
from .issuetext import MARKDOWN_FIELDS, MERGE_TOKEN, markdown_targets, shorten

TIMEOUT = 10.0  # seconds for each request as a whole (connect, TLS, status line and headers)
CONCURRENCY = 8  # requests at a time
MAX_REDIRECTS = 10
TTL_OK = 600.0  # a link that worked is trusted for 10 minutes
TTL_BROKEN = 60.0  # a broken one is asked again after a minute: someone may be fixing the server
USER_AGENT = "newsletter-linkcheck/1 (+https://github.com/; checks links before an email is sent)"
# answers that usually mean "no robots", not "no page": worth a look by hand, not a failed check
REFUSED_ROBOT = {401, 403, 429, 999}
REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class LinkResult:
    """What fetching one URL found: the last status, where it ended, every hop, or why it failed."""

    url: str
    status: int | None = None  # the final answer's status; None when no answer came
    final_url: str = ""
    chain: tuple[tuple[int, str], ...] = ()  # (status, URL it redirected to), one per redirect
    error: str | None = None  # "timed out after 10 s", "redirect loop", "DNS: ...", "TLS: ..."
    method: str = "HEAD"
    checked_at: float = 0.0  # time.time() when fetched

    @property
    def broken(self) -> bool:
        return self.error is not None or self.status is None or self.status >= 400

    def describe_chain(self) -> str:
        return " → ".join([self.url] + [f"{status} {shorten(to, 80)}" for status, to in self.chain])


# --- fetching -----------------------------------------------------------------------------------------


def _why(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed request, from the exception and its causes."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout:g} s"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "SSL" in type(seen).__name__:
            return f"TLS failure: {getattr(seen, 'reason', None) or seen}"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, OSError) and seen.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return f"network unreachable ({seen.strerror})"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if any(s in text for s in ("Name or service not known", "nodename nor servname", "getaddrinfo",
                               "No address associated", "Temporary failure in name resolution")):
        return f"DNS: the host name does not resolve ({text})"
    if "SSL" in text or "CERTIFICATE" in text.upper():
        return f"TLS failure: {text}"
    if "refused" in text.lower():
        return "connection refused"
    return f"{type(exc).__name__}: {text or 'no answer'}"


class _Deadline(Deadline):
    """Deadline for an httpx request: the connection's socket comes from httpcore's trace events (a
    new connection each request: the client keeps none alive)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.location: str | None = None  # the Location of a redirect, as the server sent it

    def trace(self, event: str, info: dict[str, object]) -> None:
        if event == "http11.receive_response_headers.complete":
            answer = info.get("return_value")
            if isinstance(answer, tuple) and len(answer) == 4 and answer[1] in REDIRECTS:
                # kept for the message: httpx parses a redirect's Location itself and fails on odd ones
                self.location = next((v.decode("latin-1") for k, v in answer[3] if k.lower() == b"location"), None)
        if event == "connection.connect_tcp.complete":  # before TLS, which takes the socket over
            stream = info.get("return_value")
            sock = getattr(stream, "get_extra_info", lambda _name: None)("socket")
            if isinstance(sock, socket.socket):
                self.watch(sock)


def _not_web(location: str) -> str:
    return f"redirects to {shorten(location, 100)!r}, which is not a web address"


def _follow(client: object, url: str, method: str, timeout: float, max_redirects: int) -> LinkResult:
    import httpx

    assert isinstance(client, httpx.Client)
    chain: list[tuple[int, str]] = []
    seen = {url}
    current = url
    while True:
        try:
            with _Deadline(timeout) as deadline, \
                    client.stream(method, current, extensions={"trace": deadline.trace}) as response:
                status = response.status_code
                location = response.headers.get("location")
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as e:
            why = f"timed out after {timeout:g} s" if deadline.expired else _why(e, timeout)
            if deadline.location is not None and not deadline.expired:
                why = _not_web(deadline.location)
            return LinkResult(url, None, current, tuple(chain), why, method, time.time())
        if status not in REDIRECTS or not location:
            return LinkResult(url, status, current, tuple(chain), None, method, time.time())
        nxt = urljoin(current, location)
        chain.append((status, nxt))
        if not nxt.lower().startswith(("http://", "https://")):
            return LinkResult(url, status, nxt, tuple(chain), _not_web(location), method, time.time())
        if nxt in seen:
            return LinkResult(url, status, nxt, tuple(chain), "redirect loop", method, time.time())
        if len(chain) > max_redirects:
            return LinkResult(url, status, nxt, tuple(chain), f"more than {max_redirects} redirects", method,
                              time.time())
        seen.add(nxt)
        current = nxt


def _odd(result: LinkResult) -> bool:
    """HEAD's answer is not to be trusted: refused (405, 501), any error status (some servers answer
    HEAD with 403 or 404 and GET with 200), or the connection dropped; not DNS, refusal, TLS or timeout,
    which GET would meet as well."""
    if result.error is None:
        return result.status is not None and result.status >= 400
    return not result.error.startswith(("timed out", "DNS", "TLS", "connection refused", "redirect loop", "more than",
                                        "network unreachable", "redirects to"))


def offline(results: list[LinkResult]) -> str | None:
    """When no host of several resolves or can be reached (this machine has no network), one sentence
    saying so, rather than the same DNS error at every link; None when any answered."""
    hosts = sorted({urlsplit(r.url).hostname or "" for r in results})
    if len(hosts) < 2 or not all(r.error and not r.chain and r.error.startswith(("DNS", "network unreachable"))
                                 for r in results):
        return None
    named = ", ".join(hosts[:3]) + (", …" if len(hosts) > 3 else "")
    return (f"no network: none of the {len(hosts)} hosts of the links can be reached ({named}; "
            f"{results[0].error}); run check --links on a machine with internet access, or leave --links out")


def fetch_status(url: str, *, timeout: float = TIMEOUT, max_redirects: int = MAX_REDIRECTS,
                 client: object | None = None) -> LinkResult:
    """Fetch one URL (HEAD, falling back to GET), following up to `max_redirects` redirects."""
    import httpx

    own = client is None
    if own:
        client = _client(timeout, 1)
    try:
        result = _follow(client, url, "HEAD", timeout, max_redirects)
        if _odd(result):
            result = _follow(client, url, "GET", timeout, max_redirects)
        return result
    finally:
        if own:
            assert isinstance(client, httpx.Client)
            client.close()


def _client(timeout: float, concurrency: int) -> object:
    import httpx

    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                        headers={"User-Agent": USER_AGENT, "Accept": "*/*"},
                        # no keep-alive: each request's connection is new, so that _Deadline can cut it
                        limits=httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=0))


# --- the cache ----------------------------------------------------------------------------------------


@dataclass
class LinkCache:
    """Results by URL, kept TTL_OK seconds when they worked and TTL_BROKEN when not; thread-safe.
    With `path`, loaded from and saved to a JSON file (the CLI uses .newsletter/linkcheck.json)."""

    path: Path | None = None
    ttl_ok: float = TTL_OK
    ttl_broken: float = TTL_BROKEN
    _results: dict[str, LinkResult] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.path = Path(self.path) if self.path is not None else None  # a str too
        if self.path and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                for item in data.get("links", []):
                    item["chain"] = tuple(tuple(hop) for hop in item.get("chain", ()))
                    r = LinkResult(**item)
                    self._results[r.url] = r
            except (ValueError, TypeError, KeyError, OSError):
                self._results.clear()  # a damaged cache is only a slower check

    def get(self, url: str) -> LinkResult | None:
        with self._lock:
            r = self._results.get(url)
        if r is None or time.time() - r.checked_at > (self.ttl_broken if r.broken else self.ttl_ok):
            return None
        return r

    def put(self, result: LinkResult) -> None:
        with self._lock:
            self._results[result.url] = result

    def save(self) -> None:
        if not self.path:
            return
        with self._lock:
            fresh = [asdict(r) for r in self._results.values()
                     if time.time() - r.checked_at <= (self.ttl_broken if r.broken else self.ttl_ok)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"links": fresh}, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.path)


# One per process, for callers that pass none (the preview re-checks an issue every few seconds):
# the TTLs bound how stale it can be.
DEFAULT_CACHE = LinkCache()


# --- the issue's links --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where a URL is: file, line, field, what it is (link, image, logo, view-online link)."""

    file: Path | str
    line: int | None
    field: str
    kind: str
    url: str


def markdown_urls(text: str) -> Iterator[tuple[int | None, str, str]]:
    """(line inside the text, "link" | "image", URL) of each link and image in Markdown."""
    return ((line, kind, url) for line, kind, url, _alt in markdown_targets(text))


def issue_urls(issue: Issue, path: Path | str, settings: Settings, stem: str | None = None) -> list[Place]:
    """Every URL a reader can follow or load, with its place: sections' links and images, the Markdown's
    links and images, the brand logo and the view-online link."""
    places: list[Place] = []
    loc: tuple[str | int, ...]
    for i, s in enumerate(issue.sections):
        for j, link in enumerate(s.links):
            loc = ("sections", i, "links", j, "url")
            places.append(Place(path, issue.line_of(*loc), ".".join(map(str, loc)), "link", link.url))
        if s.image:
            loc = ("sections", i, "image", "src")
            places.append(Place(path, issue.line_of(*loc), ".".join(map(str, loc)), "image", s.image.src))
    for loc, text in issue.texts():
        if loc[-1] not in MARKDOWN_FIELDS:
            continue
        for line, kind, url in markdown_urls(text):
            places.append(Place(path, issue.line_of(*loc, text_line=line), ".".join(map(str, loc)), kind, url))
    cfg = settings.path or "newsletter.toml"
    if settings.brand.logo:
        places.append(Place(cfg, settings.line_of("logo"), "brand.logo", "logo", settings.brand.logo))
    if settings.view_online_url:
        key = "view_online_url" if settings.line_of("view_online_url") else "archive_url"
        url = settings.view_online(stem or Path(path).stem) or ""
        places.append(Place(cfg, settings.line_of(key), key, "view-online link", url))
    return sorted(places, key=lambda p: (str(p.file) != str(path), p.line or 0))


def mailto_problem(url: str) -> str | None:
    """Why a mailto: link is malformed (its addresses are checked for syntax only), or None."""
    from email_validator import EmailNotValidError, validate_email

    addresses = unquote(url[len("mailto:"):].split("?", 1)[0])
    if not addresses.strip():
        if "to=" in url.lower():
            return None  # mailto:?to=... is legal
        return "mailto: link without an address"
    for address in addresses.split(","):
        try:
            validate_email(address.strip(), check_deliverability=False)
        except EmailNotValidError as e:
            return f"{shorten(address.strip())!r} is not an email address ({e})"
    return None


def _verdict(place: Place, r: LinkResult) -> tuple[str, str] | None:
    """(severity, message) for one place of a fetched URL, or None when it is fine."""
    what = f"{place.kind} {shorten(place.url, 100)}"
    hops = f" ({r.describe_chain()})" if r.chain else ""
    if r.broken:
        why = r.error or (f"HTTP {r.status}" if r.status else "no answer")
        if place.kind == "view-online link":
            return "warning", (f"{what}: {why}{hops}; the archive page must be online before readers click: "
                               "run `newsletter archive` and publish it")
        if r.error is None and r.status in REFUSED_ROBOT:
            return "warning", (f"{what}: HTTP {r.status}{hops}; the server refuses robots, open it in a "
                               "browser to be sure")
        return "error", f"{what}: {why}{hops}; fix or remove the link"
    if r.chain and not r.final_url.lower().startswith("https://"):
        return "warning", (f"{what} redirects to a page that is not https{hops}; link the final address, "
                           "or an https one")
    return None


def check_links(issue: Issue, path: Path | str, settings: Settings, *, timeout: float = TIMEOUT,
                concurrency: int = CONCURRENCY, cache: LinkCache | None = DEFAULT_CACHE,
                stem: str | None = None) -> list[Problem]:
    """Fetch every URL of the issue and return a Problem for each broken one (an error) and each
    redirect that ends away from https (a warning), located at its line."""
    places = issue_urls(issue, path, settings, stem)
    problems: list[Problem] = []
    todo: list[str] = []
    for p in places:
        if p.url.lower().startswith("mailto:"):
            if why := mailto_problem(p.url):
                problems.append(Problem(p.file, p.line, p.field, f"{p.kind} {shorten(p.url)}: {why}"))
        elif MERGE_TOKEN in p.url or "{{" in p.url:
            continue  # differs per reader: nothing to fetch
        elif p.url.lower().startswith(("http://", "https://")) and p.url not in todo:
            todo.append(p.url)  # other schemes: refused by the issue's own validation
    results: dict[str, LinkResult] = {}
    missing = []
    for url in todo:
        hit = cache.get(url) if cache is not None else None
        if hit is not None:
            results[url] = hit
        else:
            missing.append(url)
    if missing:
        client = _client(timeout, concurrency)
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(missing)))) as pool:
                for fetched in pool.map(lambda u: fetch_status(u, timeout=timeout, client=client), missing):
                    results[fetched.url] = fetched
                    if cache is not None:
                        cache.put(fetched)
        finally:
            client.close()  # type: ignore[attr-defined]
    if results and (why := offline(list(results.values()))):
        problems.append(Problem(path, None, "links", why))
        return problems
    for p in places:
        if (r := results.get(p.url)) and (verdict := _verdict(p, r)):
            problems.append(Problem(p.file, p.line, p.field, verdict[1], verdict[0]))
    return problems
