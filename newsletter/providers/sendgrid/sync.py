"""Pull SendGrid's suppression lists into the state store (`newsletter suppressions sync`).

SendGrid keeps its own lists of who must not get mail: bounces, blocks, spam reports, invalid
addresses, global unsubscribes and the unsubscribes of each unsubscribe group. It drops mail to them
itself, but an SMTP send knows nothing of them, and `subscribers apply` cannot write them back into
the CSV unless they are here. Each list is read in pages (`limit`/`offset`) and, after the first
sync, only from the newest entry seen before (`start_time`, kept per list as a sync cursor).
"""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ... import __version__
from ...deadline import Deadline
from ...errors import ConfigError, NewsletterError
from ...scrub import scrub
from ...store.db import now
from ...suppressions import Suppression, normalize_address
from . import SendGridSettings
from .client import _errors, _retry_after

if TYPE_CHECKING:
    from ...store import Store

SOURCE = "sendgrid-sync"
PAGE_SIZE = 500  # the most the suppression endpoints return a page
MAX_PAGES = 100_000  # a server that never ends its list must not keep us here forever
TIMEOUT = 60.0  # seconds for a whole answer, from connecting to its last byte
# The most read of one page's answer. A page is PAGE_SIZE entries of {created, email, reason, status}:
# an address is at most 320 characters and a reason an SMTP reply of a few hundred; even at 4 KB an
# entry (a long reply, all of it \u-escaped) a page is 2 MB. An answer past this is not a page of
# SendGrid's (a wrong api_url, a proxy sending a file, a server without end) and must not take the memory.
MAX_PAGE_BYTES = 16 * 2**20
# The unsubscribe group comes whole, without pages: this is about 1.5 million addresses.
MAX_GROUP_BYTES = 64 * 2**20
MAX_ERROR_BYTES = 64 * 2**10  # of a refusal's body only SendGrid's message is shown: the rest is not read
MAX_BACKOFF = 60.0
FUTURE = 86_400  # a `created` further ahead of this machine's clock than this is not a time
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL refuses NUL, UTF-8 lone surrogates


class _Unread(Exception):
    """An answer not read whole: it took longer than the timeout, or it is larger than the cap."""


class SendGridAPIError(NewsletterError):
    """SendGrid refused a request (an answer other than 401/403, which are ConfigErrors)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Endpoint:
    name: str  # also the sync cursor's name: sendgrid:<name>
    path: str
    reason: str
    what: str  # for the detail column when SendGrid gives no reason of its own


# What a reader did (a complaint, an unsubscribe) is read before what their mailbox did: on the
# first sync, an address on several lists keeps the reason of the first list it is found on.
ENDPOINTS = (
    Endpoint("spam_reports", "/v3/suppression/spam_reports", "complained", "spam report"),
    Endpoint("unsubscribes", "/v3/suppression/unsubscribes", "unsubscribed", "global unsubscribe"),
    Endpoint("bounces", "/v3/suppression/bounces", "bounced", "bounce"),
    Endpoint("invalid_emails", "/v3/suppression/invalid_emails", "invalid", "invalid address"),
    Endpoint("blocks", "/v3/suppression/blocks", "bounced", "block"),
)


@dataclass
class ListResult:
    """One of SendGrid's lists in one sync."""

    name: str
    reason: str
    read: int = 0  # entries SendGrid returned
    new: int = 0  # of them, addresses that were not suppressed here yet
    since: int | None = None  # the start_time sent (unix seconds); None: the whole list
    cursor: int | None = None  # the start_time of the next sync


@dataclass
class SyncReport:
    lists: list[ListResult] = field(default_factory=list)

    @property
    def new(self) -> int:
        return sum(r.new for r in self.lists)

    @property
    def read(self) -> int:
        return sum(r.read for r in self.lists)


