"""A new user's first minutes, as they would live them: build the wheel, install it (not editable) in a
fresh virtualenv, and in an empty folder run init -> check -> render -> dry run -> a test send to a
local SMTP server, with no file copied from this repository.

The fresh venv gets newsletter from the wheel alone; its dependencies are not downloaded again (no
network in tests): a .pth line lets it import them from the venv this test runs in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from smtp_server import Recorder


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv with newsletter installed from a freshly built wheel."""
    tmp = tmp_path_factory.mktemp("install")
    dist = tmp / "dist"
    # build from a copy: an in-tree build leaves build/ and *.egg-info in the checkout
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".tools", "out", "outbox", "site", ".newsletter", "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("newsletter-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies, from this venv: a plain path line (the editable newsletter's own .pth in
    # that folder is not processed, so the repository stays invisible)
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from a checkout
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300, env=clean)
    return venv / "bin"


def run(bin_dir: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = clean_env(env)
    full.pop("PYTHONPATH", None)  # nothing may come from the repository
    return subprocess.run([str(bin_dir / "newsletter"), *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120)


def test_wheel_walkthrough_in_an_empty_folder(installed: Path, tmp_path: Path, serve) -> None:
    probe = subprocess.run([str(installed / "python"), "-c", "import newsletter; print(newsletter.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert str(installed.parent) in probe.stdout, "newsletter must come from the wheel, not the repository"

    folder = tmp_path / "my-letter"
    r = run(installed, "check", "x.yaml", cwd=tmp_path)
    assert r.returncode == 1 and "no newsletter.toml in" in r.stderr and "newsletter init" in r.stderr

    r = run(installed, "init", "my-letter", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".gitignore", "issues/first-issue.yaml", "newsletter.toml", "subscribers/readers.csv"]
    assert not (folder / "templates").exists()  # the built-in templates serve until asked for copies

    r = run(installed, "check", "issues/first-issue.yaml", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert "0 errors" in r.stdout

    r = run(installed, "render", "issues/first-issue.yaml", cwd=folder)
    assert r.returncode == 0, r.stderr
    html = (folder / "out" / "first-issue.html").read_text()
    assert "How an issue is built" in html and "Unsubscribe" in html and "Hello there!" in html

    r = run(installed, "send", "issues/first-issue.yaml", "--list", "readers", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert "would receive it        3" in r.stdout
    assert (folder / "outbox" / "first-issue" / "recipients.csv").read_text().count("@example.com") == 3

    handler = Recorder()
    port = serve(handler)
    env = {"NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(port),
           "NEWSLETTER_SECRET": "a-real-key-for-this-test-0123456789abcdef"}
    r = run(installed, "send", "issues/first-issue.yaml", "--list", "readers", "--test", cwd=folder, env=env)
    assert r.returncode == 0, r.stderr
    assert "[TEST] copy to editor@example.com: sent" in r.stdout
    (_, rcpts, msg, _), = handler.messages
    assert rcpts == ["editor@example.com"] and msg["Subject"].startswith("[TEST] ")


def test_init_with_templates_gives_editable_copies_that_win(installed: Path, tmp_path: Path) -> None:
    r = run(installed, "init", "--templates", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    copies = sorted(p.name for p in (tmp_path / "templates").iterdir())
    assert copies == ["archive.html.j2", "digest.css", "digest.mjml.j2", "digest.txt.j2", "labels.toml"]
    mjml = tmp_path / "templates" / "digest.mjml.j2"
    mjml.write_text(mjml.read_text().replace("<mj-body", '<mj-body css-class="my-own-layout"'))
    r = run(installed, "render", "issues/first-issue.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "my-own-layout" in (tmp_path / "out" / "first-issue.html").read_text()


def test_the_wheel_carries_its_metadata_licence_and_data(installed: Path, tmp_path: Path) -> None:
    """What pip and a user see: the version the code reports, the Python it needs, the command, the
    MIT licence text (pyproject says MIT; the licence asks for its text to travel with the copies),
    and the files the code opens at run time."""
    script = """
import json, importlib.metadata as md, newsletter
from importlib.resources import files
m = md.metadata("newsletter")
root = files("newsletter")
print(json.dumps({
    "version": m["Version"], "code": newsletter.__version__, "python": m["Requires-Python"],
    "license": m["License-Expression"], "scripts": [e.value for e in md.entry_points(group="console_scripts")
                                                     if e.name == "newsletter"],
    "licences": sorted(str(f) for f in md.files("newsletter") or [] if "/licenses/" in str(f)),
    "data": [root.joinpath(p).is_file() for p in ("data/caniemail.json", "data/caniemail-LICENSE",
             "studio_page.html", "templates/digest.mjml.j2", "templates/labels.toml", "starter/newsletter.toml")],
}))"""
    r = subprocess.run([str(installed / "python"), "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["version"] == got["code"]
    assert got["python"] == ">=3.11" and got["license"] == "MIT"
    assert got["scripts"] == ["newsletter.cli:main"]
    assert any(f.endswith("/licenses/LICENSE") for f in got["licences"]), got["licences"]
    assert all(got["data"]), got["data"]
