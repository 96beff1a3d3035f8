#!/usr/bin/env python3
"""Send benchmark: `newsletter send` (dry run, SMTP, SendGrid) against mailmerge 2.3.

    .venv/bin/python bench/send_bench.py            # full sizes (~2.5 min on 2 cores)
    .venv/bin/python bench/send_bench.py --quick    # sizes / 10 (~20 s), for a smoke run
    .venv/bin/python bench/send_bench.py --keep     # keep the temp project (CSVs, outbox, ledgers)
    .venv/bin/python bench/send_bench.py --only 3 --baseline DIR   # SMTP, before (DIR) and after
                                                    # (DIR: `git archive <commit> newsletter | tar -x -C DIR`)
    .venv/bin/python bench/send_bench.py --only 1 --only 2   # only the dry run and its memory

One-time setup for the mailmerge comparison (a separate venv, never .venv):

    python3 -m venv .tools/mailmerge-venv && .tools/mailmerge-venv/bin/pip install mailmerge==2.3

Every figure comes from a whole `newsletter send issues/2021-03.yaml --list <csv> ...` process run in
a temporary copy of the project (newsletter.toml, templates/, issues/), so outbox/ and .newsletter/
land there. Subscriber lists are generated: `email,name,company` = userN@example.com, "Имя N", a
company. Per-recipient costs subtract the wall time of a 1-recipient run (start-up, render, checks).
Peak memory is each process's own ru_maxrss, read with os.wait4() on that one child (the same figure
as /usr/bin/time -v's "Maximum resident set size"), so no measurement sees another's. A child starts
with this process's peak as its own (Linux keeps it across exec), so this process stays small: it
never renders an issue itself (the mailmerge template is written by a child too).

Sections and targets:
  1. Dry run to 100,000 subscribers: wall time, time per recipient; mailmerge --dry-run on 2,000 rows
     with the same rows and the same rendered HTML+text body (multipart/alternative); per-recipient
     ratio ours/mailmerge <= 0.05 (20x faster).
  2. Peak RSS of the dry run for 100,000 and 1,000,000 subscribers: 1M <= 1.5x the 100k figure and
     1M < 200 MB; plus the time for 1M.
  3. SMTP to Postfix's smtp-sink (a C sink, so that the server is not what is measured; aiosmtpd when
     smtp-sink is missing): messages/s of `--send --yes --provider smtp` for 2,000 recipients with
     [smtp] connections = 1 and = 4, and of mailmerge --no-dry-run to the same server, interleaved in
     rounds; the ratios, and the CPU time per message of each process and of the sink (target: 10x
     mailmerge, a report).
  4. SendGrid to a local stand-in (http.server answering 202 on POST /v3/mail/send): requests and
     bytes per 100,000 recipients, and the time (no target, a report).
  5. SMTP to smtp-sink, 10,000 recipients, [smtp] connections = 1 against 4.
  6. 4 `--worker` processes sharing one PostgreSQL record (tests/pg_server.py starts a throwaway
     cluster), 100,000 recipients: the total time to smtp-sink, then again to bench/count_sink.py,
     which counts the copies each recipient got (target: 0 second copies).
--quick divides the sizes by 10 (the targets are then only indicative).

It is a report: the exit code is 0 whatever the figures. Standard library only (plus .venv).
A section whose tool is missing (mailmerge venv, aiosmtpd) is skipped with a hint.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checkout_with(relative: str) -> Path:
    """ROOT, or the main checkout when ROOT is a git worktree without its own .venv or .tools."""
    if (ROOT / relative).exists():
        return ROOT
    common = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--git-common-dir"], capture_output=True,
                            text=True, check=False).stdout.strip()
    main = (ROOT / common).resolve().parent if common else ROOT
    return main if (main / relative).exists() else ROOT


VENV_PYTHON = _checkout_with(".venv") / ".venv" / "bin" / "python"
NEWSLETTER = VENV_PYTHON.parent / "newsletter"
MAILMERGE_VENV = _checkout_with(".tools/mailmerge-venv") / ".tools" / "mailmerge-venv"
MAILMERGE = MAILMERGE_VENV / "bin" / "mailmerge"
ISSUE = Path("issues") / "2021-03.yaml"  # relative to the temp project
MAILMERGE_HINT = ("python3 -m venv .tools/mailmerge-venv && "
                  ".tools/mailmerge-venv/bin/pip install mailmerge==2.3")

RATIO_TARGET = 1 / 20  # ours / mailmerge, per recipient, dry run
RSS_GROWTH_TARGET = 1.5  # peak RSS 1M / 100k
RSS_LIMIT_MB = 200.0  # peak RSS at 1M
SECRET = "bench-secret-not-for-production-0123456789"

sys.path.insert(0, str(ROOT))  # this checkout's newsletter, not whatever the venv has installed
try:
    import newsletter  # noqa: F401
except ImportError:
    # run with a Python outside the venv: re-run under the project's venv
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    raise


# --------------------------------------------------------------------------------------------- utils

W = 62  # label column


def header(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 96 - len(title)), flush=True)


def line(label: str, value: str) -> None:
    print(f"  {label:<{W}}{value}", flush=True)


def note(text: str) -> None:
    print(f"  {text}", flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def secs(s: float) -> str:
    return f"{s:9.3f} s"


def us(s: float) -> str:
    return f"{s * 1e6:9.1f} µs"


def mb(kb: float) -> str:
    return f"{kb / 1024:9.1f} MB"


@dataclass
class Run:
    wall: float  # seconds
    maxrss_kb: int  # this process's own peak RSS
    rc: int
    stdout: str
    stderr: str
    cpu: float = 0.0  # this process's user + system time, seconds


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], keep_stdout: bool = True) -> Run:
    """Run one process; wall time and its own peak RSS via wait4 (isolated from every other run)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                             stdout=out if keep_stdout else subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(wall, usage.ru_maxrss, p.returncode, out.read().decode("utf-8", "replace"),
                   err.read().decode("utf-8", "replace"), usage.ru_utime + usage.ru_stime)


