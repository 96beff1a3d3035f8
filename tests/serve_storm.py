"""`newsletter serve` as a real process, and a storm of one-click unsubscribes and SendGrid webhook
deliveries against it: for the kill -9 test (tests/test_serve.py) and bench/serve_bench.py.

Standard library only on the client side (http.client in threads), so that the load generator costs
little next to the server it measures."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from smtp_server import free_port


class ServiceProcess:
    """`python -m newsletter serve` in `cwd` on a free 127.0.0.1 port; stderr kept in a file."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.port = free_port()
        self.log_path = cwd / f"serve-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"newsletter serve exited {self.proc.returncode}: {self.log()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"newsletter serve did not answer on port {self.port}: {self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def one_click_target(path: str, secret: str, email: str) -> str:
    from newsletter.personalize import unsubscribe_token

    return f"{path}?email={quote(email, safe='@')}&token={unsubscribe_token(secret, email)}"


ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"


@dataclass
class Acked:
    """What the service answered 2xx to (so must have kept), and what it did not."""

    emails: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    unanswered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def storm(port: int, secret: str, tag: str, acked: Acked, stop: threading.Event, threads: int = 6,
          events_per_delivery: int = 5) -> list[threading.Thread]:
    """Start `threads` clients, alternating one-click POSTs (a new address each) and webhook
    deliveries (new event ids, some bounces) until `stop` is set or the service goes away."""

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while not stop.is_set():
            i += 1
            if i % 2:
                email = f"{tag}-{n}-{i}@example.com"
                method, target = "POST", one_click_target("/unsubscribe", secret, email)
                body, ctype, ids = ONE_CLICK_BODY, FORM, []
            else:
                ids = [f"{tag}-{n}-{i}-{k}" for k in range(events_per_delivery)]
                events = [{"sg_event_id": e, "event": "bounce" if k == 0 else "delivered",
                           "email": f"{e}@example.com", "timestamp": 1617184800, "issue": "2021-03"}
                          for k, e in enumerate(ids)]
                method, target, body, ctype, email = "POST", "/webhooks/sendgrid", json.dumps(events).encode(), \
                    "application/json", ""
            try:
                conn.request(method, target, body=body, headers={"Content-Type": ctype})
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 300
            except (OSError, http.client.HTTPException):
                with acked.lock:
                    acked.unanswered += 1
                conn.close()
                if stop.is_set():
                    return
                time.sleep(0.01)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            if ok:
                with acked.lock:
                    if ids:
                        acked.event_ids.extend(ids)
                    else:
                        acked.emails.append(email)
        conn.close()

    started = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(threads)]
    for t in started:
        t.start()
    return started


def lost_after_kill(cwd: Path, env: dict[str, str], secret: str, tag: str, run_for: float) -> tuple[int, int, int]:
    """Start the service, storm it, kill -9 it after `run_for` seconds; then count what was
    acknowledged but is not in the store. Returns (acknowledged requests, lost, unanswered)."""
    from newsletter.config import load_settings
    from newsletter.ledger import key_of

    service = ServiceProcess(cwd, env).wait_ready()
    acked, stop = Acked(), threading.Event()
    clients = storm(service.port, secret, tag, acked, stop)
    time.sleep(run_for)
    service.kill9()
    stop.set()
    for t in clients:
        t.join(timeout=15)
    settings = load_settings(cwd / "newsletter.toml", env=env)
    with settings.open_store() as store:
        suppressed = set(store.suppressions.reasons(key_of(e) for e in acked.emails))
        kept = {r[0] for r in store.db.execute("SELECT event_id FROM events WHERE event_id LIKE ?", (f"{tag}-%",))}
    lost = sum(key_of(e) not in suppressed for e in acked.emails) + sum(e not in kept for e in acked.event_ids)
    requests = len(acked.emails) + len(acked.event_ids) // 5
    return requests, lost, acked.unanswered


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    env.update(extra)
    return env
