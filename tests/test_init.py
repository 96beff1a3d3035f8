"""Starting a newsletter, and a project's own templates and labels over the built-in ones."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from conftest import SMALL_ISSUE, Project
from newsletter import init_project, load_settings, prepare, sample_message
from newsletter.templating import builtin_dir


def test_init_makes_a_project_that_checks_clean(tmp_path: Path) -> None:
    result = init_project(tmp_path / "letter", today=dt.date(2026, 11, 27))
    assert {p.name for p in result.written} == {"newsletter.toml", "first-issue.yaml", "readers.csv", ".gitignore"}
    issue = tmp_path / "letter" / "issues" / "first-issue.yaml"
    assert "date: 2026-11-27" in issue.read_text()
    settings = load_settings(tmp_path / "letter" / "newsletter.toml", env={})
    prepared = prepare(issue, settings)
    assert prepared.errors == [] and prepared.warnings == []
    assert ".newsletter/" in (tmp_path / "letter" / ".gitignore").read_text()


def test_init_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "newsletter.toml").write_text("# mine\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "digest.css").write_text("/* mine */")
    result = init_project(tmp_path, templates=True)
    assert (tmp_path / "newsletter.toml").read_text() == "# mine\n"
    assert (tmp_path / "templates" / "digest.css").read_text() == "/* mine */"
    assert tmp_path / "newsletter.toml" in result.kept and tmp_path / "templates" / "digest.css" in result.kept
    assert (tmp_path / "templates" / "digest.mjml.j2").read_text() == (builtin_dir() / "digest.mjml.j2").read_text()
    again = init_project(tmp_path, templates=True)
    assert again.written == []  # a second run changes nothing


def test_cli_init_reports_what_it_kept(project: Project, cli) -> None:
    r = cli("init", cwd=project.root)
    assert r.code == 0, r.output
    assert "kept    newsletter.toml (already there)" in r.out
    assert "created issues/first-issue.yaml" in r.out


def test_commands_without_a_config_say_where_they_looked(tmp_path: Path, cli) -> None:
    r = cli("check", "x.yaml", cwd=tmp_path)
    assert r.code == 1
    assert f"no newsletter.toml in {tmp_path}" in r.err and "newsletter init" in r.err
    assert "Traceback" not in r.output


def test_config_is_found_from_a_subfolder(project: Project, cli) -> None:
    project.write_issue(SMALL_ISSUE)
    r = cli("check", "issue.yaml", cwd=project.root / "issues")
    assert r.code == 0, r.output


def test_project_labels_override_built_in_ones_label_by_label(project: Project) -> None:
    (project.root / "templates").mkdir()
    (project.root / "templates" / "labels.toml").write_text('[en]\nunsubscribe = "Leave this list"\n')
    project.write_issue(SMALL_ISSUE)
    settings = load_settings(project.root / "newsletter.toml", env={})
    _, html, text = sample_message(prepare(project.root / "issues" / "issue.yaml", settings).rendered, settings)
    assert "Leave this list" in html and "Leave this list:" in text
    assert "Links:" in html  # the labels the project did not override stay


def test_project_css_overrides_the_built_in_file(project: Project) -> None:
    (project.root / "templates").mkdir()
    (project.root / "templates" / "digest.css").write_text(".nl-prose p { margin: 0 0 30px 0; }\n")
    project.write_issue(SMALL_ISSUE)
    settings = load_settings(project.root / "newsletter.toml", env={})
    html = prepare(project.root / "issues" / "issue.yaml", settings).rendered.html
    assert 'style="margin:0 0 30px 0"' in html
    assert "margin:0 0 14px 0" not in html  # the built-in CSS is replaced, not merged
