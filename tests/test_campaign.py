"""The library as a script uses it: plan, then send, through the public API; and the send loop itself
driven with a scripted provider (our own Provider interface: it stands in for a mail service whose
answers a test must choose, e.g. "accepted, then the answer was lost")."""

from __future__ import annotations

import csv
import email
import io
from dataclasses import dataclass, field
from email import policy
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import SMALL_ISSUE, Project
from newsletter import Campaign, StopFlag, load_settings, open_store, prepare
from newsletter.dispatch import Dispatcher, RetryPolicy, SendReport
from newsletter.errors import ConfigError
from newsletter.ledger import IN_FLIGHT, SENT
from newsletter.message import BatchResult, Envelope, Personalization
from newsletter.personalize import verify_unsubscribe_token
from newsletter.providers.dry_run import csv_safe
from smtp_server import Recorder

SECRET = "library-test-secret-0123456789abcdef"


def campaign(project: Project, n: int = 5, env: dict[str, str] | None = None, provider: str | None = None) -> Campaign:
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    project.write_list("email,name\n" + "".join(f"r{i}@example.com,R{i}\n" for i in range(n)))
    settings = load_settings(project.root / "newsletter.toml", env={"NEWSLETTER_SECRET": SECRET, **(env or {})})
    return Campaign(prepare(project.root / "issues" / "2021-03.yaml", settings), settings, "readers", provider)


@dataclass
class Scripted:
    """A provider whose answer for each address is chosen by the test; records every hand-over."""

    answers: dict[str, str] = field(default_factory=dict)  # email -> "failed" | "retry" | "unknown"
    max_batch: int = 2
    name: str = "scripted"
    handed: list[str] = field(default_factory=list)
    closed: bool = False

    def send(self, envelope: Envelope, batch: list[Personalization]) -> BatchResult:
        result = BatchResult()
        for p in batch:
            self.handed.append(p.email)
            outcome = self.answers.get(p.email, "sent")
            getattr(result, outcome)[p.email] = f"{outcome} by script"
        return result

    def close(self) -> None:
        self.closed = True


def test_plan_counts_without_writing_anything(project: Project) -> None:
    c = campaign(project, n=5)
    plan = c.plan(limit=3)
    assert plan.recipients == 3 and plan.report.left_for_later == 2 and plan.report.rows == 5
    assert plan.batches == 3  # SMTP: one message a call
    assert not (project.root / ".newsletter").exists() and not (project.root / "outbox").exists()


def test_send_then_plan_again_finds_nobody_waiting(project: Project, serve) -> None:
    handler = Recorder()
    c = campaign(project, n=5, env={"NEWSLETTER_SMTP_PORT": str(serve(handler))})
    report = c.send()
    assert report.complete and report.sent == 5 and len(handler.messages) == 5
    assert c.plan().recipients == 0 and c.plan().report.already_sent == 5
    assert c.send().sent == 0 and len(handler.messages) == 5  # exactly once


def test_dry_run_report_speaks_of_would_send_and_prints_one_html_size(project: Project) -> None:
    c = campaign(project, n=2)
    report = c.dry_run()
    assert report.as_dict()["would_send"] == 2 and "sent" not in report.as_dict()
    html = (c.outbox / "2021-03.html").read_bytes()
    assert report.html_bytes == len(html)  # the file render/dry run write is the size reported


def test_unsubscribe_mechanism_comes_from_the_provider(project: Project) -> None:
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace('unsubscribe_url = "https://example.org/unsubscribe?email={email}&token={token}"\n', "")
                   + "\n[sendgrid]\nasm_group_id = 7\n")
    assert campaign(project, provider="sendgrid").plan().recipients == 5  # SendGrid brings its own
    with pytest.raises(ConfigError, match="smtp has no unsubscribe mechanism of its own"):
        campaign(project, provider="smtp")


def run_loop(c: Campaign, provider: Scripted, state_dir: Path, **kwargs: object) -> SendReport:
    report = SendReport(c.stem, str(c.list_path), provider.name, "send")
    with open_store(state_dir) as store, store.send_record(c.stem) as record:
        Dispatcher(c.personalizer(), provider, record, report, retry=RetryPolicy(attempts=3, backoff=0),
                   sleep=lambda s: None, **kwargs).run(c.subscribers())
    return report


