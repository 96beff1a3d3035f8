"""The command line as an editor uses it: exit codes, located messages, never a traceback."""

from __future__ import annotations

import email
import email.policy

import pytest

from conftest import EXAMPLE, REPO, SMALL_ISSUE


def test_check_example_passes(cli):
    r = cli("check", str(EXAMPLE), cwd=REPO)
    assert r.code == 0, r.output
    assert "13 sections" in r.out and "0 errors" in r.out


def test_check_invalid_file_lists_located_errors_and_exits_1(project, cli):
    path = project.write_issue("""\
        subject: Hi
        date: 2021-03-31
        sections:
          - title: A
            body: ok
            imgae: https://example.org/x.png
          - title: B
        """)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1
    assert "issues/issue.yaml:6: sections.0.imgae: unknown field" in r.err
    assert "issues/issue.yaml:7: sections.1.body: required field is missing" in r.err
    assert "Traceback" not in r.output
    assert path.exists()


def test_check_warnings_do_not_fail(project, cli):
    project.write_issue(SMALL_ISSUE.replace('preheader: "Self-supervised vision, transformers for video and a GAN that composes scenes"\n', "")
                        .replace("the March digest", "the March digest " + "x" * 70))
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 0, r.output
    assert "issues/issue.yaml:1: subject: warning: subject is" in r.err
    assert "no preheader" in r.err


def test_check_reports_missing_postal_address_and_unsubscribe(project, cli):
    cfg = project.root / "newsletter.toml"
    cfg.write_text("\n".join(l for l in cfg.read_text().splitlines()
                             if not l.startswith(("postal_address", "unsubscribe_url"))))
    project.write_issue(SMALL_ISSUE)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1
    assert "newsletter.toml: postal_address: no postal address" in r.err
    assert "newsletter.toml: unsubscribe_url: no unsubscribe URL" in r.err


def test_check_flags_oversized_html(project, cli):
    big = SMALL_ISSUE.replace("Plain prose with", "Long prose. " * 8000 + "Plain prose with")
    project.write_issue(big)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1
    assert "Gmail clips above ~102 KB" in r.err


def test_render_writes_three_files_and_says_where(project, cli, tmp_path):
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    r = cli("render", "issues/2021-03.yaml", "--out", str(tmp_path / "o"), cwd=project.root)
    assert r.code == 0, r.output
    for ext in ("html", "txt", "mjml"):
        path = tmp_path / "o" / f"2021-03.{ext}"
        assert path.is_file() and path.stat().st_size > 100
        assert str(path) in r.out
    assert "Hi reader!" in (tmp_path / "o" / "2021-03.txt").read_text()


def test_render_default_out_dir(project, cli):
    project.write_issue(SMALL_ISSUE)
    r = cli("render", "issues/issue.yaml", cwd=project.root)
    assert r.code == 0 and (project.root / "out" / "issue.html").is_file()


def test_config_option_finds_templates_beside_it(project, cli, tmp_path):
    issue = tmp_path / "loose.yaml"
    issue.write_text(SMALL_ISSUE)
    r = cli("--config", str(project.root / "newsletter.toml"), "render", str(issue), "--out", str(tmp_path / "o"),
            cwd=tmp_path)
    assert r.code == 0, r.output
    assert "Test Digest" in (tmp_path / "o" / "loose.html").read_text()


def test_missing_files_and_bad_config_are_messages_not_tracebacks(project, cli):
    r = cli("check", "issues/nope.yaml", cwd=project.root)
    assert r.code == 1 and "issues/nope.yaml: no such issue file" in r.err
    (project.root / "newsletter.toml").write_text('[newsletter]\nname = "x"\n[brand]\ncolor = "blue"\n')
    project.write_issue(SMALL_ISSUE)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1 and "newsletter.toml:4: brand.color: use a hex colour" in r.err
    (project.root / "newsletter.toml").write_text('[newsletter]\nname = "x"\n[sendgrid]\napi_key = "SG.secret"\n')
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1 and "secrets are read only from the environment" in r.err
    assert "SG.secret" not in r.output
    for res in [r]:
        assert "Traceback" not in res.output


def test_environment_overrides_config(project, cli):
    project.write_issue(SMALL_ISSUE)
    r = cli("render", "issues/issue.yaml", cwd=project.root,
            env={"NEWSLETTER_NAME": "Env Name", "NEWSLETTER_POSTAL_ADDRESS": "PO Box 7"})
    assert r.code == 0, r.output
    html = (project.root / "out" / "issue.html").read_text()
    assert "Env Name" in html and "PO Box 7" in html


