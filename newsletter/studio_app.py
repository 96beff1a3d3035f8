"""The preview's web layer (Starlette): the page, server-sent events, the state and the actions, behind
a guard that refuses foreign Host headers (DNS rebinding) and requests without the run's token or,
for POSTs, without the page's own Origin (CSRF). See studio.py for the model."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .studio import PAGE, Studio, watch

NO_STORE = {"Cache-Control": "no-store"}


class Guard:
    """Refuses what another web page or a rebinding DNS name could make the editor's browser send."""

    def __init__(self, app: ASGIApp, studio: Studio):
        self.app = app
        self.studio = studio

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.studio.port}", f"localhost:{self.studio.port}"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        why = self.refusal(request)
        if why:
            return await PlainTextResponse(why, status_code=403, headers=NO_STORE)(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, request: Request) -> str | None:
        host = request.headers.get("host", "")
        if host not in self.allowed_hosts():
            return f"refused: Host {host!r} is not this preview (127.0.0.1:{self.studio.port})"
        path = request.url.path
        if path == "/" and request.method in ("GET", "HEAD"):
            return None
        token = request.headers.get("x-studio-token") or (request.query_params.get("token") if path == "/events"
                                                          else None)
        if not token or not secrets.compare_digest(token, self.studio.token):
            return "refused: missing or wrong preview token"
        if request.method not in ("GET", "HEAD") and request.headers.get("origin") != f"http://{host}":
            return "refused: a request that changes something must come from this page (Origin)"
        return None


def create_app(studio: Studio) -> ASGIApp:
    page_template = PAGE.read_text(encoding="utf-8")

    async def page(request: Request) -> Response:
        body = (page_template.replace("__TOKEN__", json.dumps(studio.token)[1:-1])
                .replace("__ISSUE__", html.escape(str(studio.issue_path))))
        # the page may not be framed by another site; the emails in it run no scripts (sandbox)
        return HTMLResponse(body, headers={**NO_STORE, "X-Frame-Options": "DENY",
                                           "Content-Security-Policy": "frame-ancestors 'none'",
                                           "Referrer-Policy": "no-referrer"})

    async def state(request: Request) -> Response:
        try:
            reader = int(request.query_params.get("reader", "0"))
        except ValueError:
            reader = 0
        return JSONResponse(await asyncio.to_thread(studio.state, reader), headers=NO_STORE)

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            sent = -1
            yield "retry: 500\n\n"
            while not studio.stopping:
                changed = studio._changed  # taken before the version is read: no change is missed
                if studio.version != sent:
                    sent = studio.version
                    yield f"data: {sent}\n\n"
                    continue
                try:
                    await asyncio.wait_for(changed.wait(), 15)
                except TimeoutError:
                    yield ": ping\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers=NO_STORE)

    async def send_test(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(studio.send_test), headers=NO_STORE)

    async def hook(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(studio.run_hook, request.path_params["key"]),
                            headers=NO_STORE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if studio.version == 0:
            await asyncio.to_thread(studio.refresh)
        task = asyncio.create_task(watch(studio))
        try:
            yield
        finally:
            task.cancel()

    app = Starlette(routes=[
        Route("/", page),
        Route("/events", events),
        Route("/api/state", state),
        Route("/api/send-test", send_test, methods=["POST"]),
        Route("/api/hook/{key}", hook, methods=["POST"]),
    ], lifespan=lifespan)
    return Guard(app, studio)
