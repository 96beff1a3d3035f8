"""Hostile or accidental issue files: `newsletter check` answers each one with located errors
(FILE:LINE: field: message) and exit 1, within about a second and in bounded memory; never a crash,
a hang, an internal error or lost content.

The corpus is tests/corpus/issues/: one case a file, what it tests in its first comment lines, and
`# expect: LINE: FIELD: TEXT` lines for what the editor must be told. The huge cases are generated here.
Times are CPU times: wall time on a shared machine measures the neighbours.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from newsletter import merge
from newsletter.cli import main
from newsletter.errors import IssueError
from newsletter.issue import load_issue, parse_issue
from newsletter.issuetext import MAX_FILE_BYTES, MAX_MARKDOWN_CHARS

CORPUS = Path(__file__).parent / "corpus" / "issues"
CASES = sorted(CORPUS.glob("*.yaml"))
HEAD = "subject: Big\ndate: 2021-03-31\npreheader: A preheader of a sensible length for the inbox list\n"


@dataclass
class Run:
    path: Path
    code: int
    output: str
    cpu: float  # seconds
    peak_mb: float | None = None

    def lines(self) -> list[str]:
        return self.output.splitlines()


class _Hung(BaseException):
    """Raised by the deadline; a BaseException, so that the CLI's `except Exception` cannot hide it."""


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """A safety net: a regression back to a quadratic scan fails the test instead of hanging the run."""
    def hung(signum: int, frame: object) -> None:
        raise _Hung(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def cli_here(project, monkeypatch, capsys) -> Callable[..., Run]:
    """`newsletter COMMAND PATH ARGS` through the console entry point, in this process (no start-up cost)."""
    monkeypatch.delenv("NEWSLETTER_DEBUG", raising=False)
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "__all__")  # main() sets it; keep it scoped to the test

    def run(command: str, path: Path, *args: str) -> Run:
        monkeypatch.setattr(sys, "argv", ["newsletter", "--config", str(project.root / "newsletter.toml"),
                                          command, str(path), *args])
        capsys.readouterr()
        start = time.process_time()
        with _deadline(30):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
        cpu = time.process_time() - start
        out = capsys.readouterr()
        return Run(path, code, out.out + out.err, cpu)

    return run


@pytest.fixture
def check_here(cli_here) -> Callable[[Path], Run]:
    """`newsletter check PATH`, in this process."""
    return lambda path: cli_here("check", path)