def test_usage_errors_exit_2(cli, project):
    assert cli("check", cwd=project.root).code == 2
    assert cli("nonsense", cwd=project.root).code == 2


def test_markdown_images_need_alt_text_and_https(project, cli):
    project.write_issue(SMALL_ISSUE.replace("body: Plain prose with", "body: |\n      First line.\n\n"
                                            "      ![](https://example.org/a.png) and\n"
                                            "      ![a chart](http://example.org/b.png) plain prose with"))
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1
    # the line of the image itself, inside the `|` block
    assert "issues/issue.yaml:27: sections.1.body: image https://example.org/a.png has no alt text" in r.err
    assert "issues/issue.yaml:28: sections.1.body: warning: image http://example.org/b.png is not https" in r.err


def test_unknown_setting_is_located(project, cli):
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace("[smtp]\n", "[smtp]\nhots = \"x\"\n"))
    project.write_issue(SMALL_ISSUE)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    line = cfg.read_text().splitlines().index('hots = "x"') + 1
    assert r.code == 1
    assert f"newsletter.toml:{line}: smtp.hots: unknown setting; check the spelling" in r.err


def test_a_wrong_value_after_blank_lines_is_located_on_its_own_line(project, cli):
    cfg = project.root / "newsletter.toml"  # the line used to be the first blank one above it
    cfg.write_text(cfg.read_text().replace("[smtp]\n", "[smtp]\n\n\nport = 0\n", 1).replace("port = 2525\n", ""))
    project.write_issue(SMALL_ISSUE)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    line = cfg.read_text().splitlines().index("port = 0") + 1
    assert r.code == 1 and f"newsletter.toml:{line}: smtp.port: Input should be greater" in r.err, r.err


@pytest.mark.parametrize("table", ["[smpt]", "[ sendgird ]", "[newsletter.sendgird]"])
def test_a_misspelt_table_is_located(project, cli, table):
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text() + f"\n{table}\nport = 25\n")
    project.write_issue(SMALL_ISSUE)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    line = cfg.read_text().splitlines().index(table) + 1
    name = table.strip("[] ").rpartition(".")[2]
    assert r.code == 1
    assert f"newsletter.toml:{line}: {name}: unknown setting; check the spelling" in r.err, r.err


def test_url_templates_and_addresses_are_checked_at_load(project, cli):
    project.write_issue(SMALL_ISSUE)
    cfg = project.root / "newsletter.toml"
    good = cfg.read_text()
    for bad, message in [
        ('unsubscribe_url = "https://example.org/u?e={mail}&t={token}"', "unknown placeholder {mail}; use {email} and {token}"),
        ('unsubscribe_url = "https://example.org/u?e={email}"', "must contain {token}"),
        ('unsubscribe_url = "http://example.org/u?t={token}"', "must be an https:// URL"),
        ('from_email = "digest at example.org"', "is not an email address"),
    ]:
        key = bad.split(" =")[0]
        lines = [bad if line.startswith(key + " =") else line for line in good.splitlines()]
        cfg.write_text("\n".join(lines) + "\n")
        r = cli("check", "issues/issue.yaml", cwd=project.root)
        line = lines.index(bad) + 1
        assert r.code == 1 and f"newsletter.toml:{line}: {key}: " in r.err and message in r.err, r.err
        assert "Traceback" not in r.err


@pytest.mark.parametrize("value, message", [
    ('"<digest.example.org>"', "write it without the angle brackets: 'digest.example.org'"),
    ('"digest example.org"', "is not a list id like digest.example.org (RFC 2919"),
    ('"digest"', "is not a list id like digest.example.org"),  # a label and a namespace: one dot at least
    ('"digest..example.org"', "is not a list id"),
    ('"дайджест.example.org"', "is not a list id"),
    ('"d.' + "x" * 254 + '"', "is 256 characters long; RFC 2919 allows at most 255"),
    ('"digest\\nBcc: x@example.net.example.org"', "contains a control character or line break (U+000A)"),
])
def test_list_id_is_checked_where_it_is_set(project, cli, value, message):
    project.write_issue(SMALL_ISSUE)
    cfg = project.root / "newsletter.toml"
    text = cfg.read_text().replace('from_email = "digest@example.org"\n',
                                   f'from_email = "digest@example.org"\nlist_id = {value}\n')
    cfg.write_text(text)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    line = text.splitlines().index(f"list_id = {value}") + 1
    assert r.code == 1 and f"newsletter.toml:{line}: list_id: " in r.err and message in r.err, r.err
    assert "Traceback" not in r.err