class SuppressionsClient:
    """GETs SendGrid's suppression lists as JSON; retries 429 (as long as SendGrid asks) and 5xx,
    network failures, answers not whole within `timeout` and answers over the size cap (with a
    doubling backoff); a GET is safe to repeat."""

    def __init__(self, settings: SendGridSettings, *, attempts: int = 5, backoff: float = 2.0,
                 timeout: float | None = None, sleep: Callable[[float], None] = time.sleep):
        if not settings.api_key:
            raise ConfigError(
                "SENDGRID_API_KEY is not set: create an API key with read access to Suppressions in "
                "SendGrid (Settings > API Keys) and export it in the environment")
        if not settings.api_url.startswith(("https://", "http://")):
            raise ConfigError(f"sendgrid.api_url = {settings.api_url!r}: use a URL like https://api.sendgrid.com")
        self.api_url = settings.api_url.rstrip("/")
        self._key = settings.api_key
        self.attempts = max(attempts, 1)
        self.backoff = backoff
        self.timeout = TIMEOUT if timeout is None else timeout
        self.sleep = sleep

    def __repr__(self) -> str:  # never show the key
        return f"SuppressionsClient(api_url={self.api_url!r})"

    def get(self, path: str, params: dict[str, int] | None = None, max_bytes: int = MAX_PAGE_BYTES) -> Any:
        """The JSON of a GET of `path`; an answer over `max_bytes` is refused (and retried) unread."""
        url = f"{self.api_url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        what = f"GET {path}"
        for attempt in range(1, self.attempts + 1):
            wait = min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF)
            try:
                status, headers, body = self._request(url, max_bytes)
            except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
                problem = f"SendGrid unreachable: {getattr(e, 'reason', None) or e or type(e).__name__}"
            except _Unread as e:
                problem = str(e)
            else:
                if status < 300:
                    try:
                        return json.loads(body.decode("utf-8"))
                    except (ValueError, RecursionError):  # RecursionError: nested deeper than the stack
                        raise NewsletterError(self._scrub(
                            f"{what}: SendGrid answered {status} with something that is not JSON: "
                            f"{body[:200]!r}")) from None
                problem = self._problem(status, body)
                if status in (401, 403):
                    raise ConfigError(self._scrub(
                        f"{what}: {problem}; check SENDGRID_API_KEY (a valid key with read access to "
                        "Suppressions: Settings > API Keys in SendGrid)"))
                if status == 429:
                    asked = _retry_after(headers)
                    wait = wait if asked is None else asked
                elif status < 500 and status != 408:
                    raise SendGridAPIError(self._scrub(f"{what}: {problem}"), status)
            if attempt < self.attempts:
                self.sleep(wait)
        raise NewsletterError(self._scrub(
            f"{what}: {problem} (still, after {self.attempts} tries); run `newsletter suppressions "
            "sync` again later: what was read so far is kept, and the rest is read next time"))

    def _request(self, url: str, max_bytes: int = MAX_PAGE_BYTES) -> tuple[int, Any, bytes]:
        """(status, headers, body) of one GET, all of it within `timeout` seconds; network failures
        raise, and so (_Unread) does an answer cut at the timeout or larger than `max_bytes`."""
        request = urllib.request.Request(url, headers={
            "Authorization": f"Bearer {self._key}", "Accept": "application/json",
            "User-Agent": f"newsletter/{__version__}"})
        with Deadline(self.timeout) as deadline:
            opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline))
            try:
                try:
                    with opener.open(request, timeout=self.timeout) as response:
                        if (response.length or 0) > max_bytes:  # said by Content-Length: not read at all
                            raise _Unread(self._too_large(max_bytes, response.length))
                        body = _read_at_most(response, max_bytes)
                        if len(body) > max_bytes:
                            raise _Unread(self._too_large(max_bytes))
                        if response.length:  # the connection closed before the Content-Length was read
                            raise http.client.IncompleteRead(body, response.length)
                        answer = response.status, response.headers, body
                except urllib.error.HTTPError as e:
                    with e:
                        answer = e.code, e.headers, _read_at_most(e, MAX_ERROR_BYTES)[:MAX_ERROR_BYTES]
            except (OSError, http.client.HTTPException):
                if not deadline.expired:
                    raise
            if deadline.expired:  # what came was cut, even if it ended like an answer
                raise _Unread(f"SendGrid sent no whole answer within {self.timeout:g} s")
        return answer

    @staticmethod
    def _too_large(max_bytes: int, said: int | None = None) -> str:
        size = f"{said / 2**20:,.0f} MB, over" if said is not None else "over"
        limit = ("more than a page of the list can be" if max_bytes == MAX_PAGE_BYTES
                 else "the most read of an unsubscribe group (about 1.5 million addresses)")
        return f"SendGrid's answer is {size} {max_bytes / 2**20:g} MB, {limit}; the rest of it was not read"

    def pages(self, path: str, start_time: int | None, page_size: int = PAGE_SIZE) -> Iterator[list[Any]]:
        """The list at `path`, a page at a time, from `start_time` (inclusive) on."""
        offset = 0
        previous: list[Any] | None = None
        for _ in range(MAX_PAGES):
            params = {"limit": page_size, "offset": offset}
            if start_time is not None:
                params["start_time"] = start_time
            page = self.get(path, params)
            if not isinstance(page, list):
                raise NewsletterError(f"GET {path}: SendGrid answered with {type(page).__name__}, not a list")
            if page and page == previous:  # it ignores offset: the same page would come forever
                raise NewsletterError(
                    f"GET {path}: SendGrid answered offset {offset} with the same {len(page)} entries as offset "
                    f"{offset - len(page)}, so the list does not page; what was read is kept, but this list "
                    "is read again next time: check sendgrid.api_url, and run `newsletter suppressions sync` again")
            previous = page
            if page:
                yield page
            if len(page) < page_size:
                return
            offset += len(page)
        raise NewsletterError(
            f"GET {path}: SendGrid still sent full pages after {MAX_PAGES * page_size:,} entries; what was read is "
            "kept, but this list is read again next time: check sendgrid.api_url, and run `newsletter "
            "suppressions sync` again")

    def _problem(self, status: int, body: bytes) -> str:
        phrase = http.client.responses.get(status, "error")
        detail = _errors(body)
        return f"SendGrid: {status} {phrase}: {detail}" if detail else f"SendGrid: {status} {phrase}"

    def _scrub(self, text: str) -> str:
        # a real key is 69 characters; a test key like "x" must not mask every x of a message
        return scrub(text, (self._key,), "[SENDGRID_API_KEY]") if len(self._key) >= 8 else text


