"""`newsletter preview`: a local page that shows an issue as readers get it and re-renders it whenever a
file it depends on changes (the issue, templates, CSS, labels, newsletter.toml, the list).

One Studio per run owns the settings, one Renderer (made again when newsletter.toml or a template
folder's file changes), the current findings and the last good render. The page (studio_page.html)
hears a version number over server-sent events and fetches the state for the chosen reader.

Security: it listens on 127.0.0.1 only; a request whose Host is not 127.0.0.1:PORT or localhost:PORT is
refused (DNS rebinding); every /api and /events request needs the per-run token written into the page,
and a POST also needs the page's own Origin (CSRF): another web page can neither send nor read.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IssueError, NewsletterError, Problem, UsageError

POLL_SECONDS = 0.04  # a stat of a dozen files, ~0.5 ms: about 1% of a core for a 20 ms mean wait
COMPAT_DELAY = 0.5  # at most this long, the compatibility scan waits for the page to fetch the email
READERS_MAX = 50
PAGE = Path(__file__).with_name("studio_page.html")
# the checks that touch the network or run a program, on request only: (key, button label, function)
def _check_links(prepared: Any, settings: Any) -> list[Any]:
    from .linkcheck import check_links

    problems = check_links(prepared.issue, prepared.path, settings, stem=prepared.rendered.stem)
    return problems or ["every link and image answers"]


def _spam_score(prepared: Any, settings: Any) -> list[str]:
    from .spamscore import sample_eml, spam_score

    return spam_score(sample_eml(prepared, settings)).lines()


HOOKS: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    ("links", "check links", _check_links), ("spam", "spam score", _spam_score))


def _problem(p: Problem) -> dict[str, Any]:
    where = f"{p.file}:{p.line}" if p.line else str(p.file)
    return {"where": where, "field": p.field, "message": p.message, "severity": p.severity, "text": str(p)}


def _plain(message: str, severity: str = "error") -> dict[str, Any]:
    return {"where": "", "field": "", "message": message, "severity": severity, "text": message}


@dataclass(frozen=True)
class Current:
    """What the files on disk give now; replaced whole on each rebuild, never mutated."""

    ok: bool
    problems: list[dict[str, Any]]
    info: list[str] = field(default_factory=list)
    prepared: Any = None  # the last good Prepared (stale when not ok)


class Studio:
    """The preview's state for one issue file; safe to poll from one task and read from requests."""

    def __init__(self, issue: Path, config: Path | None = None, list_spec: str | None = None,
                 env: Mapping[str, str] | None = None):
        self.issue_path = issue
        self.config_path = config
        self.list_spec = list_spec
        self.env = env
        self.token = secrets.token_urlsafe(32)
        self.port = 0
        self.version = 0
        self.served = -1  # the newest version a page has asked for
        self.current = Current(False, [_plain("not rendered yet")])
        self.readers: list[Any] = []
        self.settings: Any = None
        self.renderer: Any = None
        self._mtimes: dict[Path, tuple[int, int] | None] = {}
        self._changed = asyncio.Event()
        self._sending = threading.Lock()
        self.hooks = HOOKS
        self.stopping = False  # the server is shutting down: the event streams end

    # --- files ---------------------------------------------------------------------------------

    def _load_settings(self) -> None:
        from .config import find_config, load_settings
        from .render import Renderer

        self.settings = load_settings(self.config_path or find_config(), self.env)
        self.config_path = self.settings.path
        self.renderer = Renderer(self.settings)

    def watched(self) -> dict[str, list[Path]]:
        """Every file a render depends on, by what a change to it means."""
        files: dict[str, list[Path]] = {"issue": [self.issue_path], "config": [], "templates": [], "list": []}
        if self.config_path:
            files["config"].append(Path(self.config_path))
        if self.settings is not None:
            from .templating import builtin_dir

            for d in (self.settings.templates_dir, builtin_dir()):
                files["templates"].append(d)  # a file added or removed changes the folder
                with contextlib.suppress(OSError):  # removed or unreadable: the folder's own entry says so
                    files["templates"] += sorted(p for p in d.iterdir() if p.is_file())
            if self.list_spec:
                from .subscribers import resolve_list

                files["list"].append(resolve_list(self.list_spec, self.settings.root))
        return files

    def poll(self) -> set[str]:
        """What changed on disk since the last poll: a set of "issue", "config", "templates", "list"."""
        changed = set()
        seen: dict[Path, tuple[int, int] | None] = {}
        for kind, paths in self.watched().items():
            for p in paths:
                try:
                    st = p.stat()
                    seen[p] = (st.st_mtime_ns, st.st_size)
                except OSError:
                    seen[p] = None
                # a path watched only since the last render (its folder came with newsletter.toml)
                # is new, not changed; a file added to a folder changes the folder
                if (p in self._mtimes or not self._mtimes) and self._mtimes.get(p) != seen[p]:
                    changed.add(kind)
        self._mtimes = seen
        return changed

    def rebuild(self, changed: set[str]) -> None:
        """Render again after `changed`; keeps the last good render when the files are invalid now."""
        from .personalize import html_size
        from .pipeline import prepare

        last = self.current.prepared
        try:
            if "config" in changed or self.settings is None:
                self._load_settings()
            elif "templates" in changed:  # labels are read once per Renderer
                from .render import Renderer

                self.renderer = Renderer(self.settings)
            if "list" in changed or "config" in changed:
                self.readers = self._read_readers()
            prepared = prepare(self.issue_path, self.settings, self.renderer)
        except IssueError as e:
            self.current = Current(False, [_problem(p) for p in e.problems], prepared=last)
            return
        except (NewsletterError, OSError) as e:
            self.current = Current(False, [_plain(str(e))], prepared=last)
            return
        except Exception as e:  # noqa: BLE001  a bug must not stop the live updates (the watch task)
            self.current = Current(False, [_plain(f"internal error: {type(e).__name__}: {e}; this is a bug in "
                                                  "newsletter: please report it")], prepared=last)
            return
        size = html_size(prepared.rendered, self.settings)
        info = [f"HTML {size:,} bytes of Gmail's ~102,000 clipping limit ({100 * size / 102_000:.0f}%)",
                "compatibility: being measured…"]
        problems = [_problem(p) for p in prepared.problems] + self._list_problems(prepared)
        self.current = Current(True, problems, info, prepared)

    def _list_problems(self, prepared: Any) -> list[dict[str, Any]]:
        """What --list adds to `check`: a merge field naming a column the list lacks (the send refuses)."""
        if not self.list_spec:
            return []
        from .campaign import Campaign

        try:
            Campaign(prepared, self.settings, self.list_spec)
        except IssueError as e:
            return [_problem(p) for p in e.problems]
        except (NewsletterError, OSError) as e:
            return [_plain(str(e))]
        return []

    def add_compat(self) -> bool:
        """Add the compatibility findings to the current render (~40 ms: done after the page has the
        new email, so that a save shows sooner). False when there was nothing to add."""
        from .compat import compat_report
        from .personalize import sample_message

        cur, s = self.current, self.settings
        if not cur.ok or not cur.info or not cur.info[-1].startswith("compatibility: being"):
            return False
        problems, info = list(cur.problems), cur.info[:-1]
        try:
            compat = compat_report(sample_message(cur.prepared.rendered, s)[1], s.check.clients,
                                   mjml=cur.prepared.rendered.mjml, accept=s.check.accept)
        except ValueError as e:
            problems.append(_plain(f"{s.path}: [check] clients: {e}"))
        except Exception as e:  # noqa: BLE001  as in rebuild: the live updates go on
            problems.append(_plain(f"compatibility report: internal error: {type(e).__name__}: {e}", "warning"))
        else:
            info += [line.strip() for line in compat.summary()]
            for f in compat.problems(degrades=False):
                bad = ", ".join(c.name for c in compat.clients if f.level(c) in "an")
                problems.append(_plain(f"compatibility: {f.title} is partly or not supported by {bad} "
                                       f"({f.url})", "warning"))
        if self.current is not cur:  # a newer render came in meanwhile: it gets its own
            return False
        self.current = Current(True, problems, info, cur.prepared)
        self.version += 1
        return True

    def _read_readers(self) -> list[Any]:
        if not self.list_spec:
            return []
        from .subscribers import SubscriberList, resolve_list

        readers = []
        for sub in SubscriberList(resolve_list(self.list_spec, self.settings.root)):
            if sub.status == "subscribed":
                readers.append(sub)
                if len(readers) == READERS_MAX:
                    break
        return readers

    def refresh(self) -> bool:
        """Poll, and rebuild when something changed; True when it did."""
        changed = self.poll()
        if changed:
            self.rebuild(changed)
            self.version += 1
        return bool(changed)

    # --- what the page shows -------------------------------------------------------------------

    def state(self, reader: int = 0) -> dict[str, Any]:
        """The page's data: findings, and the email as reader `reader` (0: the sample reader) gets it."""
        cur, version = self.current, self.version
        out: dict[str, Any] = {
            "version": version, "ok": cur.ok, "problems": cur.problems, "info": cur.info,
            "issue": str(self.issue_path), "list": self.list_spec,
            "readers": [{"label": f"{s.name} <{s.email}>" if s.name else s.email} for s in self.readers],
            "hooks": [{"key": k, "label": label} for k, label, _ in self.hooks],
        }
        if cur.prepared is not None:
            out.update(self._message(cur.prepared, reader))
        self.served = max(self.served, version)
        return out

    def _message(self, prepared: Any, reader: int) -> dict[str, Any]:
        from .mime import build_message
        from .personalize import SAMPLE_SECRET, SAMPLE_SUBSCRIBER, Personalizer

        s = self.settings
        sub = self.readers[reader - 1] if 0 < reader <= len(self.readers) else SAMPLE_SUBSCRIBER
        personalizer = Personalizer(prepared.rendered, s, s.secret or SAMPLE_SECRET, provider=s.provider)
        envelope, p = personalizer.envelope(), personalizer(sub)
        subject, html, text = envelope.fill(p)
        msg = build_message(envelope, p)
        headers = [[k, str(v)] for k in ("From", "To", "Reply-To", "Subject", "List-Id", "List-Unsubscribe",
                                          "List-Unsubscribe-Post") for v in msg.get_all(k) or []]
        headers.append(["Preheader (inbox preview)", prepared.issue.preheader or "(none)"])
        return {"subject": subject, "html": html, "text": text, "headers": headers}

    # --- actions -------------------------------------------------------------------------------

    def send_test(self) -> dict[str, Any]:
        """What `newsletter send ISSUE --list NAME --test` does, for the current render."""
        from .campaign import Campaign

        if not self.list_spec:
            return {"ok": False, "message": "start the preview with --list NAME to send a test copy"}
        cur = self.current
        if not cur.ok or cur.prepared is None:
            return {"ok": False, "message": "the issue is invalid: fix the errors, then send a test"}
        if cur.prepared.errors:
            return {"ok": False, "message": "`newsletter check` finds errors: nothing was sent; fix them first"}
        if not self._sending.acquire(blocking=False):
            return {"ok": False, "message": "a test send is already under way"}
        try:
            campaign = Campaign(cur.prepared, self.settings, self.list_spec)
            report = campaign.test_send()
        except NewsletterError as e:
            return {"ok": False, "message": str(e)}
        finally:
            self._sending.release()
        results = []
        for address in self.settings.preview:
            why = report.failed.get(address) or report.unsent.get(address)
            state = f"failed: {why}" if why else ("unknown: no answer after it was handed over; look in the "
                                                  "inbox" if address in report.unknown else "sent")
            results.append({"address": address, "state": state})
        return {"ok": report.complete, "results": results,
                "message": "; ".join(f"[TEST] copy to {r['address']}: {r['state']}" for r in results)}

    def run_hook(self, key: str) -> dict[str, Any]:
        fn = next((f for k, _, f in self.hooks if k == key), None)
        prepared = self.current.prepared
        if fn is None or prepared is None:
            return {"ok": False, "lines": ["not available"]}
        try:
            result = fn(prepared, self.settings)
        except Exception as e:  # noqa: BLE001  another module's bug must not take the preview down
            return {"ok": False, "lines": [f"{type(e).__name__}: {e}"]}
        items = result if isinstance(result, (list, tuple)) else [result]
        return {"ok": True, "lines": [str(x) for x in items] or ["nothing found"]}

    def notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def stop(self) -> None:
        """End the open pages' event streams, so that Ctrl-C does not wait for them and then cancel them."""
        self.stopping = True
        self.notify()