@pytest.mark.parametrize("key", ["from_name", "name"])
def test_a_sender_name_shaped_like_an_encoded_word_is_refused_at_its_line(project, cli, key):
    """The From: header's parser decodes =?...?= (a line break included): it crashed message building."""
    project.write_issue(SMALL_ISSUE)
    project.write_list("email,name\na@example.org,Ann\n")
    cfg = project.root / "newsletter.toml"
    value = '"=?utf-8?q?Eve=0D=0ABcc:_x@example.net?="'
    text = cfg.read_text().replace('from_email = "digest@example.org"\n',
                                   f'from_email = "digest@example.org"\n{key} = {value}\n')
    if f"\n{key} = " in cfg.read_text():  # the key is set already: replace that line instead
        text = "\n".join(f"{key} = {value}" if ln.startswith(f"{key} = ") else ln
                         for ln in cfg.read_text().splitlines()) + "\n"
    cfg.write_text(text)
    r = cli("send", "issues/issue.yaml", "--list", "readers", cwd=project.root)
    line = text.splitlines().index(f"{key} = {value}") + 1
    assert r.code == 1 and f"newsletter.toml:{line}: {key}: holds '=?'" in r.err, r.err
    assert "internal error" not in r.err and not (project.root / "outbox").exists()


def test_list_id_from_the_environment_and_its_default():
    from newsletter.config import default_list_id, load_settings
    from newsletter.errors import ConfigError

    root = REPO
    with pytest.raises(ConfigError, match=r"^environment variable NEWSLETTER_LIST_ID: list_id: .*is not a list id"):
        load_settings(root / "newsletter.toml", env={"NEWSLETTER_LIST_ID": "no spaces please"})
    assert load_settings(root / "newsletter.toml", env={"NEWSLETTER_LIST_ID": "x.y.z"}).list_id == "x.y.z"
    # the example project: a Cyrillic name leaves no slug, so from_email's local part labels it
    assert load_settings(root / "newsletter.toml", env={}).list_id == "digest.example.org"
    assert default_list_id("Weekly AI: the digest!", "News@Acme.io") == "weekly-ai-the-digest.acme.io"
    assert default_list_id("Café Crème", "hello@пример.рф") == "cafe-creme.xn--e1afmkfd.xn--p1ai"
    assert default_list_id("日本", "\"a b\"@example.org") == "a-b.example.org"
    assert default_list_id("A" * 100, "x@example.org") == "a" * 63 + ".example.org"


def test_config_file_encoding_bom_syntax_and_tables_are_located(project, cli):
    project.write_issue(SMALL_ISSUE)
    cfg = project.root / "newsletter.toml"
    good = cfg.read_text(encoding="utf-8")
    cfg.write_bytes(b"\xef\xbb\xbf" + good.encode())  # Notepad's "UTF-8 with BOM"
    assert cli("check", "issues/issue.yaml", cwd=project.root).code == 0
    cfg.write_bytes(good.encode() + b'\n# caf\xe9 in Latin-1\n')
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    line = good.count("\n") + 2
    assert r.code == 1 and f"newsletter.toml:{line}: not UTF-8 text" in r.err, r.err
    cfg.write_text(good + 'oops = "unterminated\n', encoding="utf-8")
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1 and f"newsletter.toml:{good.count(chr(10)) + 1}: " in r.err and "fix the TOML syntax" in r.err
    cfg.write_text(good + '[brnad]\ncolor = "#0b6bcb"\n', encoding="utf-8")
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    line = good.count("\n") + 1
    assert r.code == 1 and f"newsletter.toml:{line}: brnad: unknown setting" in r.err, r.err


def test_default_language_is_checked_where_it_is_set(project, cli):
    """A wrong default language is newsletter.toml's error, not the issue file's (which has none)."""
    project.write_issue(SMALL_ISSUE.replace("language: en\n", ""))
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace('language = "en"', 'language = "xx"'))
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1 and "newsletter.toml:3: language: 'xx' is not a known BCP 47 language tag" in r.err, r.err
    assert "issues/issue.yaml" not in r.err
    r = cli("check", "issues/issue.yaml", cwd=project.root, env={"NEWSLETTER_LANGUAGE": "qq"})
    assert r.code == 1 and "environment variable NEWSLETTER_LANGUAGE: language: 'qq'" in r.err, r.err


