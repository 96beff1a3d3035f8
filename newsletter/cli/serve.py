"""`newsletter serve`: the web service that answers readers (newsletter/web/); Starlette and
uvicorn load only when it runs."""

from __future__ import annotations

import click

from .base import _Context, cli


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (behind a TLS proxy, keep it local).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.pass_obj
def serve(ctx: _Context, host: str, port: int) -> None:
    """Answer readers: unsubscribe links (page and RFC 8058 one-click), SendGrid's event webhook,
    the archive. Runs until Ctrl-C."""
    from ..web import serve as run_service

    run_service(ctx.settings, host=host, port=port)