def checked(r: Run, what: str, ok_codes: tuple[int, ...] = (0,)) -> Run:
    if r.rc not in ok_codes:
        tail = (r.stderr.strip() or r.stdout.strip())[-2000:]
        raise RuntimeError(f"{what} exited {r.rc}:\n{tail}")
    return r


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.wall)[len(runs) // 2]


def base_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would change the figures (our settings, proxies)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEWSLETTER_", "SENDGRID_")) and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["NEWSLETTER_SECRET"] = SECRET
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------- the inputs


class Workspace:
    """A temp copy of the project plus generated subscriber lists, shared by the sections."""

    def __init__(self, keep: bool):
        self.dir = Path(tempfile.mkdtemp(prefix="send_bench-"))
        self.keep = keep
        self.project = self.dir / "project"
        self.project.mkdir()
        shutil.copy2(ROOT / "newsletter.toml", self.project / "newsletter.toml")
        for d in ("templates", "issues"):
            shutil.copytree(ROOT / d, self.project / d)
        self.lists = self.dir / "lists"
        self.lists.mkdir()
        self._csvs: dict[int, Path] = {}

    def csv(self, n: int) -> Path:
        """email,name,company with n rows, generated once."""
        if n not in self._csvs:
            path = self.lists / f"subscribers-{n}.csv"
            with path.open("w", encoding="utf-8", newline="") as f:
                f.write("email,name,company\n")
                step = 50_000
                for start in range(0, n, step):
                    f.write("".join(f"user{i}@example.com,Имя {i},Компания {i % 1000}\n"
                                    for i in range(start, min(n, start + step))))
            self._csvs[n] = path
        return self._csvs[n]

    def fresh_state(self, label: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"state-{label}-", dir=self.dir))
        return path

    def close(self) -> None:
        if self.keep:
            print(f"\n(kept {self.dir})")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def newsletter_send(ws: Workspace, n: int, env: dict[str, str], *extra: str) -> Run:
    """`newsletter send` from this checkout (not whatever the venv's script points at)."""
    return run(_ours_here(ws, n, env, *extra), cwd=ws.project, env={**env, "PYTHONPATH": str(ROOT)})


def dry_run(ws: Workspace, n: int) -> Run:
    r = checked(newsletter_send(ws, n, base_env()), f"newsletter send (dry run, {n:,} recipients)")
    report = json.loads((ws.project / "outbox" / ISSUE.stem / "report-dry-run.json").read_text("utf-8"))
    if report.get("sent", report.get("would_send")) != n:
        raise RuntimeError(f"dry run to {n:,} reported {report.get('sent', report.get('would_send'))} recipients")
    return r


# --------------------------------------------------------------------------------------- mailmerge


def mailmerge_available() -> bool:
    return MAILMERGE.exists()


def mailmerge_version() -> str:
    try:
        p = subprocess.run([str(MAILMERGE), "--version"], capture_output=True, text=True, timeout=60, check=False)
        return p.stdout.strip().removeprefix("mailmerge, ")
    except (OSError, subprocess.SubprocessError):
        return "?"


def _jinja_literal(text: str) -> str:
    """Literal text for a Jinja template (mailmerge renders the whole file with Jinja2)."""
    if "{{" in text or "{%" in text or "{#" in text:
        return "{% raw %}" + text + "{% endraw %}"
    return text


def _jinja_string(s: str) -> str:
    return json.dumps(s)  # a valid Jinja string literal for our ASCII/UTF-8 strings


