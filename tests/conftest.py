"""Shared fixtures: a throwaway project (newsletter.toml, the built-in templates) and a CLI runner
that runs the command line in-process (click's CliRunner) with the editor's arguments, working
folder and environment; tests about signals and terminals start real processes themselves."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

import pg_server
from smtp_server import CountingController, Recorder, free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "issues" / "2021-03.yaml"

CONFIG = """\
[newsletter]
name = "Test Digest"
language = "en"
from_name = "Test Digest"
from_email = "digest@example.org"
reply_to = "editor@example.org"
postal_address = "1 Example Street, Springfield"
unsubscribe_url = "https://example.org/unsubscribe?email={email}&token={token}"
unsubscribe_mailto = "unsubscribe@example.org"
preview = ["preview@example.org"]
provider = "smtp"

[smtp]
host = "127.0.0.1"
port = 2525
"""

SMALL_ISSUE = """\
subject: "Hello {{ subscriber.name | default('reader') }}: the March digest"
date: 2021-03-31
language: en
preheader: "Self-supervised vision, transformers for video and a GAN that composes scenes"
intro: |
  Hi {{ subscriber.name | default("reader") }}! This month: **three** papers & one repo.
sections:
  - title: SEER
    image:
      src: https://example.org/seer.png
      alt: A chart of SEER's accuracy against model size
      caption: Accuracy grows with the number of parameters.
    links:
      - label: paper
        url: https://arxiv.org/abs/2103.01988
      - label: blog post
        url: https://ai.facebook.com/blog/seer
    body: |
      A 1.3-billion-parameter model trained on a billion [Instagram](https://instagram.com/?a=1&b=2) photos.

      - no labels
      - 84.2% top-1 on ImageNet
  - title: No image, no links
    body: Plain prose with <script>alert(1)</script> shown as text.
outro: |
  P.S. Reply to this email to tell us what you think.
"""


@dataclass
class Project:
    root: Path

    def write_issue(self, text: str, name: str = "issue.yaml") -> Path:
        path = self.root / "issues" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def write_list(self, text: str, name: str = "readers") -> Path:
        path = self.root / "subscribers" / f"{name}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    return Project(root)  # no templates/: the built-in ones serve, as in a project `init` made


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the developer's own newsletter settings, plus `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    full.update({"COLUMNS": "200", "NO_COLOR": "1", **(env or {})})
    return full


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """`newsletter ARGS` in `cwd`, in-process, as the editor would run it (no terminal attached)."""
    from newsletter.cli import cli

    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    old = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(cli, list(args), env={**unset, **clean_env(env)}, input=input,
                               prog_name="newsletter")
    finally:
        os.chdir(old)
    return Result(r.exit_code, r.stdout, r.stderr)


def run_process(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """`python -m newsletter ARGS` in a real process: for exit codes and messages as a shell sees them."""
    proc = subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=cwd, env=clean_env(env),
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def serve():
    """serve(handler, **aiosmtpd options) -> port; servers stop after the test."""
    started: list[Controller] = []

    def start(handler: Recorder, **kwargs: object) -> int:
        port = free_port()
        controller = CountingController(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        started.append(controller)
        handler.sessions = 0  # start() opens one connection of its own to check the server
        handler.max_open = handler.open_now = 0
        handler.servers.clear()
        return port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the session (see pg_server.py)."""
    if not pg_server.available():
        pytest.skip(f"PostgreSQL not found in {pg_server.PG_BIN}: apt-get install postgresql")
    cluster = pg_server.PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request) -> str | None:
    """Run a test against both state stores: None (SQLite in the state folder) or a fresh
    PostgreSQL database's URL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_cluster").new_database()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (NEWSLETTER_NO_SKIPS=1) a skipped test is a failure: a missing browser or tool must not
    turn the browser, Prism or MailDev tests into a silent green."""
    if os.environ.get("NEWSLETTER_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"NEWSLETTER_NO_SKIPS=1: {len(skipped)} tests were skipped; failing the run", red=True)
        for report in skipped:
            reporter.write_line(f"  skipped: {report.nodeid}: {report.longrepr[-1] if report.longrepr else ''}")
        session.exitstatus = 1
