"""`newsletter preview`: the page and its server load only when it runs (newsletter/studio.py,
studio_app.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


from .base import cli


@cli.command("preview")
@click.argument("issue", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--list", "list_spec", default=None, metavar="LIST",
              help="Pick the reader from this list (its first 50 subscribed readers), and allow test sends.")
@click.option("--port", type=click.IntRange(0, 65535), default=8030, show_default=True,
              help="Port on 127.0.0.1 (0: any free one).")
@click.pass_obj
def preview(ctx: Any, issue: Path, list_spec: str | None, port: int) -> None:
    """Show ISSUE on a local page that re-renders whenever a file changes; send test copies from it."""
    from ..studio import Studio, listen, make_server

    studio = Studio(issue, getattr(ctx, "config_path", None), list_spec)
    studio._load_settings()  # a broken newsletter.toml fails here, with its message
    sock = listen(port)  # a port in use fails here, before a URL is printed
    port = sock.getsockname()[1]
    studio.refresh()
    click.echo(f"preview of {issue}: http://127.0.0.1:{port}/ (local only; Ctrl-C to stop)")
    make_server(studio, port).run(sockets=[sock])