def sync_suppressions(store: Store, settings: SendGridSettings, *, full: bool = False, attempts: int = 5,
                      backoff: float = 2.0, page_size: int = PAGE_SIZE,
                      client: SuppressionsClient | None = None) -> SyncReport:
    """Read SendGrid's lists into `store`'s suppressions (source `sendgrid-sync`). Incremental: each
    list is read from its cursor, which moves only once the whole list was read, so an interrupted
    sync loses nothing. `full` reads every list from the start (the cursors are kept up to date)."""
    client = client or SuppressionsClient(settings, attempts=attempts, backoff=backoff)
    report = SyncReport()
    latest = int(time.time()) + FUTURE  # a later `created` is a bad value, not a time: never a cursor
    for endpoint in ENDPOINTS:
        cursor_name = f"sendgrid:{endpoint.name}"
        cursor = store.events.cursor(cursor_name)
        result = ListResult(endpoint.name, endpoint.reason, since=None if full or cursor is None else int(cursor))
        report.lists.append(result)
        newest = result.since
        for page in client.pages(endpoint.path, result.since, page_size):
            items = []
            for entry in page:
                item = _suppression(entry, endpoint, latest)
                if item is not None:
                    items.append(item)
                    created = _created(entry, latest)
                    if created is not None and (newest is None or created > newest):
                        newest = created
            result.read += len(page)
            result.new += len(store.suppressions.add_many(items))
        if cursor is not None and (newest is None or newest < int(cursor)):
            newest = int(cursor)  # a --full sync that found less never moves the cursor back
        if newest is not None and str(newest) != cursor:
            store.events.set_cursor(cursor_name, str(newest))
        result.cursor = newest
    if settings.asm_group_id is not None:
        report.lists.append(_sync_group(store, client, settings.asm_group_id))
    return report


