"""`newsletter serve`: the small web service that answers the reader.

    app = create_app(load_settings())     # a Starlette (ASGI) app; run it with any ASGI server

- the unsubscribe link, at the path of `unsubscribe_url` (GET: a page with one button; POST: the
  button or RFC 8058 one-click, recorded as a suppression);
- POST /webhooks/sendgrid: SendGrid's Event Webhook (signed), into suppressions and event counts;
- GET /healthz: whether the state store answers;
- the static archive (`site/` beside newsletter.toml), if it has been built.

It reads the same newsletter.toml and environment as the command line and the same state store,
keeps no module-level state, and logs no address, token or key.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .logline import printable
from .pages import Pages
from .sendgrid import PATH as WEBHOOK_PATH
from .sendgrid import SendGridWebhook
from .store import StoreThreads
from .unsubscribe import LinkShape, Unsubscribe

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ..config import Settings

log = logging.getLogger("newsletter.web")
access_log = logging.getLogger("newsletter.web.access")
ARCHIVE_DIR = "site"


def create_app(settings: Settings, *, store_threads: int | None = None) -> Starlette:
    """The service for `settings`. Raises ConfigError for settings it cannot serve (no
    NEWSLETTER_SECRET for the links, a webhook key that is not a key, ...)."""
    store = StoreThreads(settings, store_threads)
    pages = Pages(settings)
    routes: list[BaseRoute] = []
    shape: LinkShape | None = None
    if settings.unsubscribe_url:
        unsubscribe = Unsubscribe(settings, pages, store)
        shape = unsubscribe.shape
        routes.append(Route(shape.path, unsubscribe.handle, methods=["GET", "POST"], name="unsubscribe"))
    webhook = SendGridWebhook(settings.sendgrid_webhook_key, store)
    routes.append(Route(WEBHOOK_PATH, webhook.handle, methods=["POST"], name="sendgrid-webhook"))

    async def healthz(request: Request) -> Response:
        try:
            await store.run(lambda s: s.db.execute("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - the probe gets a 503, the log the reason
            log.error("health check: the state store does not answer: %s: %s", type(e).__name__, e)
            return JSONResponse({"status": "unavailable"}, 503, headers={"Cache-Control": "no-store"})
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    routes.append(Route("/healthz", healthz, methods=["GET"], name="healthz"))
    archive = settings.root / ARCHIVE_DIR
    mount = archive_path(settings)
    if archive.is_dir():  # last: it answers whatever the routes above do not
        routes.append(Mount(mount, app=StaticFiles(directory=archive, html=True), name="archive"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store.start()
        if shape is not None:
            log.info("unsubscribe links: GET/POST %s (from unsubscribe_url)", shape.path)
        else:
            log.info("no unsubscribe_url: the service answers no unsubscribe links")
        if webhook.verifier is None:
            log.warning("NEWSLETTER_SENDGRID_WEBHOOK_KEY is not set: POST %s accepts unsigned events from "
                        "anyone; turn on Signature Verification in SendGrid and set the key", WEBHOOK_PATH)
        else:
            log.info("SendGrid events: POST %s, signed requests only", WEBHOOK_PATH)
        if archive.is_dir():
            log.info("archive: %s/ serves %s", mount, archive)
        try:
            yield
        finally:
            store.stop()

    redact = shape.redacted if shape is not None else (lambda path: path)
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(AccessLog, redact=redact)])


def archive_path(settings: Settings) -> str:
    """Where the archive is mounted: the path of the URL `newsletter archive` builds it for
    (`archive_url`, else the folder of `view_online_url`: https://example.org/issues/{issue}.html
    -> /issues), else the root."""
    from ..archive import archive_url
    from ..errors import ConfigError

    try:
        return unquote(urlsplit(archive_url(settings)).path).rstrip("/")  # routes match the decoded path
    except ConfigError:
        return ""


class AccessLog:
    """One line per request, with every query value and any token in the path left out
    (uvicorn's own access log prints the whole URL: `newsletter serve` turns it off)."""

    def __init__(self, app: ASGIApp, redact: Any):
        self.app = app
        self.redact = redact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            access_log.info('%s "%s %s" %d %.1f ms', client[0] if client else "-", scope["method"],
                            redacted_target(scope["path"], scope.get("query_string", b""), self.redact),
                            status, (time.perf_counter() - start) * 1000)


def redacted_target(path: str, query: bytes, redact: Any = None) -> str:
    """path?key=…&key=…: the query's keys without their values."""
    if redact is not None:
        path = redact(path)
    path = printable(path)  # the path is percent-decoded: %0a would start a forged log line
    if not query:
        return path
    keys = [printable(part.split(b"=", 1)[0].decode("ascii", "replace"), 40) for part in query.split(b"&") if part]
    return path + "?" + "&".join(f"{k}=…" for k in keys)


class _RedactUvicornAccess(logging.Filter):
    """Strips the query string from uvicorn's access log lines, if that log is left on."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, _, query = args[2].partition("?")
            record.args = (*args[:2], redacted_target(path, query.encode()), *args[3:])
        return True


def redact_uvicorn_access_log() -> None:
    """Make uvicorn's own access log (and gunicorn's, with uvicorn workers) print no tokens."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactUvicornAccess) for f in logger.filters):
        logger.addFilter(_RedactUvicornAccess())


def app_from_env() -> Starlette:
    """The app for any ASGI server: `uvicorn --factory newsletter.web:app_from_env`. Reads
    newsletter.toml (NEWSLETTER_CONFIG, or the nearest from the working directory up) and the
    environment, as the command line does."""
    from ..config import load_settings

    config = os.environ.get("NEWSLETTER_CONFIG")
    redact_uvicorn_access_log()
    newsletter_logger = logging.getLogger("newsletter")
    if not newsletter_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        newsletter_logger.addHandler(handler)
        newsletter_logger.setLevel(logging.INFO)
    return create_app(load_settings(Path(config) if config else None))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def ensure_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (UsageError), before anything is announced:
    uvicorn would log the bind error and exit 3, which means "incomplete send" on the command line."""
    import socket

    from ..errors import UsageError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(address)
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {host}: {e.strerror or e}; check --host") from None
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port") from None


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until Ctrl-C or SIGTERM (finishing requests in flight)."""
    import uvicorn

    app = create_app(settings)  # a ConfigError surfaces here, before anything listens
    settings.open_store().close()  # so does a store that cannot be opened (and its schema is brought up)
    ensure_port_free(host, port)
    log_config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "newsletter": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=log_config, server_header=False,
                timeout_graceful_shutdown=10)


__all__ = ["app_from_env", "archive_path", "create_app", "serve"]
