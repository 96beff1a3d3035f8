#!/usr/bin/env python3
"""Render benchmark: our pipeline (Jinja2 -> mjml-python -> premailer) against the official MJML CLI.

    .venv/bin/python bench/render_bench.py [ISSUE] [-n 50] [--process-runs 10] [--strict]

Reports, for one issue (default issues/2021-03.yaml):
  * in-process `Renderer.render` time (median of N runs after a warm-up) and its stages;
  * whole-process `newsletter render ISSUE --out TMP` wall time (median of ~10 runs);
  * the official MJML CLI (.tools/, see bench/setup-tools.sh) compiling the .mjml that
    `newsletter render` wrote, `mjml in.mjml -o out.html` (median of ~10 runs);
  * HTML bytes, ours vs MJML's, and whether ours stays under Gmail's ~102 KB clipping limit;
  * ratios with targets: process time ours/MJML <= 0.8, bytes ours/MJML <= 1.0.

It is a report: the exit code is 0 whatever the figures, unless --strict (then 1 on any FAIL, 2 when a
target cannot be evaluated, e.g. without .tools/). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
NEWSLETTER = ROOT / ".venv" / "bin" / "newsletter"
MJML = ROOT / ".tools" / "node_modules" / ".bin" / "mjml"
DEFAULT_ISSUE = ROOT / "issues" / "2021-03.yaml"

GMAIL_CLIP = 102_000  # bytes; the same limit as newsletter.checks.SIZE_ERROR
TIME_TARGET = 0.8  # ours / MJML CLI, whole process
BYTES_TARGET = 1.0  # ours / MJML CLI (its default output)

try:
    from newsletter.config import load_settings
    from newsletter.issue import load_issue
except ImportError:
    # run with a Python outside the venv: re-run under the project's venv
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    raise


# --------------------------------------------------------------------------------------------- utils


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def spread(samples: Sequence[float]) -> str:
    return f"(min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f}, n={len(samples)})"


W = 58  # label column


def row(label: str, seconds: float, extra: str = "") -> None:
    print(f"  {label:<{W}}{ms(seconds)}  {extra}".rstrip())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def time_process(cmd: list[str], runs: int, cwd: Path) -> list[float]:
    """Wall time of `runs` runs of cmd (after one untimed warm-up run); raises on failure."""
    run_checked(cmd, cwd)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - t0)
    return samples


def run_checked(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode}:\n{p.stderr.strip() or p.stdout.strip()}")
    return p


# ---------------------------------------------------------------------------------------- in process


class StageClock:
    """Accumulates time spent inside wrapped callables during one render."""

    def __init__(self) -> None:
        self.acc: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.acc[name] = self.acc.get(name, 0.0) + time.perf_counter() - t0

        return timed


def bench_in_process(issue_path: Path, runs: int) -> dict:
    from jinja2 import Template

    from newsletter import render as render_mod
    from newsletter.checks import check_issue
    from newsletter.inline import Inliner
    from newsletter.personalize import sample_message
    from newsletter.render import Renderer

    settings = load_settings(ROOT / "newsletter.toml")
    stem = issue_path.stem

    issue = load_issue(issue_path, default_language=settings.language)
    renderer = Renderer(settings)  # one per project, as the CLI and the preview use it
    rendered = renderer.render(issue, stem)  # warm-up: imports premailer, loads templates

    total = []
    for _ in range(runs):
        t0 = time.perf_counter()
        renderer.render(issue, stem)
        total.append(time.perf_counter() - t0)

    # Stages, in a separate pass so the wrappers do not touch the figures above. Class attributes
    # and module globals are patched for the duration only; nothing in newsletter/ is changed.
    clock = StageClock()
    patched = {
        "_prose": Renderer._prose,
        "inline": Inliner.inline,
        "mjml": render_mod.mjml,
    }
    template_render = Template.render
    stage_names = [
        ("_prose", "Markdown prose -> HTML + text (markdown-it, html2text)"),
        ("jinja", "Jinja2 templates (.mjml.j2, .txt.j2)"),
        ("mjml2html", "MJML -> HTML (mjml-python)"),
        ("inline", "CSS inlining (premailer)"),
    ]
    stages: dict[str, list[float]] = {k: [] for k, _ in stage_names}
    stages["other"] = []
    try:
        Renderer._prose = clock.wrap("_prose", patched["_prose"])  # type: ignore[method-assign]
        Inliner.inline = clock.wrap("inline", patched["inline"])  # type: ignore[method-assign]
        render_mod.mjml = types.SimpleNamespace(mjml2html=clock.wrap("mjml2html", patched["mjml"].mjml2html))
        Template.render = clock.wrap("jinja", template_render)
        for _ in range(runs):
            clock.acc = {}
            t0 = time.perf_counter()
            renderer.render(issue, stem)
            elapsed = time.perf_counter() - t0
            for k, _ in stage_names:
                stages[k].append(clock.acc.get(k, 0.0))
            stages["other"].append(elapsed - sum(clock.acc.values()))
    finally:
        Renderer._prose = patched["_prose"]  # type: ignore[method-assign]
        Inliner.inline = patched["inline"]  # type: ignore[method-assign]
        render_mod.mjml = patched["mjml"]
        Template.render = template_render
    stage_names.append(("other", "rest of Renderer.render (dates, merge tokens, labels)"))

    # what `newsletter render` does around the render
    around = {
        "load_issue": ("load + validate the issue (YAML, pydantic)",
                       lambda: load_issue(issue_path, default_language=settings.language)),
        "check_issue": ("pre-send checks (check_issue)",
                        lambda: check_issue(issue, issue_path, settings, rendered)),
        "personalize": ("fill tokens for the sample reader (sample_message)",
                        lambda: sample_message(rendered, settings)),
    }
    around_samples: dict[str, list[float]] = {}
    for key, (_, fn) in around.items():
        fn()
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        around_samples[key] = samples

    return {
        "total": total,
        "stages": [(label, stages[k]) for k, label in stage_names],
        "around": [(around[k][0], around_samples[k]) for k in around],
    }


# ------------------------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("issue", nargs="?", type=Path, default=DEFAULT_ISSUE,
                    help=f"issue file (default: {DEFAULT_ISSUE.relative_to(ROOT)})")
    ap.add_argument("-n", "--runs", type=int, default=50, help="in-process runs (default: 50)")
    ap.add_argument("--process-runs", type=int, default=10, help="runs per subprocess benchmark (default: 10)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when a target FAILs (2 when a target cannot be evaluated)")
    args = ap.parse_args(argv)

    issue_path = args.issue.resolve()
    if not issue_path.is_file():
        print(f"error: {args.issue}: no such issue file", file=sys.stderr)
        return 2
    if not NEWSLETTER.exists():
        print(f"error: {NEWSLETTER} missing: create the venv and `pip install -e .`", file=sys.stderr)
        return 2
    stem = issue_path.stem
    have_mjml = MJML.exists()

    from importlib.metadata import version

    print(f"Render benchmark: {rel(issue_path)}")
    print(f"  Python {platform.python_version()}, mjml-python {version('mjml-python')}, "
          f"premailer {version('premailer')}, {platform.machine()} / {os.cpu_count()} CPUs")
    if have_mjml:
        node = shutil.which("node")
        node_v = run_checked([node, "--version"], ROOT).stdout.strip() if node else "?"
        mjml_v = " ".join(run_checked([str(MJML), "--version"], ROOT).stdout.split())
        print(f"  Node {node_v}, MJML CLI ({mjml_v})")
    print()

    # 1. in process
    r = bench_in_process(issue_path, args.runs)
    print(f"In-process Renderer.render (median of {args.runs}, after a warm-up)")
    row("total", statistics.median(r["total"]), spread(r["total"]))
    for label, samples in r["stages"]:
        row("  " + label, statistics.median(samples))
    print("  around it in `newsletter render`:")
    for label, samples in r["around"]:
        row("  " + label, statistics.median(samples))
    print()

    failures: list[str] = []
    unevaluated: list[str] = []
    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        tmpdir = Path(tmp)
        out_dir = tmpdir / "ours"

        # 2. whole process
        cmd = [str(NEWSLETTER), "render", str(issue_path), "--out", str(out_dir)]
        try:
            ours = time_process(cmd, args.process_runs, ROOT)
            # the interpreter and every module `newsletter render` loads, without the work
            imports = "import newsletter.cli, newsletter.pipeline, newsletter.inline as i; i.Inliner()"
            startup = time_process([str(NEWSLETTER.parent / "python"), "-c", imports], args.process_runs, ROOT)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        ours_t = statistics.median(ours)
        print(f"Whole process (median of {args.process_runs}, after a warm-up)")
        row("newsletter render ISSUE --out TMP", ours_t, spread(ours))
        row("  of which interpreter + imports (python -c 'import ...')", statistics.median(startup))

        ours_html = out_dir / f"{stem}.html"
        mjml_src = out_dir / f"{stem}.mjml"
        ours_bytes = ours_html.stat().st_size

        # 3. official MJML CLI on the very .mjml we wrote
        theirs_bytes: int | None = None
        theirs_t: float | None = None
        if not have_mjml:
            print(f"  MJML CLI: {rel(MJML)} not found; run bench/setup-tools.sh to compare with it")
        else:
            official = tmpdir / "mjml-default.html"
            mjml_cmd = [str(MJML), str(mjml_src), "-o", str(official)]
            try:
                theirs = time_process(mjml_cmd, args.process_runs, ROOT)
                node_start = time_process([str(MJML), "--version"], args.process_runs, ROOT)
                variants = {}
                for flag in ("false", "true"):
                    out = tmpdir / f"mjml-minify-{flag}.html"
                    p = run_checked([str(MJML), str(mjml_src), "--config.minify", flag, "-o", str(out)], ROOT)
                    variants[flag] = (out.stat().st_size, p.stderr.strip())
            except RuntimeError as e:
                print(f"  MJML CLI failed: {e}")
                have_mjml = False
            else:
                theirs_t = statistics.median(theirs)
                theirs_bytes = official.stat().st_size
                row("mjml in.mjml -o out.html (official CLI, defaults)", theirs_t, spread(theirs))
                row("  of which Node + module loading (mjml --version)", statistics.median(node_start))
        print()

        # 4. bytes
        print("HTML size")
        print(f"  {'ours (newsletter render: mjml-python + premailer)':<{W}}{ours_bytes:>8,} bytes")
        if theirs_bytes is not None:
            print(f"  {'MJML CLI, defaults':<{W}}{theirs_bytes:>8,} bytes")
            default_is = [f for f, (size, _) in variants.items() if size == theirs_bytes]
            for flag, (size, warn) in variants.items():
                note = "  (= default)" if flag in default_is else ""
                print(f"  {'MJML CLI, --config.minify ' + flag:<{W}}{size:>8,} bytes{note}")
                for line in warn.splitlines():
                    print(f"      mjml stderr: {line}")
            print("  (MJML's output is the template without our CSS inlined, with merge tokens unfilled;")
            print("   ours has styles inlined and the sample reader's values filled in)")
        gmail_ok = ours_bytes < GMAIL_CLIP
        print(f"  {f'ours < {GMAIL_CLIP:,} bytes (Gmail clipping)':<{W}}{verdict(gmail_ok):>8}")
        if not gmail_ok:
            failures.append("gmail")
        print()

    # 5. ratios
    print("Targets")
    if theirs_t is None or theirs_bytes is None:
        print("  process time ours/MJML <= 0.8: not evaluated (no MJML CLI; run bench/setup-tools.sh)")
        print("  bytes ours/MJML <= 1.0:        not evaluated (no MJML CLI; run bench/setup-tools.sh)")
        unevaluated += ["time", "bytes"]
    else:
        t_ratio = ours_t / theirs_t
        b_ratio = ours_bytes / theirs_bytes
        t_ok, b_ok = t_ratio <= TIME_TARGET, b_ratio <= BYTES_TARGET
        print(f"  process time ours/MJML = {ours_t * 1000:.1f}/{theirs_t * 1000:.1f} ms = {t_ratio:.3f}  "
              f"(target <= {TIME_TARGET})  {verdict(t_ok)}")
        if not t_ok:
            print(f"      {ours_t / (theirs_t * TIME_TARGET) - 1:+.1%} over the target; "
                  f"ours needs to lose {(ours_t - theirs_t * TIME_TARGET) * 1000:.1f} ms")
        print(f"  bytes ours/MJML        = {ours_bytes:,}/{theirs_bytes:,} = {b_ratio:.3f}  "
              f"(target <= {BYTES_TARGET})  {verdict(b_ok)}")
        if not b_ok:
            print(f"      ours is {ours_bytes - theirs_bytes:,} bytes ({b_ratio - 1:+.1%}) bigger")
        failures += [name for name, ok in (("time", t_ok), ("bytes", b_ok)) if not ok]

    if args.strict:
        if failures:
            return 1
        if unevaluated:
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