@pytest.mark.parametrize("file, edit, says", [
    ("digest.mjml.j2", lambda t: t.replace("{{", "{{ {%", 1), "templates/digest.mjml.j2:{line}: unexpected '%'; fix the template"),
    ("digest.txt.j2", lambda t: t + "{% endif %}\n", "templates/digest.txt.j2:{end}: Encountered unknown tag 'endif'; fix"),
    ("digest.txt.j2", lambda t: t + "{{ nosuch }}\n", "templates/digest.txt.j2:{end}: 'nosuch' is undefined"),
    ("digest.txt.j2", lambda t: t + "{{ sections | length / 0 }}\n",
     "templates/digest.txt.j2:{end}: ZeroDivisionError: division by zero; fix the template"),
    ("digest.mjml.j2", lambda t: t.replace("<mj-body", "<mj-bdy", 1), "templates/digest.mjml.j2: the MJML it produced cannot be read"),
    ("digest.txt.j2", lambda t: t + "caf\udce9\n", "templates/digest.txt.j2: not UTF-8 text"),
    ("digest.css", lambda t: t + "/* caf\udce9 */\n", "templates/digest.css: not UTF-8 text"),
    ("labels.toml", lambda t: t + "# caf\udce9\n", "templates/labels.toml: not UTF-8 text"),
    ("digest.css", lambda t: t + "@media screen {" * 600 + "a { color: red }" + "}" * 600,
     "templates/digest.css (or the template's <mj-style>): CSS nested too deep for the CSS inliner"),
])
def test_a_broken_project_template_is_a_message_naming_the_file(project, cli, file, edit, says):
    """`newsletter init --templates` invites editing them: a slip is the editor's to fix, not a bug (exit 70)."""
    from newsletter.templating import copy_builtin

    project.write_issue(SMALL_ISSUE)
    copy_builtin(project.root / "templates")
    path = project.root / "templates" / file
    text = path.read_text(encoding="utf-8")
    path.write_bytes(edit(text).encode("utf-8", "surrogateescape"))
    line = text[:text.find("{{")].count("\n") + 1
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1, r.output
    assert says.format(line=line, end=text.count("\n") + 1) in r.err, r.err
    assert "internal error" not in r.err


def test_a_merge_field_naming_a_missing_column_stops_the_send_at_its_line(project, cli):
    """The line of the merge field itself, inside a `|` block too, as `check` locates merge fields."""
    project.write_issue(SMALL_ISSUE.replace('subject: "Hello', 'subject: "{{ subscriber.frist }}, hello')
                        .replace("  P.S. Reply", "  Dear reader,\n\n  P.S. {{ subscriber.compnay }} Reply"))
    project.write_list("email,name,company\na@example.org,Ann,ACME\n")
    r = cli("send", "issues/issue.yaml", "--list", "readers", cwd=project.root)
    assert r.code == 1, r.output
    lines = (project.root / "issues" / "issue.yaml").read_text().splitlines()
    subject = next(i for i, ln in enumerate(lines, 1) if "frist" in ln)
    outro = next(i for i, ln in enumerate(lines, 1) if "compnay" in ln)
    assert f"issues/issue.yaml:{subject}: subject: merge field subscriber.frist: " in r.err, r.err
    assert f"issues/issue.yaml:{outro}: outro: merge field subscriber.compnay: " in r.err, r.err
    assert "has no column 'compnay' (columns: company, email, name)" in r.err
    assert not (project.root / "outbox").exists()


def test_an_issue_file_name_with_a_line_break_is_refused_not_a_crash(project, cli):
    """The file's name is the issue's id, which goes into a mail header (X-Newsletter-Issue)."""
    project.write_issue(SMALL_ISSUE, "x\nBcc: evil@example.com.yaml")
    project.write_list("email,name\na@example.org,Ann\n")
    for command in (["check"], ["send", "--list", "readers"]):
        r = cli(command[0], "issues/x\nBcc: evil@example.com.yaml", *command[1:], cwd=project.root)
        assert r.code == 1, r.output
        assert "the file name has a control character (U+000A" in r.err and "internal error" not in r.err
    assert not (project.root / "outbox").exists()


