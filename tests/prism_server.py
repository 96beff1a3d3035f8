"""Prism (npm @stoplight/prism-cli) serving one of SendGrid's published OpenAPI specs on a free local
port: every request a test sends is checked against the spec (violations in `sl-violations`)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PRISM = Path(__file__).resolve().parent.parent / ".tools" / "node_modules" / ".bin" / "prism"


@contextmanager
def prism_mock(spec: Path, log: Path) -> Iterator[str]:
    """The base URL of a Prism mock of `spec`; stopped when the block ends."""
    if not PRISM.exists():
        pytest.skip(f"{PRISM} not found: run bench/setup-tools.sh (npm @stoplight/prism-cli@5.14.2)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("w") as out:
        proc = subprocess.Popen([str(PRISM), "mock", "-h", "127.0.0.1", "-p", str(port), str(spec)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prism exited with {proc.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"prism did not answer on port {port} within 60 s:\n{log.read_text()}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
