"""Sending an issue to a list: dry run, test send and real send, as library calls the CLI wraps."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import MAKE_SECRET, Settings
from .dispatch import Dispatcher, RetryPolicy, SendReport, StopFlag
from .errors import ConfigError, IssueError, Problem, UsageError
from .ledger import Ledger
from .merge import referenced_columns
from .personalize import Personalizer
from .pipeline import Prepared, write_rendered
from .providers import batch_size, make_provider
from .providers.base import BatchResult, Envelope, Personalization, Provider
from .subscribers import RESERVED, SubscriberList, resolve_list


@dataclass
class Campaign:
    """One issue to one list, with everything resolved and checked before anything is sent."""

    prepared: Prepared
    settings: Settings
    list_spec: str
    provider_name: str
    outbox: Path = field(init=False)
    secret: str = field(init=False)
    throwaway_secret: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.list_path = resolve_list(self.list_spec, self.settings.root)
        self.columns = self.subscribers().columns  # fails early on a missing list or header
        self.outbox = self.settings.root / "outbox" / self.prepared.rendered.stem
        self.secret = self.settings.secret or ""
        if not self.secret:
            self.throwaway_secret = True
            self.secret = secrets.token_urlsafe(32)
        self._check_merge_columns()
        if not self.settings.unsubscribe_url and self.provider_name != "sendgrid":
            raise ConfigError(
                f"{self.settings.path or 'newsletter.toml'}: unsubscribe_url is not set, and "
                f"[sendgrid] asm_group_id cannot help when {self.provider_name} sends; set unsubscribe_url"
            )

    def subscribers(self) -> SubscriberList:
        """The list, validated for what this provider can deliver (SendGrid: no SMTPUTF8)."""
        return SubscriberList(self.list_path, allow_utf8_local=self.provider_name != "sendgrid")

    @property
    def stem(self) -> str:
        return self.prepared.rendered.stem

    def _check_merge_columns(self) -> None:
        """A merge field naming a column the list lacks would be blank for every reader: refuse."""
        columns = {c.lower() if c.lower() in RESERVED else c for c in self.columns}
        issue, path = self.prepared.issue, self.prepared.path
        problems = []
        for loc, text in issue.texts():
            for col in sorted(referenced_columns(text) - columns - {"name"}):
                problems.append(Problem(path, issue.line_of(*loc), ".".join(map(str, loc)),
                    f"merge field subscriber.{col}: {self.list_path} has no column {col!r} "
                    f"(columns: {', '.join(sorted(columns))}); add the column or fix the name"))
        if problems:
            raise IssueError(problems)

    def require_secret(self) -> None:
        if self.throwaway_secret and self.settings.unsubscribe_url and "{token}" in self.settings.unsubscribe_url:
            raise ConfigError(
                "NEWSLETTER_SECRET is not set: unsubscribe links are signed with it, and your "
                "unsubscribe endpoint verifies them with the same key; make one with "
                f"{MAKE_SECRET}, export NEWSLETTER_SECRET=... and keep it stable across sends"
            )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.settings.retry_attempts, backoff=self.settings.retry_backoff)

    def personalizer(self, *, test: bool = False) -> Personalizer:
        return Personalizer(self.prepared.rendered, self.settings, self.secret, provider=self.provider_name,
                            test=test)

    def new_report(self, mode: str, provider: str) -> SendReport:
        r = SendReport(self.stem, str(self.list_path), provider, mode)
        r.html_bytes = len(self.prepared.rendered.html.encode())
        r.warnings = [str(p) for p in self.prepared.warnings]
        return r

    # --- the three modes ------------------------------------------------------------------------

    def dry_run(self, *, limit: int | None = None, samples: int = 3) -> SendReport:
        """Who would receive the issue now; writes outbox/<stem>/ and records nothing."""
        write_rendered(self.prepared, self.settings, self.outbox)
        provider = make_provider("dry-run", self.settings, outbox=self.outbox, samples=samples)
        with Ledger(self.settings.state_dir, self.stem, readonly=True) as ledger:
            report = self.new_report("dry-run", self.provider_name)
            Dispatcher(self.personalizer(), provider, ledger, report, record=False,
                       limit=limit).run(self.subscribers())
        report.batches = -(-report.sent // batch_size(self.provider_name, self.settings))
        report.requests = 0
        self.save(report)
        return report

    def count_recipients(self, *, limit: int | None = None, resend_unknown: bool = False) -> int:
        """How many readers a real send would hand to the provider now (for the confirmation)."""
        subs = self.subscribers()
        with Ledger(self.settings.state_dir, self.stem, readonly=True) as ledger:
            d = Dispatcher(self.personalizer(), _NoProvider(), ledger, self.new_report("count", ""),
                           record=False, limit=limit, resend_unknown=resend_unknown)
            return sum(1 for _ in d.todo(s for s in subs if s.status == "subscribed"))

    def send(self, *, provider: Provider | None = None, limit: int | None = None,
             resend_unknown: bool = False, stop: StopFlag | None = None,
             on_progress: Callable[[int], None] = lambda n: None,
             retry: RetryPolicy | None = None) -> SendReport:
        """The real send: every subscribed reader who has not had this issue, exactly once."""
        self.require_secret()
        provider = provider or make_provider(self.provider_name, self.settings)
        with Ledger(self.settings.state_dir, self.stem) as ledger:
            report = self.new_report("send", provider.name)
            Dispatcher(self.personalizer(), provider, ledger, report, retry=retry or self.retry_policy(),
                       stop=stop or StopFlag(), limit=limit, resend_unknown=resend_unknown,
                       on_progress=on_progress).run(self.subscribers())
        self.save(report)
        return report

    def test_send(self, *, provider: Provider | None = None, retry: RetryPolicy | None = None) -> SendReport:
        """One [TEST] copy to each preview address, with the first subscriber's fields; not recorded."""
        self.require_secret()
        if not self.settings.preview:
            raise UsageError("no preview addresses: set preview = [...] in newsletter.toml "
                             "or NEWSLETTER_PREVIEW_TO=a@example.com,b@example.com")
        subs = self.subscribers()
        first = next((s for s in subs if s.status == "subscribed"), None)
        if first is None:
            raise UsageError(f"{self.list_path}: no subscribed reader to take merge fields from")
        provider = provider or make_provider(self.provider_name, self.settings)
        report = self.new_report("test", provider.name)
        personalizer = self.personalizer(test=True)
        d = Dispatcher(personalizer, provider, None, report, retry=retry or self.retry_policy())
        try:
            d.send_batch([personalizer(first, to=address) for address in self.settings.preview])
        finally:
            provider.close()
        self.save(report)
        return report

    def save(self, report: SendReport) -> Path:
        self.outbox.mkdir(parents=True, exist_ok=True)
        path = self.outbox / f"report-{report.mode}.json"
        path.write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        return path


class _NoProvider:
    """Stands in where a Dispatcher only filters recipients and never sends."""

    name = "none"
    max_batch = 1000

    def send(self, envelope: Envelope, batch: list[Personalization]) -> BatchResult:
        raise AssertionError("counting never sends")

    def close(self) -> None:
        pass