def write_mailmerge_files(ws: Workspace, smtp_port: int, *, html_only: bool = False) -> tuple[Path, Path, dict[str, int]]:
    """mailmerge_template.txt and mailmerge_server.conf (see _write_mailmerge_files), written by a
    child process: rendering here would grow this process, and a process started from it afterwards
    starts with this one's peak RSS as its own ru_maxrss (Linux keeps it across exec), which section
    2 would then report as the dry run's."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mailmerge-files", str(ws.dir), str(ws.project),
           str(smtp_port), "html" if html_only else "both"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=base_env(PYTHONPATH=str(ROOT)))
    written = json.loads(done.stdout)
    return Path(written["template"]), Path(written["config"]), written["sizes"]


def _write_mailmerge_files(ws: Workspace, smtp_port: int, *, html_only: bool = False) -> tuple[Path, Path, dict[str, int]]:
    """mailmerge_template.txt carrying the very body we send (HTML + text from the same render, the
    merge fields as Jinja over the row), and mailmerge_server.conf (plain SMTP, no auth). html_only:
    mailmerge_template_html.txt, the HTML part alone (mailmerge parses a multipart message's HTML
    with html5lib to find inline images, ~50 ms a message for this HTML; a single part skips that)."""
    from newsletter.config import load_settings
    from newsletter.merge import Filler
    from newsletter.personalize import Personalizer
    from newsletter.pipeline import prepare

    settings = load_settings(ws.project / "newsletter.toml", env=base_env())
    prepared = prepare(ws.project / ISSUE, settings)
    personalizer = Personalizer(prepared.rendered, settings, SECRET, provider="smtp")
    envelope = personalizer.envelope()

    # slot 0: the unsubscribe URL (mailmerge cannot sign it: a fixed token stands in for the HMAC)
    url_t = settings.unsubscribe_url or "https://example.org/unsubscribe?email={email}"
    pieces = re.split(r"(\{email\}|\{token\})", url_t)
    url_expr = " ~ ".join(
        "(email | urlencode)" if p == "{email}" else _jinja_string("mailmerge-token") if p == "{token}"
        else _jinja_string(p) for p in pieces if p)
    exprs = [url_expr]
    for f in prepared.rendered.fields:  # `subscriber.name | default("x")` -> `name | default("x")`
        e = re.sub(r"subscriber\.(\w+)", r"\1", f.source)
        e = re.sub(r"subscriber\[(['\"])(\w+)\1\]", r"\2", e)
        exprs.append(e)

    def to_jinja(text: str, escape: bool) -> str:
        filler = Filler(text)
        out = [_jinja_literal(filler.literals[0])]
        for slot, literal in zip(filler.slots, filler.literals[1:]):
            out.append("{{ (" + exprs[slot] + ")" + (" | e" if escape else "") + " }}")
            out.append(_jinja_literal(literal))
        return "".join(out)

    boundary = "==send-bench-boundary=="
    headers = [
        'TO: "{{ name }}" <{{ email }}>',
        f"SUBJECT: {to_jinja(envelope.subject, False)}",
        f'FROM: "{envelope.from_name}" <{envelope.from_email}>',
        *([f"REPLY-TO: {envelope.reply_to}"] if envelope.reply_to else []),
        "List-Unsubscribe: <{{ " + url_expr + " }}>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "MIME-Version: 1.0",
    ]
    if html_only:
        body = ["Content-Type: text/html; charset=utf-8", "", to_jinja(envelope.html, True), ""]
    else:
        body = [
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
            "",
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            to_jinja(envelope.text, False),
            f"--{boundary}",
            "Content-Type: text/html; charset=utf-8",
            "",
            to_jinja(envelope.html, True),
            f"--{boundary}--",
            "",
        ]
    template = "\n".join(headers + body)
    mm = ws.dir / "mailmerge"
    mm.mkdir(exist_ok=True)
    template_path = mm / ("mailmerge_template_html.txt" if html_only else "mailmerge_template.txt")
    template_path.write_text(template, encoding="utf-8")
    config_path = mm / "mailmerge_server.conf"
    # no `security` key = plain SMTP without login (2.3 also accepts the legacy `security = Never`)
    config_path.write_text(f"[smtp_server]\nhost = 127.0.0.1\nport = {smtp_port}\nratelimit = 0\n",
                           encoding="utf-8")
    sizes = {"html": len(envelope.html.encode()), "text": len(envelope.text.encode())}
    return template_path, config_path, sizes


def mailmerge_database(ws: Workspace, n: int) -> Path:
    """mailmerge_database.csv: the same rows as our list of n."""
    path = ws.dir / "mailmerge" / f"mailmerge_database-{n}.csv"
    if not path.exists():
        shutil.copyfile(ws.csv(n), path)
    return path


def mailmerge_run(template: Path, config: Path, database: Path, *, dry: bool) -> Run:
    cmd = [str(MAILMERGE), "--dry-run" if dry else "--no-dry-run", "--no-limit",
           "--template", str(template), "--database", str(database), "--config", str(config)]
    # stdout (every message, printed) goes to /dev/null, as asked; stderr is kept for errors
    r = run(cmd, cwd=template.parent, env=base_env(), keep_stdout=False)
    return checked(r, f"mailmerge ({database.name}, {'dry run' if dry else 'send'})")


# ------------------------------------------------------------------------------------------ sections


def section_dry_run(ws: Workspace, n: int, mm_rows: int) -> None:
    header(f"1. Dry run to {n:,} subscribers vs mailmerge 2.3 --dry-run")
    base = median_run([dry_run(ws, 1) for _ in range(3)])
    big = dry_run(ws, n)
    per = (big.wall - base.wall) / (n - 1)
    line("newsletter send, 1 recipient (start-up; median of 3)", secs(base.wall))
    line(f"newsletter send, {n:,} recipients (whole process)", secs(big.wall))
    line("  per recipient, raw (total / N)", us(big.wall / n))
    line("  per recipient, start-up subtracted ((T_N - T_1) / (N - 1))", us(per))
    line("  recipients per second (start-up subtracted)", f"{1 / per:9.0f} /s")

    if not mailmerge_available():
        note(f"mailmerge comparison SKIPPED: {MAILMERGE} not found; install it with:")
        note(f"  {MAILMERGE_HINT}")
        return
    template, config, sizes = write_mailmerge_files(ws, smtp_port=25)
    note(f"mailmerge {mailmerge_version()}: template = our rendered issue as multipart/alternative "
         f"(text {sizes['text']:,} B + HTML {sizes['html']:,} B), merge fields as Jinja; output to /dev/null")
    mm_base = median_run([mailmerge_run(template, config, mailmerge_database(ws, 1), dry=True)
                          for _ in range(3)])
    mm_big = mailmerge_run(template, config, mailmerge_database(ws, mm_rows), dry=True)
    mm_per = (mm_big.wall - mm_base.wall) / (mm_rows - 1)
    line("mailmerge --dry-run, 1 row (start-up; median of 3)", secs(mm_base.wall))
    line(f"mailmerge --dry-run --no-limit, {mm_rows:,} rows", secs(mm_big.wall))
    line("  per message, raw (total / N)", us(mm_big.wall / mm_rows))
    line("  per message, start-up subtracted", us(mm_per))
    ratio = per / mm_per
    line("ratio ours / mailmerge per recipient (start-up subtracted)",
         f"{ratio:9.4f}   (1/{1 / ratio:.0f}; target <= {RATIO_TARGET:.2f}: {verdict(ratio <= RATIO_TARGET)})")
    note("note: our dry run validates, de-duplicates and lists every reader and fills their merge fields, but")
    note("signs links and builds MIME for 3 samples only; mailmerge's dry run renders, parses and prints a")
    note("whole message per row.")


def section_memory(ws: Workspace, small: int, large: int) -> None:
    header(f"2. Peak memory (RSS) of the dry run: {small:,} vs {large:,} subscribers")
    note("each figure: that one process's ru_maxrss, from os.wait4() on it (as /usr/bin/time -v reports)")
    one = dry_run(ws, 1)
    r_small = dry_run(ws, small)
    r_large = dry_run(ws, large)
    line("peak RSS, 1 recipient (baseline: imports + render)", mb(one.maxrss_kb))
    line(f"peak RSS, {small:,} recipients", mb(r_small.maxrss_kb))
    line(f"peak RSS, {large:,} recipients", mb(r_large.maxrss_kb))
    growth = r_large.maxrss_kb / r_small.maxrss_kb
    line(f"growth {large:,} / {small:,}",
         f"{growth:9.2f} x   (target <= {RSS_GROWTH_TARGET}: {verdict(growth <= RSS_GROWTH_TARGET)})")
    large_mb = r_large.maxrss_kb / 1024
    line(f"peak RSS at {large:,} under {RSS_LIMIT_MB:.0f} MB",
         f"{large_mb:9.1f} MB (target < {RSS_LIMIT_MB:.0f} MB: {verdict(large_mb < RSS_LIMIT_MB)})")
    line(f"time, {large:,} recipients (whole process)", secs(r_large.wall))
    per = (r_large.wall - one.wall) / (large - 1)
    line("  per recipient, start-up subtracted", us(per))


class _SMTPSink:
    """aiosmtpd with the Sink handler, in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        cmd = [str(VENV_PYTHON), "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.port}",
               "-c", "aiosmtpd.handlers.Sink"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port):
            self.close()
            raise RuntimeError(f"aiosmtpd did not start listening on 127.0.0.1:{self.port}")

    def cpu(self) -> float:
        return _process_cpu(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _process_cpu(pid: int) -> float:
    """User + system seconds of a running process (Linux /proc); -inf where unknown, so that a
    difference of two is negative and not shown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("-inf")


def _aiosmtpd_available() -> bool:
    p = subprocess.run([str(VENV_PYTHON), "-c", "import aiosmtpd"], capture_output=True, check=False)
    return p.returncode == 0


def section_smtp(ws: Workspace, n: int, connections: int = 4, rounds: int = 3, baseline: Path | None = None,
                 counting: bool = False) -> None:
    header(f"3. SMTP: {n:,} recipients, ours ([smtp] connections = 1 and {connections}) vs mailmerge --no-dry-run"
           + (", to the counting sink" if counting else ""))
    if counting:
        sink: _PostfixSink | _SMTPSink | _CountingSink = _CountingSink(ws.dir / "count-sink-3.json")
        note(f"server: bench/count_sink.py on 127.0.0.1:{sink.port} (Python asyncio; finds the end of DATA with "
             "bytes.find, so it costs less per message than smtp-sink, which reads DATA line by line)")
    elif Path(SMTP_SINK).exists():
        sink = _PostfixSink()
        note(f"server: Postfix smtp-sink on 127.0.0.1:{sink.port} (C, one process for all connections)")
    elif _aiosmtpd_available():
        sink = _SMTPSink()
        note("smtp-sink not found (apt-get install -y postfix): aiosmtpd instead, which caps at ~105 messages/s "
             "of this size, so the figures below are the server's")
    else:
        note("SKIPPED: neither smtp-sink (apt-get install -y postfix) nor aiosmtpd (.venv) is installed")
        return
    try:
        def ours(k: int, recipients: int, label: str, code: Path = ROOT) -> Run:
            env = base_env(PYTHONPATH=str(code), NEWSLETTER_SMTP_HOST="127.0.0.1",
                           NEWSLETTER_SMTP_PORT=str(sink.port), NEWSLETTER_SMTP_SECURITY="none",
                           NEWSLETTER_SMTP_CONNECTIONS=str(k), NEWSLETTER_STATE_DIR=str(ws.fresh_state(label)))
            r = checked(run(_ours_here(ws, recipients, env, "--send", "--yes", "--provider", "smtp"),
                            cwd=ws.project, env=env), f"newsletter send --provider smtp ({recipients:,}, {k} conn.)")
            report = json.loads((ws.project / "outbox" / ISSUE.stem / "report-send.json").read_text("utf-8"))
            if report["sent"] != recipients:
                raise RuntimeError(f"SMTP send to {recipients:,} reported {report['sent']:,} sent")
            return r

        tools: dict[str, Callable[[int], Run]] = {
            "ours, 1 connection": lambda m: ours(1, m, f"smtp1-{m}"),
            f"ours, {connections} connections": lambda m: ours(connections, m, f"smtp{connections}-{m}"),
        }
        if baseline is not None:  # the code before a change, in the same rounds: the same noise
            note(f"'before' = the newsletter package in {baseline}")
            tools["before, 1 connection"] = lambda m: ours(1, m, f"before1-{m}", baseline)
            tools[f"before, {connections} connections"] = lambda m: ours(connections, m, f"before{connections}-{m}",
                                                                          baseline)
        MM, MM_MULTI = "mailmerge, HTML only", "mailmerge, text + HTML"
        if mailmerge_available():
            template, config, sizes = write_mailmerge_files(ws, smtp_port=sink.port)
            html_template, _, _ = write_mailmerge_files(ws, smtp_port=sink.port, html_only=True)
            note(f"mailmerge {mailmerge_version()}: the same rows, a new connection per message (as it does); "
                 f"'text + HTML' = our message (text {sizes['text']:,} B + HTML {sizes['html']:,} B,")
            note("multipart/alternative), which mailmerge parses with html5lib per message; 'HTML only' = the HTML")
            note("part alone, its fastest path: the ratio that counts is against that one")
            tools[MM] = lambda m: mailmerge_run(html_template, config, mailmerge_database(ws, m), dry=False)
            tools[MM_MULTI] = lambda m: mailmerge_run(template, config, mailmerge_database(ws, m), dry=False)
        else:
            note(f"mailmerge comparison SKIPPED: {MAILMERGE} not found; install it with:")
            note(f"  {MAILMERGE_HINT}")
        load = os.getloadavg()[0]
        plain = _smtplib_rate(ws, sink.port, n // 2)
        line("reference: smtplib.sendmail of one prebuilt message, one connection", f"{plain:9.0f} /s")
        note("(no building, no record, one round trip per command: a sequential client's ceiling here)")
        base = {name: median_run([tool(1) for _ in range(3)]) for name, tool in tools.items()}
        runs: dict[str, list[tuple[float, Run, float]]] = {name: [] for name in tools}  # (rate, run, sink CPU s)
        for r in range(rounds):  # interleaved: the machine's noise (other jobs) hits every tool alike
            for name, tool in tools.items():
                if name == MM_MULTI and r:  # ~10x slower than the rest: one round is enough
                    continue
                before = sink.cpu()
                big = tool(n)
                sink_cpu = sink.cpu() - before
                # start-up subtracted; when the sending itself is a sliver of the run (--quick), the
                # difference is noise: the end-to-end rate stands in (and is a lower bound)
                sending = big.wall - base[name].wall
                rate = (n - 1) / sending if sending > 0.25 * big.wall else n / big.wall
                runs[name].append((rate, big, sink_cpu))
                line(f"round {r + 1}, {name}: {n:,} messages", f"{big.wall:6.2f} s  {rate:7.0f} /s")
            if MM in runs and runs[MM]:  # within one round: the same minute, the same load
                mm_rate = runs[MM][-1][0]
                line(f"round {r + 1}: ratios to {MM}", "  ".join(
                    f"{name.split(',')[0]} {name.split(', ')[1].split()[0]}: {rs[-1][0] / mm_rate:.1f}x"
                    for name, rs in runs.items() if not name.startswith("mailmerge")))
        note(f"'start-up subtracted' = (N - 1) / (T_N - T_1), T_1 the median of 3 1-recipient runs (N / T_N when "
             f"T_N - T_1 < T_N / 4); load average {load:.1f} before, {os.getloadavg()[0]:.1f} after "
             f"({os.cpu_count()} cores, shared)")
        for name, rs in runs.items():
            rates = [rate for rate, _, _ in rs]
            line(f"{name}: messages/s, start-up subtracted: median (best)",
                 f"{statistics.median(rates):9.0f} /s  ({max(rates):.0f})")
            line("  end to end (N / T_N, start-up included): median",
                 f"{statistics.median(n / big.wall for _, big, _ in rs):9.0f} /s")
            line("  CPU per message, this process, start-up subtracted: median",
                 us(statistics.median((big.cpu - base[name].cpu) / (n - 1) for _, big, _ in rs)))
            sink_cpus = [c for _, _, c in rs if c >= 0]
            if sink_cpus:
                line("  CPU per message, the server: median", us(statistics.median(sink_cpus) / n))
        for mm in (MM, MM_MULTI):
            if not runs.get(mm):
                continue
            for name, rs in runs.items():
                if name.startswith("mailmerge"):
                    continue
                paired = [ours[0] / theirs[0] for ours, theirs in zip(rs, runs[mm])]
                line(f"ratio {name} / {mm}: median of rounds (of best rates)",
                     f"{statistics.median(paired):9.1f} x  ({max(r for r, _, _ in rs) / max(r for r, _, _ in runs[mm]):.1f} x)")
        note("we keep each connection, pipeline MAIL/RCPT/DATA when offered, and commit the send record (SQLite)")
        note("once per message before its end of DATA; mailmerge opens a connection per message and records nothing.")
    finally:
        sink.close()


def _smtplib_rate(ws: Workspace, port: int, n: int) -> float:
    """Messages/s of smtplib.sendmail sending our sample reader's message n times over one
    connection (TCP_NODELAY, as our client sets it), in this process."""
    import smtplib

    from newsletter.config import load_settings
    from newsletter.mime import message_bytes
    from newsletter.personalize import SAMPLE_SUBSCRIBER, Personalizer
    from newsletter.pipeline import prepare

    settings = load_settings(ws.project / "newsletter.toml", env=base_env())
    personalizer = Personalizer(prepare(ws.project / ISSUE, settings).rendered, settings, SECRET, provider="smtp")
    data, _ = message_bytes(personalizer.envelope(), personalizer(SAMPLE_SUBSCRIBER))
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        assert smtp.sock is not None
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        for i in range(n):
            smtp.sendmail(settings.from_email, [f"user{i}@example.com"], data)
        return n / (time.perf_counter() - t0)
    finally:
        smtp.quit()


class _SendGridStandIn:
    """POST /v3/mail/send -> 202; counts requests, body bytes and personalizations."""

    def __init__(self) -> None:
        stats = self.stats = {"requests": 0, "bytes": 0, "recipients": 0, "bad": 0, "sizes": []}
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                ok = (self.path == "/v3/mail/send"
                      and self.headers.get("Authorization") == "Bearer SG.bench")
                with lock:
                    if ok:
                        stats["requests"] += 1
                        stats["bytes"] += len(body)  # as sent: compressed with [sendgrid] compress
                        stats["sizes"].append(len(body))
                        if self.headers.get("Content-Encoding") == "gzip":
                            body = gzip.decompress(body)
                        stats["recipients"] += body.count(b'"to":[')
                    else:
                        stats["bad"] += 1
                self.send_response(202 if ok else 404)
                self.send_header("X-Message-Id", f"bench-{stats['requests']}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.stats.update(requests=0, bytes=0, recipients=0, bad=0, sizes=[])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def section_sendgrid(ws: Workspace, n: int, substitute_headers: bool = False, compress: bool = False) -> None:
    header(f"4. SendGrid to a local stand-in: {n:,} recipients"
           + (" (substitute_headers = true)" if substitute_headers else "")
           + (" (compress = true: gzip)" if compress else ""))
    standin = _SendGridStandIn()
    try:
        note(f"stand-in: http.server thread on 127.0.0.1:{standin.port}, 202 to POST /v3/mail/send")

        def send(k: int) -> Run:
            standin.reset()
            env = base_env(SENDGRID_API_URL=f"http://127.0.0.1:{standin.port}", SENDGRID_API_KEY="SG.bench",
                           NEWSLETTER_STATE_DIR=str(ws.fresh_state(f"sendgrid{k}")),
                           **({"SENDGRID_SUBSTITUTE_HEADERS": "true"} if substitute_headers else {}),
                           **({"SENDGRID_COMPRESS": "true"} if compress else {}))
            r = checked(newsletter_send(ws, k, env, "--send", "--yes", "--provider", "sendgrid"),
                        f"newsletter send --provider sendgrid ({k:,})")
            report = json.loads((ws.project / "outbox" / ISSUE.stem / "report-send.json").read_text("utf-8"))
            if report["sent"] != k or standin.stats["recipients"] != k or standin.stats["bad"]:
                raise RuntimeError(f"SendGrid send to {k:,}: report says {report['sent']:,} sent, the stand-in "
                                   f"saw {standin.stats['recipients']:,} recipients and {standin.stats['bad']} "
                                   "bad requests")
            return r

        base = median_run([send(1) for _ in range(3)])
        one_bytes = standin.stats["bytes"]
        big = send(n)
        s = standin.stats
        line("newsletter send --provider sendgrid, 1 recipient (median of 3)", secs(base.wall))
        line(f"newsletter send --provider sendgrid, {n:,} recipients", secs(big.wall))
        per = (big.wall - base.wall) / (n - 1)
        line("  per recipient, start-up subtracted", us(per))
        line("  recipients per second, start-up subtracted", f"{1 / per:9.0f} /s")
        line(f"requests for {n:,} recipients", f"{s['requests']:9,}")
        line(f"request bytes for {n:,} recipients, total", f"{s['bytes'] / 1e6:9.2f} MB  ({s['bytes']:,} B)")
        line("request bytes, mean per request", f"{statistics.mean(s['sizes']) / 1e3:9.1f} kB")
        line("request bytes, largest request", f"{max(s['sizes']) / 1e3:9.1f} kB")
        line("request bytes, per recipient (marginal)", f"{(s['bytes'] - one_bytes * s['requests']) / n:9.1f} B"
             if s['requests'] else "n/a")
        line("request bytes, 1-recipient request (the shared content)", f"{one_bytes / 1e3:9.1f} kB")
        line("peak RSS of the send process", mb(big.maxrss_kb))
    finally:
        standin.close()


# ------------------------------------------------------------------- SMTP at scale: smtp-sink, workers

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class _PostfixSink:
    """Postfix's smtp-sink: accepts and discards everything, fast enough not to be the bottleneck."""

    def __init__(self) -> None:
        self.port = free_port()
        # -u: the user to run as, required (and only allowed) when started as root
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen([SMTP_SINK, *user, "-c", f"127.0.0.1:{self.port}", "256"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port):
            self.close()
            raise RuntimeError(f"smtp-sink did not start listening on 127.0.0.1:{self.port}")

    def cpu(self) -> float:
        return _process_cpu(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _ours_here(ws: Workspace, n: int, env: dict[str, str], *extra: str) -> list[str]:
    """`python -m newsletter send` from this checkout (not whatever the venv's script points at)."""
    return [sys.executable, "-m", "newsletter", "send", str(ISSUE), "--list", str(ws.csv(n)), *extra]


def section_smtp_sink(ws: Workspace, n: int, rounds: int = 2) -> None:
    header(f"5. SMTP to Postfix smtp-sink: {n:,} recipients, [smtp] connections = 1 vs 4")
    if not Path(SMTP_SINK).exists():
        note("SKIPPED: smtp-sink not found; apt-get install -y postfix (and stop its service)")
        return
    sink = _PostfixSink()
    try:
        rates: dict[int, list[float]] = {1: [], 4: []}
        for r in range(rounds):  # interleaved: the machine's noise hits both alike
            for k in (1, 4):
                env = base_env(PYTHONPATH=str(ROOT), NEWSLETTER_SMTP_HOST="127.0.0.1",
                               NEWSLETTER_SMTP_PORT=str(sink.port), NEWSLETTER_SMTP_SECURITY="none",
                               NEWSLETTER_SMTP_CONNECTIONS=str(k),
                               NEWSLETTER_STATE_DIR=str(ws.fresh_state(f"sink{k}-{r}")))
                run_ = checked(run(_ours_here(ws, n, env, "--send", "--yes", "--provider", "smtp"),
                                   cwd=ws.project, env=env), f"send to smtp-sink, connections={k}")
                report = json.loads((ws.project / "outbox" / ISSUE.stem / "report-send.json").read_text())
                if report["sent"] != n:
                    raise RuntimeError(f"connections={k}: {report['sent']:,} sent of {n:,}")
                rates[k].append(n / run_.wall)
                line(f"round {r + 1}, connections = {k}: end to end", f"{run_.wall:6.2f} s {n / run_.wall:7.0f} /s")
        for k, rs in rates.items():
            line(f"connections = {k}: best messages/s (end to end, start-up included)", f"{max(rs):9.0f} /s")
        line("ratio 4 / 1 (best of each)", f"{max(rates[4]) / max(rates[1]):9.2f} x")
    finally:
        sink.close()


class _CountingSink:
    """bench/count_sink.py in its own process: who got how many copies, told when it stops."""

    def __init__(self, report: Path) -> None:
        self.port, self.report = free_port(), report
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "count_sink.py"), str(self.port),
                                      str(report)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port):
            self.proc.kill()
            raise RuntimeError(f"count_sink.py did not start listening on 127.0.0.1:{self.port}")

    def cpu(self) -> float:
        return _process_cpu(self.proc.pid)

    def close(self) -> dict[str, int]:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return json.loads(self.report.read_text()) if self.report.exists() else {}


def section_workers(ws: Workspace, n: int, workers: int = 4) -> None:
    header(f"6. {workers} `--worker` processes, one PostgreSQL record, {n:,} recipients: to smtp-sink, then to "
           "a counting sink")
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import pg_server
    except ImportError as e:
        note(f"SKIPPED: {e}")
        return
    if not pg_server.available() or not Path(SMTP_SINK).exists():
        note("SKIPPED: needs PostgreSQL 15 (Debian) and smtp-sink")
        return
    import psycopg

    connections = os.environ.get("BENCH_WORKER_CONNECTIONS", "2")
    note(f"each worker: [smtp] connections = {connections} (BENCH_WORKER_CONNECTIONS); all on this machine's "
         f"{os.cpu_count()} cores, with the server and PostgreSQL")
    ws.csv(n)
    cluster = pg_server.PostgresCluster().start()
    try:
        for label in ("smtp-sink", "counting sink"):
            sink: _PostfixSink | _CountingSink = (
                _PostfixSink() if label == "smtp-sink" else _CountingSink(ws.dir / "count-sink.json"))
            counted: dict[str, int] = {}
            try:
                url = cluster.new_database()
                env = base_env(PYTHONPATH=str(ROOT), NEWSLETTER_SMTP_HOST="127.0.0.1",
                               NEWSLETTER_SMTP_PORT=str(sink.port), NEWSLETTER_SMTP_SECURITY="none",
                               NEWSLETTER_DATABASE_URL=url, NEWSLETTER_SMTP_CONNECTIONS=connections)
                cmd = _ours_here(ws, n, env, "--send", "--yes", "--provider", "smtp", "--worker")
                cpu0 = sink.cpu()
                t0 = time.perf_counter()
                procs = [subprocess.Popen(cmd, cwd=ws.project, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True) for _ in range(workers)]
                outs = [p.communicate() for p in procs]
                wall = time.perf_counter() - t0
                sink_cpu = sink.cpu() - cpu0
            finally:
                result = sink.close()
                if isinstance(result, dict):
                    counted = result
            if any(p.returncode for p in procs):
                raise RuntimeError(f"a worker failed: {[p.returncode for p in procs]} {outs[0][1][-500:]}")
            with psycopg.connect(url) as conn:
                states = dict(conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall())
                most = conn.execute("SELECT max(attempts) FROM deliveries").fetchone()[0]
            sent = [int(m.group(1).replace(",", "")) for out, _ in outs
                    if (m := re.search(r"done: ([\d,]+) sent", out))]
            line(f"{label}: {workers} workers x {connections} connections, total wall time", secs(wall))
            line("  messages per second, all workers together", f"{n / wall:9.0f} /s")
            if sink_cpu >= 0:
                line("  the server's CPU per message", us(sink_cpu / n))
            line("  sent per worker (their reports)", " + ".join(f"{k:,}" for k in sent) + f" = {sum(sent):,}")
            line("  send record: states", ", ".join(f"{k} {v:,}" for k, v in states.items()))
            line("  most hand-overs of one reader (1 = nobody twice)", f"{most}")
            if counted:
                line("  the server counted: messages / distinct recipients",
                     f"{counted['messages']:,} / {counted['distinct']:,}")
                line("  the server counted: second copies (target 0)",
                     f"{counted['second_copies']:9,}  ({verdict(counted['second_copies'] == 0 and counted['distinct'] == n)})")
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes / 10 (targets then only indicative)")
    ap.add_argument("--keep", action="store_true", help="keep the temp project, lists and outboxes")
    ap.add_argument("--only", type=int, action="append", choices=[1, 2, 3, 4, 5, 6], help="run only these sections")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="section 3 also runs the newsletter package found in DIR (e.g. `git archive` of an older "
                         "commit), interleaved with this checkout's: before and after in one session")
    ap.add_argument("--substitute-headers", action="store_true",
                    help="section 4 also with [sendgrid] substitute_headers = true (List-Unsubscribe shared)")
    ap.add_argument("--count-sink", action="store_true",
                    help="section 3 also against bench/count_sink.py, a server cheaper per message than smtp-sink")
    ap.add_argument("--compress", action="store_true",
                    help="section 4 also with [sendgrid] compress = true (gzip-compressed requests)")
    ap.add_argument("--mailmerge-files", nargs=4, metavar=("DIR", "PROJECT", "PORT", "PARTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mailmerge_files:  # the child of write_mailmerge_files
        ws = object.__new__(Workspace)
        ws.dir, ws.project = Path(args.mailmerge_files[0]), Path(args.mailmerge_files[1])
        template, config, sizes = _write_mailmerge_files(ws, int(args.mailmerge_files[2]),
                                                         html_only=args.mailmerge_files[3] == "html")
        print(json.dumps({"template": str(template), "config": str(config), "sizes": sizes}))
        return 0
    div = 10 if args.quick else 1
    sizes = {
        "dry": 100_000 // div, "mm_rows": 2_000 // div,
        "mem_small": 100_000 // div, "mem_large": 1_000_000 // div,
        "smtp": 2_000 // div, "sendgrid": 100_000 // div, "sink": 10_000 // div, "workers": 100_000 // div,
    }

    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "newsletter"],
                           capture_output=True, text=True, check=False).stdout.strip()
    print("send_bench: newsletter send (dry run, SMTP, SendGrid) vs mailmerge 2.3"
          + ("  [--quick: sizes / 10]" if args.quick else ""))
    print(f"  python {platform.python_version()} | {platform.machine()} | {os.cpu_count()} cores | "
          f"git {rev}{' (newsletter/ has uncommitted changes)' if dirty else ''} | "
          f"{time.strftime('%Y-%m-%d %H:%M')}")

    ws = Workspace(args.keep)
    t0 = time.perf_counter()
    sections = [
        (1, lambda: section_dry_run(ws, sizes["dry"], sizes["mm_rows"])),
        (2, lambda: section_memory(ws, sizes["mem_small"], sizes["mem_large"])),
        (3, lambda: section_smtp(ws, sizes["smtp"], baseline=args.baseline)),
        (4, lambda: section_sendgrid(ws, sizes["sendgrid"])),
        (5, lambda: section_smtp_sink(ws, sizes["sink"])),
        (6, lambda: section_workers(ws, sizes["workers"])),
        *([(4, lambda: section_sendgrid(ws, sizes["sendgrid"], substitute_headers=True))]
          if args.substitute_headers else []),
        *([(4, lambda: section_sendgrid(ws, sizes["sendgrid"], compress=True))] if args.compress else []),
        *([(3, lambda: section_smtp(ws, sizes["smtp"], counting=True))] if args.count_sink else []),
    ]
    try:
        for number, fn in sections:
            if args.only and number not in args.only:
                continue
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a report: say what broke and go on with the next section
                note(f"ERROR in section {number}: {type(e).__name__}: {e}")
    finally:
        ws.close()
    print(f"\n(total bench time {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
