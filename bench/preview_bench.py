#!/usr/bin/env python3
"""Preview benchmark: how fast `newsletter preview` follows an edit.

    PYTHONPATH=. .venv/bin/python bench/preview_bench.py [ISSUE] [-n 50] [--saves 20]

Prints, for one issue (default issues/2021-03.yaml, copied into a throwaway project):
  * the in-process re-render the preview does on each save, with one Renderer kept for the process:
    load + validate + Jinja2 + MJML + premailer + text + checks (pipeline.prepare), median and p95 in ms
    (target < 30 ms), and the YAML load alone. Each save changes one section's text, in turn, so the
    Renderer's caches (Markdown by text, parsed CSS) serve the unchanged parts only; the same render
    with nothing cached is printed beside it;
  * npm `mjml`'s in-process mjml2html for the same MJML (node, .tools/node_modules/mjml), median and p95;
  * save-to-updated-page latency in Chromium: `newsletter preview` runs as its own process, as the
    editor runs it; write the issue file, wait until the open page's iframe shows the change (poll
    40 ms + render + server-sent event + fetch + the body swapped in), median and p95
    (target < 300 ms).
A report, not a timed test: exit code 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NODE_MJML = ROOT / ".tools" / "node_modules" / "mjml"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]  # the email's images: never fetched
NODE_SCRIPT = """
const mjml2html = require(process.argv[1]);
const fs = require('fs');
const src = fs.readFileSync(process.argv[2], 'utf8');
const n = Number(process.argv[3]);
(async () => {
  const times = [];
  for (let i = 0; i < n + 3; i++) {
    const t = process.hrtime.bigint();
    await mjml2html(src, {validationLevel: 'soft'});
    if (i >= 3) times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  console.log(JSON.stringify(times));
})();
"""


def stats(samples: list[float]) -> str:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]
    return f"median {statistics.median(s):7.1f} ms   p95 {p95:7.1f} ms   (n={len(s)})"


def project(issue: Path) -> Path:
    root = Path(tempfile.mkdtemp(prefix="preview-bench-"))
    shutil.copy(ROOT / "newsletter.toml", root / "newsletter.toml")
    (root / "issues").mkdir()
    shutil.copy(issue, root / "issues" / issue.name)
    return root


def edited(original: str, i: int) -> str:
    """The issue as the editor saves it: one section's text changed (the i-th `|` block, in turn)."""
    blocks = [m.end() for m in re.finditer(r"(?m)^( *)body: \|\n", original)]
    if not blocks:
        return original.replace("subject:", f"title: edit {i}\nsubject:", 1)
    at = blocks[i % len(blocks)]
    indent = re.match(r" *", original[at:]).group()
    return original[:at] + f"{indent}Правка {i}.\n\n" + original[at:]


def in_process(root: Path, issue: Path, n: int) -> str:
    from newsletter.config import load_settings
    from newsletter.issue import load_issue
    from newsletter.pipeline import prepare
    from newsletter.render import Renderer

    settings = load_settings(root / "newsletter.toml", env={})
    renderer = Renderer(settings)
    prepare(issue, settings, renderer)  # warm-up: imports, premailer, templates compiled
    original = issue.read_text(encoding="utf-8")
    total, cold, load = [], [], []
    try:
        for i in range(n):
            # a save: one section's text changed, so its Markdown is new and the file is read whole
            issue.write_text(edited(original, i), encoding="utf-8")
            t = time.perf_counter()
            prepared = prepare(issue, settings, renderer)
            total.append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            load_issue(issue, default_language=settings.language)
            load.append(1000 * (time.perf_counter() - t))
            # nothing kept from the last render: every section's Markdown and the CSS parsed anew
            fresh = Renderer(settings)
            fresh._inliner = renderer.inliner.__class__()  # premailer's modules stay loaded
            fresh.templates = renderer.templates  # compiled templates stay: Jinja keeps them too
            t = time.perf_counter()
            prepare(issue, settings, fresh)
            cold.append(1000 * (time.perf_counter() - t))
    finally:
        issue.write_text(original, encoding="utf-8")
    print(f"re-render after a save (prepare) {stats(total)}   target < 30 ms")
    print(f"  of which YAML load+validate    {stats(load)}")
    print(f"  the same with nothing cached   {stats(cold)}")
    return prepared.rendered.mjml


def node_mjml(mjml: str, n: int) -> None:
    if not (NODE_MJML.is_dir() and shutil.which("node")):
        print("npm mjml in process: skipped (no .tools/node_modules/mjml or node; bench/setup-tools.sh)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".mjml", delete=False, encoding="utf-8") as f:
        f.write(mjml)
    out = subprocess.run(["node", "-e", NODE_SCRIPT, str(NODE_MJML), f.name, str(n)], capture_output=True,
                         text=True, timeout=600, check=False)
    if out.returncode:
        print(f"npm mjml in process: failed: {out.stderr.strip()[:300]}")
        return
    print(f"npm mjml2html in process (MJML only, no inlining/text)  {stats(json.loads(out.stdout))}")
    import mjml as mjml_python

    times = []
    for _ in range(n):
        t = time.perf_counter()
        mjml_python.mjml2html(mjml, fonts={})
        times.append(1000 * (time.perf_counter() - t))
    print(f"mjml-python mjml2html, same MJML                        {stats(times)}")


def browser_latency(root: Path, issue: Path, saves: int) -> None:
    if not CHROMIUM.exists():
        print("save-to-page latency: skipped (no /usr/bin/chromium)")
        return
    if saves <= 0:
        return
    from playwright.sync_api import sync_playwright

    from newsletter.studio import free_port

    # `newsletter preview` in its own process, as the editor runs it: sharing this process with
    # Playwright's client would make the server wait for the interpreter (~100 ms a save, measured)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "newsletter", "preview", str(issue), "--port", str(port)],
                              cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}/"
    original = issue.read_text(encoding="utf-8")
    times = []
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "preview of ...: http://127.0.0.1:PORT/ ..." once it renders
        if url not in line:
            raise RuntimeError(f"newsletter preview did not start: {line}{server.stdout.read()}")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            # no page.route() here: it sends every request through this process (~100 ms a save,
            # measured); the browser itself resolves no host but 127.0.0.1 (LAUNCH_ARGS)
            for _ in range(100):  # the server listens a moment after it prints its address
                try:
                    page.goto(url)
                    break
                except Exception:  # noqa: BLE001 - connection refused until uvicorn listens
                    time.sleep(0.05)
            page.wait_for_function("document.getElementById('desktop').srcdoc.length > 0")
            for i in range(saves):
                marker = f"BENCH-{i}-{time.monotonic_ns()}"
                if re.search(r"(?m)^title:", original):
                    text = re.sub(r"(?m)^title:.*$", f"title: {marker}", original, count=1)
                else:
                    text = original.replace("subject:", f"title: {marker}\nsubject:", 1)
                time.sleep(0.35 + (i % 4) * 0.03)  # saves land at different points of the poll cycle
                t = time.perf_counter()
                issue.write_text(text, encoding="utf-8")
                page.wait_for_function(
                    "m => { const d = document.getElementById('desktop').contentDocument;"
                    " return d && d.body && d.body.textContent.includes(m); }", arg=marker, polling="raf",
                    timeout=10_000)
                times.append(1000 * (time.perf_counter() - t))
            browser.close()
    finally:
        issue.write_text(original, encoding="utf-8")
        server.terminate()
        server.wait(10)
    print(f"save -> updated page in Chromium {stats(times)}   target < 300 ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("issue", nargs="?", type=Path, default=ROOT / "issues" / "2021-03.yaml")
    ap.add_argument("-n", type=int, default=50, help="re-renders to time")
    ap.add_argument("--saves", type=int, default=20, help="file saves to time in the browser")
    args = ap.parse_args()
    root = project(args.issue)
    issue = root / "issues" / args.issue.name
    print(f"issue {args.issue}, {args.issue.stat().st_size:,} bytes of YAML")
    mjml = in_process(root, issue, args.n)
    node_mjml(mjml, args.n)
    browser_latency(root, issue, args.saves)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