def test_loop_records_each_answer_and_never_retries_an_unknown(project: Project, tmp_path: Path) -> None:
    c = campaign(project, n=5)
    provider = Scripted({"r1@example.com": "unknown", "r2@example.com": "failed", "r3@example.com": "retry"})
    report = run_loop(c, provider, tmp_path)
    assert provider.closed
    assert provider.handed.count("r1@example.com") == 1  # handed over once, answer lost: never again
    assert provider.handed.count("r3@example.com") == 3  # transient: retried up to the attempts
    assert report.sent == 2 and list(report.failed) == ["r2@example.com"] and list(report.unsent) == ["r3@example.com"]
    assert report.unknown == ["r1@example.com"] and not report.complete
    with open_store(tmp_path) as store:
        states = store.read_record(c.stem).states(f"r{i}@example.com" for i in range(5))
    assert states["r0@example.com"] == SENT and states["r1@example.com"] == IN_FLIGHT

    again = Scripted()
    report = run_loop(c, again, tmp_path)
    assert "r1@example.com" not in again.handed and report.unknown == ["r1@example.com"]
    assert sorted(again.handed) == ["r2@example.com", "r3@example.com"]  # failed ones get another chance
    resend = Scripted()
    run_loop(c, resend, tmp_path, resend_unknown=True)
    assert resend.handed == ["r1@example.com"]


def test_loop_stops_cleanly_when_asked(project: Project, tmp_path: Path) -> None:
    c = campaign(project, n=6)
    stop = StopFlag()
    provider = Scripted()
    original = provider.send

    def send_then_stop(envelope: Envelope, batch: list[Personalization]) -> BatchResult:
        stop.requested = True  # Ctrl-C during the first batch
        return original(envelope, batch)

    provider.send = send_then_stop  # type: ignore[method-assign]
    report = run_loop(c, provider, tmp_path, stop=stop)
    assert report.sent == 2 and report.left_for_later == 4 and report.interrupted


def test_dry_run_lists_every_reader_as_csv_writer_would_and_writes_three_whole_samples(project: Project) -> None:
    """recipients.csv names each reader (one provider batch and more), quoted where csv.writer quotes
    and with formulas defused; the three samples are whole messages with working unsubscribe links."""
    names = ["Ann", "Smith, John", 'The "Boss"', "=1+1", "", "Зоя", "-x", "plain"]
    rows = [(f"r{i}@example.com", names[i % len(names)]) for i in range(1_205)]
    project.write_issue(SMALL_ISSUE, "2021-03.yaml")
    out = io.StringIO()
    csv.writer(out).writerows([("email", "name"), *rows])
    project.write_list(out.getvalue())
    settings = load_settings(project.root / "newsletter.toml", env={"NEWSLETTER_SECRET": SECRET})
    c = Campaign(prepare(project.root / "issues" / "2021-03.yaml", settings), settings, "readers")
    assert c.dry_run().sent == 1_205
    want = io.StringIO()
    csv.writer(want).writerows([("email", "name", "line"),
                                *[(csv_safe(e), csv_safe(n), i + 2) for i, (e, n) in enumerate(rows)]])
    assert (c.outbox / "recipients.csv").read_bytes().decode("utf-8") == want.getvalue()
    samples = sorted(c.outbox.glob("sample-*.eml"))
    assert len(samples) == 3
    for path, (address, _) in zip(samples, rows):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert msg["To"].addresses[0].addr_spec == address
        url = msg["List-Unsubscribe"].split(",")[0].strip("<> ")
        assert verify_unsubscribe_token(SECRET, address, parse_qs(urlparse(url).query)["token"][0])


def test_the_store_is_asked_about_each_issue_and_every_suppression(project: Project) -> None:
    """Before an issue's first send its record is empty, though another issue's is not; a single
    suppression in the store is found among a list's readers."""
    c = campaign(project, n=1_200)
    assert c.plan().recipients == 1_200  # nothing recorded, nothing suppressed: every reader waits
    assert c.send(provider=Scripted(max_batch=100), limit=700).sent == 700
    project.write_issue(SMALL_ISSUE, "2021-04.yaml")
    settings = c.settings
    april = Campaign(prepare(project.root / "issues" / "2021-04.yaml", settings), settings, "readers")
    assert april.plan().recipients == 1_200 and april.plan().report.already_sent == 0
    plan = c.plan()
    assert (plan.recipients, plan.report.already_sent) == (500, 700)
    with open_store(project.root / ".newsletter") as store:
        store.suppressions.add("r1100@example.com", "unsubscribed", "cli")
    for each in (c.plan(), april.plan()):
        assert each.report.suppressed == {"unsubscribed": 1}
    assert (c.plan().recipients, april.plan().recipients) == (499, 1_199)