async def watch(studio: Studio) -> None:
    """Poll the files every POLL_SECONDS; render in a thread so that requests stay answered."""
    while True:
        await asyncio.sleep(POLL_SECONDS)
        if await asyncio.to_thread(studio.refresh):
            studio.notify()
            # the scan holds the interpreter for ~40 ms: first let the open page fetch the new email
            waited = 0.0
            while studio.served < studio.version and waited < COMPAT_DELAY:
                await asyncio.sleep(0.01)
                waited += 0.01
        if await asyncio.to_thread(studio.add_compat):
            studio.notify()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listen(port: int) -> Any:
    """A socket bound to 127.0.0.1:port (0: any free port) for make_server(...).run(sockets=[it]);
    bound before the URL is printed, so that a port in use is said plainly instead of printing the URL
    of whatever holds it."""
    import errno
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart at once
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        sock.close()
        why = ("is in use (another preview, or another program)" if e.errno == errno.EADDRINUSE
               else f"cannot be used: {e.strerror or e}")
        raise UsageError(f"port {port} on 127.0.0.1 {why}; pick another with --port N, or --port 0 "
                         "for any free one") from None
    return sock


def make_server(studio: Studio, port: int) -> Any:
    """A uvicorn Server for the preview on 127.0.0.1:port (call .run(), or set .should_exit)."""
    import uvicorn

    from .studio_app import create_app

    studio.port = port
    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            studio.stop()  # an open page's event stream would hold the exit up, then be cancelled noisily
            await super().shutdown(sockets)

    config = uvicorn.Config(create_app(studio), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=1, lifespan="on")
    return Server(config)
