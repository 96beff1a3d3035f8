"""The unsubscribe link: GET shows a page with one button, POST (the button, or a mailbox
provider's RFC 8058 one-click request) records the unsubscribe.

The route is derived from `unsubscribe_url`, the template every email's link is made from: its
path is where the handler is mounted, and its placeholders say where the address, the token and
the issue are read from. The printed link and the route that answers it cannot drift apart.
"""

from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from ..config import Settings
from ..errors import ConfigError
from ..personalize import verify_unsubscribe_token
from .body import read_body
from .logline import printable
from .pages import Pages
from .store import StoreThreads

log = logging.getLogger("newsletter.web")

LIMIT = 64 * 1024  # a one-click body is 26 bytes; a form post with the button, less
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058's POST body, as a form field
# stands in for a token that could never be valid (not ASCII), so that it costs the same checks
_NOT_A_TOKEN = "!" * 22
_ISSUE = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029/\\]{1,200}")  # no control character, no path


@dataclass(frozen=True)
class LinkShape:
    """Where the link made from `unsubscribe_url` carries each value: the route path (a Starlette
    path, placeholders as path parameters) and, per placeholder, its query key (or None: in the path)."""

    path: str
    keys: dict[str, str | None]

    @classmethod
    def of(cls, template: str) -> LinkShape:
        parts = urlsplit(template)
        path = parts.path or "/"
        in_path = _placeholders(path)
        if "{{" in path or "}}" in path:
            raise ConfigError("unsubscribe_url: the service cannot serve a path with literal braces")
        keys: dict[str, str | None] = dict.fromkeys(in_path)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            names = _placeholders(value)
            if not names:
                continue
            if value != "{" + names[0] + "}" or len(names) > 1:
                raise ConfigError(f"unsubscribe_url: the query value {value!r} mixes a placeholder with other "
                                  "text; the service reads each placeholder as a whole value, like "
                                  "?email={email}&token={token}")
            keys[names[0]] = key
        if "email" not in keys:
            raise ConfigError("unsubscribe_url: has no {email}; the service needs it to know who "
                              "unsubscribes: add email={email} to the query")
        return cls(path, keys)

    def values(self, request: Request) -> dict[str, str]:
        out = {}
        for name, key in self.keys.items():
            value = request.path_params.get(name) if key is None else request.query_params.get(key)
            if value is not None:
                out[name] = value
        return out

    def redacted(self, path: str) -> str:
        """What the access log prints for `path`: the route's template if the path carries the
        address or the token, and for a near miss (`/bye/TOKEN/`, `/bye/TOKEN/x`, which may carry
        one too) only the part before the first placeholder; else the path."""
        if any(key is None for key in self.keys.values()):
            if compile_path(self.path)[0].match(path):
                return self.path
            prefix = self.path.split("{", 1)[0]
            if path.startswith(prefix):
                return prefix + "…"
        return path


def _placeholders(text: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


def token_ok(secrets: list[str], email: str, token: str) -> bool:
    """Whether `token` was issued for `email` with any of `secrets` (the current key, then earlier
    ones). Every key is tried whatever the outcome, and each comparison is constant-time."""
    if not token.isascii():  # compare_digest refuses non-ASCII str: check a stand-in instead
        token, ok = _NOT_A_TOKEN, False
    else:
        ok = True
    found = False
    for secret in secrets:
        found |= verify_unsubscribe_token(secret, email, token)
    return ok and found


def is_one_click(body: bytes, content_type: str) -> bool:
    """Whether a POST body is RFC 8058's `List-Unsubscribe=One-Click` (form-urlencoded, or
    multipart/form-data, which the RFC also allows)."""
    if not body:
        return False
    if content_type.lower().startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        if not message.is_multipart():
            return False
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and (name, payload.strip().decode("latin-1")) == ONE_CLICK:
                return True
        return False
    # strip: a client may end the body with a line break, as the multipart branch allows too
    return ONE_CLICK in parse_qsl(body.decode("utf-8", "replace").strip(), keep_blank_values=True)


class Unsubscribe:
    """The endpoint behind every email's unsubscribe link."""

    def __init__(self, settings: Settings, pages: Pages, store: StoreThreads):
        assert settings.unsubscribe_url
        self.shape = LinkShape.of(settings.unsubscribe_url)
        self.secrets = settings.unsubscribe_secrets
        if not self.secrets:
            raise ConfigError("NEWSLETTER_SECRET is not set: the service verifies unsubscribe links with the "
                              "key that signed them; export the same NEWSLETTER_SECRET as for sending")
        self.pages = pages
        self.store = store

    async def handle(self, request: Request) -> Response:
        body = b""
        if request.method == "POST":  # read (bounded) before judging the link: same work for any token
            body = await read_body(request, LIMIT)
        values = self.shape.values(request)
        email, token = values.get("email", ""), values.get("token", "")
        if not (token_ok(self.secrets, email, token) and email):
            return self.pages.invalid()
        if request.method != "POST":
            return self.pages.confirm(email)  # mail scanners follow links: a GET changes nothing
        issue = values.get("issue")
        issue = issue if issue and _ISSUE.fullmatch(issue) else None
        source = "one-click" if is_one_click(body, request.headers.get("content-type", "")) else "link"
        try:
            new = await self.store.run(lambda store: store.suppressions.add(
                email, "unsubscribed", source, issue=issue))
        except Exception as e:  # noqa: BLE001 - the reader gets a page, the log the reason
            log.error("unsubscribe not recorded (%s): %s: %s", source, type(e).__name__, e)
            return self.pages.unavailable()
        log.info("unsubscribed (%s%s)%s", source, f", issue {printable(issue)}" if issue else "",
                 "" if new else ": already suppressed")
        return self.pages.done(email)
