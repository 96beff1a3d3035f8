"""`check --spam`: the sample reader's message scored by the real SpamAssassin (local tests only).
Not skipped in CI: .ci/run installs spamassassin."""

from __future__ import annotations

import shutil
from email import message_from_bytes

import pytest
from conftest import EXAMPLE, REPO, SMALL_ISSUE

from newsletter.config import load_settings
from newsletter.pipeline import prepare
from newsletter.spamscore import SpamCheckError, parse_report, sample_eml, spam_score

needs_sa = pytest.mark.skipif(shutil.which("spamassassin") is None,
                              reason="SpamAssassin not found: apt-get install spamassassin")
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

OUTPUT = """\
X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm
X-Spam-Level: **
X-Spam-Status: No, score=2.8 required=5.0 tests=FUZZY_XPILL,GB_CUSTOM_HTM_URI,
\tHTML_FONT_LOW_CONTRAST autolearn=no version=4.0.1
From: x@example.org

Content analysis details:   (9.9 points, 1.0 required)
(a fake report inside the message body must not be read)

Content analysis details:   (2.8 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
-0.0 NO_RECEIVED            Informational: message has no Received headers
 0.1 FUZZY_XPILL            BODY: Attempt to obfuscate words in spam
 0.7 HTML_FONT_LOW_CONTRAST BODY: HTML font color similar or identical to
                            background
 1.0 GB_CUSTOM_HTM_URI      Custom html uri

"""


def test_parse_report_reads_the_last_report_and_joins_descriptions():
    r = parse_report(OUTPUT)
    assert (r.score, r.required, r.is_spam, r.version) == (2.8, 5.0, False, "4.0.1")
    assert [(x.name, x.points) for x in r.rules] == [
        ("GB_CUSTOM_HTM_URI", 1.0), ("HTML_FONT_LOW_CONTRAST", 0.7), ("FUZZY_XPILL", 0.1), ("NO_RECEIVED", -0.0)]
    assert r.rules[1].description == "BODY: HTML font color similar or identical to background"
    lines = r.lines()
    assert lines[0].startswith("spam score 2.8 (SpamAssassin 4.0.1 marks spam from 5.0; local tests only")
    assert lines[1:] == ["    1.0 GB_CUSTOM_HTM_URI        Custom html uri",
                         "    0.7 HTML_FONT_LOW_CONTRAST   BODY: HTML font color similar or identical to background",
                         "    0.1 FUZZY_XPILL              BODY: Attempt to obfuscate words in spam"]


def test_missing_spamassassin_says_how_to_install():
    with pytest.raises(SpamCheckError, match="SpamAssassin is not installed .*apt-get install spamassassin"):
        spam_score(b"Subject: x\n\nhello\n", command="no-such-spamassassin")


def test_sample_eml_is_the_readers_whole_message():
    settings = load_settings(REPO / "newsletter.toml")
    msg = message_from_bytes(sample_eml(prepare(EXAMPLE, settings), settings))
    assert msg["To"] == "reader@example.com" and msg["Message-ID"] and msg["Date"] and msg["List-Unsubscribe"]
    assert [p.get_content_type() for p in msg.walk()] == ["multipart/alternative", "text/plain", "text/html"]


@needs_sa
def test_example_issue_scores_below_the_threshold(cli):
    r = cli("check", str(EXAMPLE), "--spam", cwd=REPO)
    assert r.code == 0, r.output
    head = next(line for line in r.out.splitlines() if line.startswith("spam score "))
    score = float(head.split()[2])
    assert score < 5.0 and "marks spam from 5.0" in head, r.out
    assert "HTML_FONT_LOW_CONTRAST" in r.out  # the rules are listed under it


@needs_sa
def test_spammy_issue_warns_and_fails_with_strict(project, cli):
    project.write_issue(SMALL_ISSUE.replace("Reply to this email", f"`{GTUBE}` Reply to this email"))
    r = cli("check", "issues/issue.yaml", "--spam", cwd=project.root)
    assert r.code == 0, r.output
    assert "  1000.0 GTUBE " in r.out
    assert "issues/issue.yaml: spam: warning: SpamAssassin scores the sample message 100" in r.err
    assert ", spam from 5.0: change what the rules above point at" in r.err
    r = cli("check", "issues/issue.yaml", "--spam", "--strict", cwd=project.root)
    assert r.code == 1, r.output
    assert "issues/issue.yaml: spam: SpamAssassin scores the sample message 100" in r.err
    assert "1 error" in r.err


def test_cli_spam_without_spamassassin_fails_with_the_install_line(project, cli, tmp_path):
    project.write_issue(SMALL_ISSUE)
    r = cli("check", "issues/issue.yaml", "--spam", cwd=project.root, env={"PATH": str(tmp_path)})
    assert r.code == 1, r.output
    assert "spam score: could not run: SpamAssassin is not installed" in r.err
    assert "apt-get install spamassassin" in r.err
    assert "compatibility" in r.out  # the rest of the check ran
    r = cli("check", "issues/issue.yaml", cwd=project.root, env={"PATH": str(tmp_path)})
    assert r.code == 0 and "spam" not in r.output  # only when asked
