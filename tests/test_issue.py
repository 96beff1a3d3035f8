"""The issue file: what validates, and where each error is reported (FILE:LINE: field: message)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from newsletter.errors import IssueError
from newsletter.issue import parse_issue

VALID = """\
subject: Monthly digest
date: 2021-03-31
sections:
  - title: One
    body: Text
"""


def problems(text: str) -> list[str]:
    with pytest.raises(IssueError) as e:
        parse_issue(textwrap.dedent(text), "issues/x.yaml")
    return [str(p) for p in e.value.problems]


def test_minimal_issue_gets_defaults():
    issue = parse_issue(VALID, "x.yaml", default_language="ru")
    assert issue.language == "ru"
    assert issue.template == "digest"
    assert issue.heading == "Monthly digest"
    assert issue.sections[0].links == [] and issue.sections[0].image is None


def test_unknown_key_is_an_error_at_its_line():
    found = problems(VALID + "    imgae:\n      src: https://example.org/a.png\n")
    assert found == ["issues/x.yaml:6: sections.0.imgae: unknown field; check the spelling "
                     "(see the issue-file reference in README.md)"]


def test_all_errors_of_a_file_at_once_in_line_order():
    found = problems("""\
        subject: "Two\\nlines"
        date: 2021-02-30
        language: xx-nope
        sections:
          - title: A
            body: "[click](javascript:alert(1))"
            links:
              - label: code
                url: ftp://example.org/x
            image:
              src: http://example.org/a.png
              alt: ""
        """)
    assert [f.split(": ")[0:2] for f in found] == [
        ["issues/x.yaml:1", "subject"],
        ["issues/x.yaml:2", "date"],
        ["issues/x.yaml:3", "language"],
        ["issues/x.yaml:6", "sections.0.body"],
        ["issues/x.yaml:9", "sections.0.links.0.url"],
        ["issues/x.yaml:11", "sections.0.image.src"],
        ["issues/x.yaml:12", "sections.0.image.alt"],
    ]
    assert "header injection" in found[0]
    assert "https://" in found[5]
    assert "alt text is required" in found[6]


def test_missing_required_fields_point_at_their_parent():
    found = problems("date: 2021-03-31\nsections:\n  - title: A\n")
    assert "issues/x.yaml:1: subject: required field is missing" in found
    assert "issues/x.yaml:3: sections.0.body: required field is missing" in found


def test_unquoted_yaml_special_characters_get_a_hint():
    found = problems(VALID.replace("body: Text", "body: ![chart](https://example.org/a.png)"))
    assert found == ["issues/x.yaml:5: sections.0.body: must be text, not a YAML tag "
                     "(![chart](https://example.org/…); quote it, or write Markdown as a `|` block on the next lines"]


def test_empty_sections_is_an_error():
    found = problems("subject: S\ndate: 2021-03-31\nsections: []\n")
    assert found[0].startswith("issues/x.yaml:3: sections:")


def test_yaml_syntax_error_has_its_line():
    found = problems("subject: S\ndate: 2021-03-31\nsections:\n  - title: [unclosed\n    body: x\n")
    assert len(found) == 1 and found[0].startswith("issues/x.yaml:")
    assert "yaml:" in found[0] and "fix the YAML syntax" in found[0]
    line = int(found[0].split(":")[1])
    assert 4 <= line <= 6


def test_duplicate_key_is_an_error():
    found = problems(VALID + "subject: again\n")
    assert found[0].startswith("issues/x.yaml:") and "yaml" in found[0]


@pytest.mark.parametrize("scheme", ["javascript:alert(1)", "data:text/html,x", "file:///etc/passwd", "vbscript:x"])
def test_unsafe_markdown_links_are_rejected(scheme):
    found = problems(VALID.replace("body: Text", f'body: "[x]({scheme})"'))
    assert found[0].startswith("issues/x.yaml:5: sections.0.body:")


def test_subject_longer_than_150_is_an_error():
    found = problems(VALID.replace("Monthly digest", "x" * 151))
    assert found[0].startswith("issues/x.yaml:1: subject:")


@pytest.mark.parametrize("bad", ["{{ os.system('x') }}", "{% for x in y %}{% endfor %}", "{{ subscriber.name ", "{{ 1 + }}"])
def test_bad_merge_fields_are_located(bad):
    found = problems(VALID.replace("body: Text", f'body: "Hi {bad}"'))
    assert found[0].startswith("issues/x.yaml:5: sections.0.body:")


def test_merge_fields_allowed_in_subject_intro_body_outro():
    text = VALID.replace("Monthly digest", '"Hi {{ subscriber.name | default(\'reader\') }}"')
    text += 'intro: "Dear {{ subscriber.name }}"\noutro: "Your company: {{ subscriber.company }}"\n'
    issue = parse_issue(text, "x.yaml")
    assert "subscriber.company" in issue.outro


def test_line_of_locates_fields_for_later_checks():
    issue = parse_issue(VALID, "x.yaml")
    assert issue.line_of("subject") == 1
    assert issue.line_of("sections", 0, "body") == 5


def test_example_issue_is_valid_and_complete():
    from conftest import EXAMPLE
    from newsletter.issue import load_issue

    issue = load_issue(EXAMPLE)
    assert issue.language == "ru"
    titles = " ".join(s.title for s in issue.sections)
    for item in ["SEER", "TimeSformer", "Swin", "LightningDOT", "Involution", "TagMe", "PF-AFN",
                 "Latent Composition", "Infinite", "GANsformer", "FaceBlit", "CLIP"]:
        assert item in titles, item
    assert len(issue.sections) == 13
    assert issue.outro and "P.S." in issue.outro
    assert all(s.image.alt for s in issue.sections if s.image)


def test_explicit_nulls_in_optional_fields_are_accepted():
    # `preheader: null` was an internal error (the one-line validator called None.strip())
    issue = parse_issue(VALID.replace("sections:", "preheader: null\ntitle:\nintro: null\nsections:")
                        + "    image: {src: 'https://example.org/a.png', alt: A chart, caption: null}\n", "x.yaml")
    assert issue.preheader is None and issue.title is None and issue.intro is None
    assert issue.sections[0].image.caption is None


def test_only_true_and_false_are_yes_and_no():
    # YAML 1.2, as issue files were always read: a section called "No" or "On" is text, not a boolean
    issue = parse_issue(VALID.replace("title: One", "title: No") + "  - title: On\n    body: 1:30\n", "x.yaml")
    assert [s.title for s in issue.sections] == ["No", "On"]
    assert issue.sections[1].body == "1:30"


def test_line_separators_pasted_into_text_keep_the_line_numbers():
    # YAML 1.1 parsers (libyaml) break lines at NEL, LS and PS; editors and YAML 1.2 do not
    found = problems(VALID + 'intro: "pasted\u2028text"\n# a comment\u2029with a separator\noutro: x\x85y\n'
                     "template: no such template!\n")
    assert found[0].startswith("issues/x.yaml:8: outro: U+0085 (NEL)")
    assert found[1].startswith("issues/x.yaml:9: template: a template name is letters")


def test_a_duplicate_key_is_located_at_the_second_one():
    found = problems(VALID + "    title: Two\n")
    assert found == ['issues/x.yaml:6: yaml: found duplicate key "title" with value "Two" (original value: "One"); '
                     "fix the YAML syntax"]


def test_line_of_inside_a_literal_block():
    issue = parse_issue(VALID.replace("body: Text", "body: |\n      zero\n      one"), "x.yaml")
    assert issue.line_of("sections", 0, "body", text_line=1) == 7
    assert issue.line_of("sections", 0, "body", at=len("zero\no")) == 7
    assert issue.line_of("sections", 0, "title", text_line=1) == 4  # not a block: the key's line


def test_issue_files_are_read_by_libyaml():
    from newsletter import issueyaml

    # without it every load is 10x slower (the live preview re-reads the file on each save)
    assert issueyaml._CParser is not None, "PyYAML was built without libyaml: pip install --force-reinstall PyYAML"


def test_the_pure_python_parser_tells_the_same_as_libyaml(monkeypatch):
    # it reads what libyaml refuses; and it is what runs where PyYAML has no libyaml
    from conftest import EXAMPLE

    from newsletter import issueyaml

    corpus = sorted((Path(__file__).parent / "corpus" / "issues").glob("*.yaml"))
    texts = [p.read_bytes().decode("utf-8", "replace") for p in [EXAMPLE, *corpus]]

    def told() -> list[list[str]]:
        said = []
        for text in texts:
            try:
                parse_issue(text, "x.yaml")
                said.append([])
            except IssueError as e:
                said.append([str(p) for p in e.problems])
        return said

    with_libyaml = told()
    monkeypatch.setattr(issueyaml, "_CParser", None)
    assert told() == with_libyaml


def test_the_library_takes_str_paths_and_says_what_a_folder_is(project):
    """prepare("issues/x.yaml", ...) as scripts write it; a folder is the library's own error, not
    IsADirectoryError (README: NewsletterError is the root of everything it raises)."""
    from conftest import SMALL_ISSUE

    from newsletter import load_settings, prepare
    from newsletter.linkcheck import LinkCache

    path = project.write_issue(SMALL_ISSUE)
    settings = load_settings(str(project.root / "newsletter.toml"))
    assert prepare(str(path), settings).issue.subject
    with pytest.raises(IssueError, match="a folder, not an issue file"):
        prepare(path.parent, settings)
    assert LinkCache(path=str(project.root / "links.json")).path == project.root / "links.json"