def _limit_memory() -> None:
    # a regression must fail the test, not take the machine's memory with it (the bomb reached 7.9 GB)
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def check_subprocess(path: Path, config: Path) -> Run:
    """`python -m newsletter check PATH` in a child process, with its own CPU time and peak memory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SENDGRID_"))}
    env.update({"NO_COLOR": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    with tempfile.TemporaryFile("w+") as out:  # never beside the corpus file: the tree stays clean
        proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--config", str(config), "check", str(path)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_limit_memory)
        killer = threading.Timer(60, proc.kill)
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not every child's
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read()
    return Run(path, proc.returncode, output, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def expectations(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8", "replace")
    return [line.removeprefix("# expect: ") for line in text.splitlines() if line.startswith("# expect: ")]


def assert_told(run: Run, expected: str) -> None:
    """`LINE: FIELD: TEXT`, `LINE: TEXT` or `TEXT`: a problem line at that line, for that field, saying TEXT."""
    m = re.match(r"(\d+): (?:([\w.<>]+): )?(.*)$", expected)
    if m:
        line, field, text = m.groups()
        prefix = f"{run.path}:{line}: " + (f"{field}: " if field else "")
        hits = [ln for ln in run.lines() if ln.startswith(prefix) and text in ln]
    else:
        hits = [ln for ln in run.lines() if ln.startswith(f"{run.path}:") and expected in ln]
    assert hits, f"expected {expected!r} in:\n{run.output}"


def assert_refused_cleanly(run: Run, max_cpu: float) -> None:
    assert run.code == 1, run.output
    assert re.search(rf"^{re.escape(str(run.path))}:\d+: ", run.output, re.MULTILINE), run.output
    assert "Traceback" not in run.output and "internal error" not in run.output, run.output
    assert run.cpu < max_cpu, f"{run.path.name}: {run.cpu:.2f} s of CPU"


def test_the_corpus_is_there():
    assert len(CASES) >= 50
    for path in CASES:
        assert path.read_bytes().startswith(b"# "), f"{path.name}: say what it tests in a comment at the top"
        assert expectations(path), f"{path.name}: needs at least one `# expect:` line"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_case_is_refused_with_located_errors_within_a_second(path, check_here):
    run = check_here(path)
    assert_refused_cleanly(run, max_cpu=1.0)
    for expected in expectations(path):
        assert_told(run, expected)


def test_all_phases_are_reported_once_each_in_line_order(check_here):
    run = check_here(CORPUS / "every-phase-at-once.yaml")
    problems = [ln for ln in run.lines() if ln.startswith(str(run.path))]
    assert len(problems) == len(set(problems)) == len(expectations(run.path))
    lines = [int(ln.split(":")[1]) for ln in problems]
    assert lines == sorted(lines)


def test_an_alias_bomb_is_refused_before_anything_expands_it():
    bomb = (CORPUS / "alias-bomb.yaml").read_text(encoding="utf-8")
    assert len(bomb.encode()) < 1_500
    start = time.process_time()
    with pytest.raises(IssueError) as e:
        parse_issue(bomb, "bomb.yaml")
    assert time.process_time() - start < 0.5
    assert all("anchors and aliases" in p.message for p in e.value.problems)
    assert len(e.value.problems) == 10  # one a line, not one an alias


def _sections(n: int) -> str:
    return HEAD + "sections:\n" + "  - title: T\n    body: x\n" * n


def _body(text: str) -> str:
    return HEAD + "sections:\n  - title: One\n    body: |\n      " + text + "\n"


# name -> (file content, an expectation as in the corpus); each is run in a child process
BIG: dict[str, tuple[Callable[[], str | bytes], str]] = {
    "file-50mb": (lambda: HEAD + "notes: |\n" + ("  " + "w" * 98 + "\n") * 500_000, "1: the file is over 256,000 bytes"),
    "paragraph-10mb": (lambda: _body("w " * 5_250_000), "1: the file is over 256,000 bytes"),
    "sections-100000": (lambda: _sections(100_000), "1: the file is over 256,000 bytes"),
    "sections-12000-on-one-line": (lambda: HEAD + "sections: [" + "{title: T, body: x}, " * 12_000 + "]\n",
                                   "4: sections: more than 100 sections"),
    "lines-10001": (lambda: "# a comment line\n" * 10_001 + _sections(1), "10001: the file has 10,007 lines; at most 10,000"),
    "zero-bytes": (lambda: b"\0" * 300_000, "1: the file is over 256,000 bytes"),
    "braces-60000": (lambda: _body("{{" * 60_000), "6: sections.0.body: is 120,001 characters; at most 100,000"),
    "braces-45000": (lambda: _body("{{" * 45_000), "7: sections.0.body: unclosed merge field"),
    "images-60000": (lambda: _body("![" * 60_000), "6: sections.0.body: is 120,001 characters"),
    "images-45000": (lambda: _body("![" * 45_000), "6: sections.0.body: the issue's Markdown has over 2,000 marks"),
    "brackets-60000": (lambda: _body("[" * 60_000), "6: sections.0.body: the issue's Markdown has over 2,000 marks"),
    "markdown-field-over-the-limit": (lambda: _body("w" * MAX_MARKDOWN_CHARS),  # and the block's newline
                                      "6: sections.0.body: is 100,001 characters; at most 100,000"),
    "markdown-over-the-issue-budget": (lambda: HEAD + "intro: " + "w" * 60_000 + "\n" + _body("w" * 60_000)[len(HEAD):],
                                       "7: sections.0.body: the issue's Markdown is over 100,000 characters"),
}


@pytest.mark.parametrize("name", list(BIG))
def test_big_case_is_refused_fast_in_bounded_memory(name, project, tmp_path):
    make, expected = BIG[name]
    content = make()
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    run = check_subprocess(path, project.root / "newsletter.toml")
    assert_refused_cleanly(run, max_cpu=5.0)  # includes ~0.6 s of interpreter start and imports
    assert run.peak_mb is not None and run.peak_mb < 500, f"{name}: peak {run.peak_mb:.0f} MB"
    assert_told(run, expected)


def test_the_alias_bomb_in_a_child_process_stays_small(project):
    run = check_subprocess(CORPUS / "alias-bomb.yaml", project.root / "newsletter.toml")
    assert_refused_cleanly(run, max_cpu=5.0)
    assert run.peak_mb is not None and run.peak_mb < 500


def test_a_file_is_not_read_past_the_limit(tmp_path):
    # /dev/zero never ends: reading it whole would never return
    with pytest.raises(IssueError) as e:
        load_issue(Path("/dev/zero"))
    assert "is over 256,000 bytes" in str(e.value)
    assert MAX_FILE_BYTES == 256_000


# --- the biggest accepted content reaches the reader intact ----------------------------------------------


def _render(project, cli_here, text: str) -> tuple[str, str, str]:
    """(HTML, text part, what `newsletter render` said) for an issue."""
    path = project.write_issue(text, "big.yaml")
    out = project.root / "out"
    run = cli_here("render", path, "--out", str(out))
    assert run.code == 0, run.output
    return (out / "big.html").read_text(encoding="utf-8"), (out / "big.txt").read_text(encoding="utf-8"), run.output


def test_the_biggest_accepted_markdown_field_reaches_the_html_intact(project, cli_here):
    # libxml2 (premailer) silently drops a text node over 10 MB; the limits keep every text far below
    words = "".join(f"w{i:06d} " for i in range(MAX_MARKDOWN_CHARS // 8))  # each word once: nothing lost
    paragraph = words[:MAX_MARKDOWN_CHARS - 5] + " END"
    text = _body(paragraph)
    assert len(parse_issue(text, "big.yaml").sections[0].body) == MAX_MARKDOWN_CHARS  # the block ends in \n
    html, plain, said = _render(project, cli_here, text)
    assert paragraph in html
    assert paragraph in " ".join(plain.split())  # the text part wraps lines, and loses no word
    assert "Gmail clips" in said  # and it says the email is too big to send


def test_the_biggest_file_of_four_byte_characters_reaches_the_html_intact(project, cli_here):
    word = "\U0001d538" * 9 + "\U0001f600"  # 40 bytes of UTF-8 a word
    paragraph = " ".join([word] * 6_200)
    text = _body(paragraph)
    assert MAX_FILE_BYTES - 2_000 < len(text.encode("utf-8")) <= MAX_FILE_BYTES
    html, plain, _ = _render(project, cli_here, text)
    assert paragraph in html and paragraph in " ".join(plain.split())  # wrapped, nothing lost


# --- what still works ---------------------------------------------------------------------------------


@pytest.mark.parametrize("expr, row, expected", [
    ("subscriber.name", {"name": "Ann"}, "Ann"),
    ("subscriber['first name'] | title", {"first name": "ann lee"}, "Ann Lee"),
    ('subscriber.name | default("reader")', {"name": ""}, "reader"),
    ('subscriber.name | d("reader") | upper', {}, "READER"),
    ("subscriber.company | trim | lower", {"company": "  ACME "}, "acme"),
    ("subscriber.city | capitalize", {"city": "paris"}, "Paris"),
    ("subscriber.items", {}, ""),  # a dict method name reads the column, never the method
    ("subscriber.items", {"items": "3"}, "3"),
    ("subscriber.company | urlencode", {"company": "A, B & C/#?"}, "A%2C%20B%20%26%20C/%23%3F"),
])
def test_allowed_merge_fields_fill_as_documented(expr, row, expected):
    assert merge.parse_fields("Hi {{ " + expr + " }}!") == [expr]
    assert merge.compile_field(expr).evaluate(row) == expected


def test_merge_field_scanner_is_linear():
    start = time.process_time()
    assert merge.tokenize("{{" * 200_000, lambda e: "T") == "{{" * 200_000
    assert merge.field_problems("{{" * 200_000)[0][1].startswith("unclosed merge field")
    assert merge.tokenize("{{ subscriber.a }}" * 20_000, lambda e: "T") == "T" * 20_000
    assert time.process_time() - start < 0.5


def test_image_without_alt_text_in_a_valid_issue_is_reported_once_by_check(project, check_here):
    path = project.write_issue(_body("![](https://example.org/a.png)"))
    parse_issue(path.read_text(encoding="utf-8"), path)  # valid: alt text is a pre-send check
    run = check_here(path)
    assert run.code == 1
    assert [ln for ln in run.lines() if "no alt text" in ln] == [
        f"{path}:7: sections.0.body: image https://example.org/a.png has no alt text: write "
        "![what it shows](https://example.org/a.png)"]


def test_safe_links_images_and_the_markup_budget_pass(project, check_here):
    body = ("[paper](https://arxiv.org/abs/2103.01988), [mail](mailto:editor@example.org), "
            "<https://example.org/auto>, [ref][r] and ![a chart](https://example.org/a.png)\n\n"
            "      [r]: HTTPS://EXAMPLE.ORG/REF\n\n      " + "[x](https://example.org) " * 50)
    run = check_here(project.write_issue(_body(body)))
    assert run.code == 0, run.output
    assert "warning:" not in run.output


def test_far_apart_brackets_within_the_limits_are_checked_fast(project, check_here):
    run = check_here(project.write_issue(_body("[" * 1_990 + "w" * 95_000 + "]")))  # within every limit
    assert "Traceback" not in run.output and "internal error" not in run.output
    assert run.cpu < 2.0, f"{run.cpu:.2f} s of CPU"