def _sync_group(store: Store, client: SuppressionsClient, group_id: int) -> ListResult:
    """The unsubscribe group's suppressions: SendGrid returns the whole group as a list of addresses,
    without times or pages, so it is read whole each time; new ones are dated by this sync."""
    result = ListResult(f"group {group_id}", "unsubscribed")
    path = f"/v3/asm/groups/{group_id}/suppressions"
    try:
        emails = client.get(path, max_bytes=MAX_GROUP_BYTES)
    except SendGridAPIError as e:
        if e.status == 404:
            raise ConfigError(f"{e}; SendGrid has no unsubscribe group {group_id}: check "
                              "[sendgrid] asm_group_id in newsletter.toml") from None
        raise
    if not isinstance(emails, list):
        raise NewsletterError(f"GET {path}: SendGrid answered with {type(emails).__name__}, not a list")
    stamp = now()
    items = [Suppression(_address(e), "unsubscribed", SOURCE, stamp, detail=f"SendGrid unsubscribe group {group_id}")
             for e in emails if isinstance(e, str) and e.strip()]
    result.read = len(emails)
    result.new = len(store.suppressions.add_many(items))
    return result


def _watched(connection_class: type[http.client.HTTPConnection], deadline: Deadline) -> Any:
    """`connection_class`, with each socket it connects handed to `deadline`."""

    def connection(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
        conn = connection_class(host, **kwargs)
        connect = conn._create_connection  # type: ignore[attr-defined]  # http.client's hook for the socket

        def connect_watched(*args: Any, **kwargs: Any) -> socket.socket:
            sock: socket.socket = connect(*args, **kwargs)
            deadline.watch(sock)
            return sock

        conn._create_connection = connect_watched  # type: ignore[attr-defined]
        return conn

    return connection


class _Watching(urllib.request.AbstractHTTPHandler):
    """A urllib handler that hands each connection's socket to `deadline`."""

    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> http.client.HTTPResponse:
        return super().do_open(_watched(http_class, self.deadline), req, **kwargs)


class _HTTPHandler(_Watching, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_Watching, urllib.request.HTTPSHandler):
    pass


def _read_at_most(response: Any, limit: int) -> bytes:
    """The body, but never more than `limit` + 1 bytes of it (one more than `limit` says there is
    more), read a piece at a time: an answer without end takes no more memory than that."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = response.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _suppression(entry: Any, endpoint: Endpoint, latest: int) -> Suppression | None:
    """One entry of a list ({email, created, reason?, status?}) as a suppression; None if it has no
    address."""
    if not isinstance(entry, dict) or not isinstance(entry.get("email"), str) or not entry["email"].strip():
        return None
    created = _created(entry, latest)
    at = now() if created is None else datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="seconds")
    words = [str(entry[k]).strip() for k in ("status", "reason") if entry.get(k)]
    detail = f"SendGrid {endpoint.what}" + (f": {' '.join(words)}" if words else "")
    return Suppression(_address(entry["email"]), endpoint.reason, SOURCE, at, detail=_storable(detail[:500]))


def _created(entry: dict[str, Any], latest: int) -> int | None:
    """The entry's `created` (unix seconds), or None when it is not a time: missing, not a number
    (true, "soon", NaN), before 1970, or after `latest` (such a value would have become the cursor,
    and every later entry would have been skipped from then on)."""
    created = entry.get("created")
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
        return None
    return int(created) if 0 <= created <= latest else None


def _address(email: str) -> str:
    """As subscriber lists read it, so that the keys match; kept as it is when it does not validate
    (an entry of the invalid-addresses list may well not), with what no store can keep (NUL, a lone
    surrogate) replaced by U+FFFD."""
    try:
        return normalize_address(email)
    except NewsletterError:
        return _storable(email.strip())


def _storable(text: str) -> str:
    return _UNSTORABLE.sub("\ufffd", text)