def test_a_merge_field_in_a_link_url_is_flagged_and_urlencode_keeps_each_readers_link_whole(project, cli):
    """?c={{ subscriber.company }} for "A, B & C" would end the parameter at the & (and the text
    part's URL at the first space): check warns at the field's line; `| urlencode` fixes it."""
    issue = SMALL_ISSUE.replace("  P.S. Reply", "  See [your page](https://example.org/p?c={{ subscriber.company }}&x=1)"
                                "\n  and [this one](https://example.org/q?c={{ subscriber.company | urlencode }}).\n\n  P.S. Reply")
    project.write_issue(issue)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 0, r.output
    line = next(i for i, ln in enumerate(issue.splitlines(), 1) if "/p?c=" in ln)
    assert (f"issues/issue.yaml:{line}: outro: warning: merge field {{{{ subscriber.company }}}} is inside a link's "
            "URL") in r.err and "write {{ subscriber.company | urlencode }}" in r.err, r.err
    assert r.err.count("inside a link's URL") == 1  # not the encoded one

    project.write_list('email,name,company\na@example.org,Ann,"A, B & C"\n')
    r = cli("send", "issues/issue.yaml", "--list", "readers", cwd=project.root,
            env={"NEWSLETTER_SECRET": "a-test-secret-0123456789abcdefghij"})
    assert r.code == 0, r.output
    [sample] = (project.root / "outbox" / "issue").glob("sample-*.eml")
    message = email.message_from_bytes(sample.read_bytes(), policy=email.policy.default)
    html_part = message.get_body(("html",)).get_content()
    text_part = message.get_body(("plain",)).get_content()
    assert 'href="https://example.org/q?c=A%2C%20B%20%26%20C"' in html_part
    assert "(https://example.org/q?c=A%2C%20B%20%26%20C)" in text_part


def test_a_merge_field_that_does_not_check_inside_a_link_url_is_its_own_error_not_a_crash(project, cli):
    project.write_issue(SMALL_ISSUE.replace("  P.S. Reply", "  See [it](https://example.org/p?c={{ subscriber.name * 3 }})."
                                            "\n\n  P.S. Reply"))
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1, r.output
    assert "merge field {{ subscriber.name * 3 }} is not allowed" in r.err and "internal error" not in r.err, r.err


def test_a_link_whose_url_is_a_merge_field_says_so(project, cli):
    project.write_issue(SMALL_ISSUE.replace("  P.S. Reply", "  See [your page]({{ subscriber.site }}).\n\n  P.S. Reply"))
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 1
    assert "a link whose URL starts with a merge field" in r.err and "NLMF" not in r.err, r.err


def test_single_braces_around_a_merge_field_are_a_warning_at_their_line(project, cli):
    issue = SMALL_ISSUE.replace("  P.S. Reply", "  Dear { subscriber.name },\n\n  P.S. Reply")
    project.write_issue(issue)
    r = cli("check", "issues/issue.yaml", cwd=project.root)
    assert r.code == 0, r.output
    line = next(i for i, ln in enumerate(issue.splitlines(), 1) if "Dear {" in ln)
    assert (f"issues/issue.yaml:{line}: outro: warning: {{ subscriber.name }} has single braces" in r.err
            and "a merge field is {{ subscriber.name }}" in r.err), r.err
    assert r.err.count("single braces") == 1  # the real merge fields ({{ ... }}) are not flagged


def test_send_works_with_a_babel_older_than_2_19(project, cli, monkeypatch):
    """pyproject allows babel>=2.14; babel.localedata.clear_caches (dropped before the list streams)
    only came with 2.19, so without it a send keeps the locale data instead of failing (exit 70)."""
    import babel.localedata

    monkeypatch.delattr(babel.localedata, "clear_caches", raising=False)
    project.write_issue(SMALL_ISSUE)
    project.write_list("email,name\na@example.org,Ann\n")
    r = cli("send", "issues/issue.yaml", "--list", "readers", cwd=project.root)
    assert r.code == 0, r.output
    assert "would receive it        1" in r.out


def test_a_reader_that_goes_away_stops_the_command_quietly(project):
    """`newsletter check -v | head -1`: standard output closes early; no 'error: : Broken pipe' and no
    Python complaint at exit, as other command-line tools behave."""
    import subprocess
    import sys

    from conftest import clean_env

    project.write_issue(SMALL_ISSUE)
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "check", "issues/issue.yaml", "--verbose"],
                            cwd=project.root, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert "Broken pipe" not in err and "Exception ignored" not in err and "Traceback" not in err, err


def test_preview_and_serve_refuse_a_port_in_use_before_announcing_it(project, cli):
    """uvicorn's own bind failure exited 3 ("incomplete send") after preview had printed its URL."""
    import socket

    project.write_issue(SMALL_ISSUE)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = cli("preview", "issues/issue.yaml", "--port", port, cwd=project.root)
        assert r.code == 2, r.output
        assert f"port {port} on 127.0.0.1 is in use" in r.err and "pick another with --port" in r.err, r.err
        assert "preview of" not in r.out
        r = cli("serve", "--port", port, cwd=project.root,
                env={"NEWSLETTER_SECRET": "a-real-key-for-this-test-0123456789abcdef"})
        assert r.code == 2, r.output
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.err
