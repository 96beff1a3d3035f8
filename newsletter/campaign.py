"""One issue to one list: plan, then send. The library call the command line is a thin layer over.

    settings = load_settings()
    campaign = Campaign(prepare(Path("issues/2021-03.yaml"), settings), settings, "digest")
    plan = campaign.plan()              # who would get it now; nothing written, nothing sent
    report = campaign.dry_run()         # the same, with outbox/<issue>/ written for inspection
    report = campaign.send()            # the real send, exactly once, resumable
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import MAKE_SECRET, Settings
from .dispatch import Dispatcher, RetryPolicy, Selection, SendReport, StopFlag
from .errors import ConfigError, IssueError, Problem, UsageError
from .ledger import DeliveryRecord, NoRecord, key_of
from .merge import column_offsets, referenced_columns
from .personalize import Personalizer, html_size
from .pipeline import Prepared, write_rendered
from .providers import Provider, spec
from .providers.dry_run import DryRunProvider
from .subscribers import RESERVED, SubscriberList, resolve_list


@dataclass
class Plan:
    """What a real send would do now: how many readers it would hand to the provider, and the
    rest of the list's story (statuses, invalid rows, already sent, unknown) in `report`."""

    recipients: int
    batches: int
    report: SendReport


class Campaign:
    """One issue to one list through one provider, resolved and checked before anything is sent."""

    def __init__(self, prepared: Prepared, settings: Settings, list_spec: str | Path,
                 provider: str | None = None):
        self.prepared = prepared
        self.settings = settings
        self.provider_name = provider or settings.provider
        self.provider_spec = spec(self.provider_name)
        self.list_path = resolve_list(str(list_spec), settings.root)
        self.columns = self.subscribers().columns  # fails early on a missing list or header
        self.outbox = settings.root / "outbox" / self.stem
        self.throwaway_secret = not settings.secret
        # a dry run works without the key: its sample links are signed with a throwaway one
        self.secret = settings.secret or secrets.token_urlsafe(32)
        self._check_merge_columns()
        if not settings.unsubscribe_url and not settings.own_unsubscribe(self.provider_name):
            raise ConfigError(
                f"{settings.path or 'newsletter.toml'}: unsubscribe_url is not set, and "
                f"{self.provider_name} has no unsubscribe mechanism of its own; set unsubscribe_url"
            )

    @property
    def stem(self) -> str:
        return self.prepared.rendered.stem

    def subscribers(self) -> SubscriberList:
        """A fresh stream over the list (each pass re-reads the file), validated for what this
        provider can deliver (non-ASCII local parts need SMTPUTF8: SendGrid refuses them)."""
        return SubscriberList(self.list_path, allow_utf8_local=self.provider_spec.utf8_local_parts)

    def _check_merge_columns(self) -> None:
        """A merge field naming a column the list lacks would be blank for every reader: refuse."""
        columns = {c.lower() if c.lower() in RESERVED else c for c in self.columns}
        issue, path = self.prepared.issue, self.prepared.path
        problems = []
        for loc, text in issue.texts():
            for col in sorted(referenced_columns(text) - columns - {"name"}):
                # the line of its first use, inside a `|` block too (as check locates merge fields)
                at = next((start for start, col_at in column_offsets(text) if col_at == col), None)
                problems.append(Problem(path, issue.line_of(*loc, at=at), ".".join(map(str, loc)),
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

    def provider(self) -> Provider:
        """The provider this campaign sends through (a missing key fails here, before any send)."""
        return self.provider_spec.create(self.settings.provider_settings(self.provider_name))

    @property
    def batch_size(self) -> int:
        return self.provider_spec.batch_size(self.settings.provider_settings(self.provider_name))

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.settings.retry_attempts, backoff=self.settings.retry_backoff)

    def personalizer(self, *, test: bool = False, whole: int | None = None) -> Personalizer:
        return Personalizer(self.prepared.rendered, self.settings, self.secret, provider=self.provider_name,
                            test=test, whole=whole)

    def new_report(self, mode: str, provider: str) -> SendReport:
        r = SendReport(self.stem, str(self.list_path), provider, mode)
        r.html_bytes = html_size(self.prepared.rendered, self.settings)
        r.warnings = [str(p) for p in self.prepared.warnings]
        return r

    # --- plan, then send ------------------------------------------------------------------------

    def plan(self, *, limit: int | None = None, resend_unknown: bool = False) -> Plan:
        """How many readers a real send would hand to the provider now; reads, never writes."""
        subscribers = self.subscribers()
        report = self.new_report("plan", self.provider_name)
        with self.settings.open_store(create=False) as store:
            select = Selection(store.read_record(self.stem), report, limit, resend_unknown,
                               store.suppressions.reasons)
            recipients = sum(1 for _ in select(iter(subscribers)))
        report.take_list(subscribers)
        return Plan(recipients, -(-recipients // self.batch_size), report)

    def dry_run(self, *, limit: int | None = None, samples: int = 3) -> SendReport:
        """Who would receive the issue now, written to outbox/<issue>/ (recipients.csv, sample .eml
        files, the rendered parts, a report); nothing is sent and nothing recorded."""
        write_rendered(self.prepared, self.settings, self.outbox)
        report = self.new_report("dry-run", self.provider_name)
        with self.settings.open_store(create=False) as store:
            # whole messages for the samples only (the first readers); every reader is listed
            Dispatcher(self.personalizer(whole=samples), DryRunProvider(self.outbox, samples),
                       store.read_record(self.stem), report, limit=limit,
                       suppressed=store.suppressions.reasons).run(self.subscribers())
        # what the real provider would make of it: the dry run itself hands over nothing
        report.batches = -(-report.sent // self.batch_size)
        report.requests = 0
        self.save(report)
        return report

    def send(self, *, provider: Provider | None = None, limit: int | None = None,
             resend_unknown: bool = False, stop: StopFlag | None = None,
             on_progress: Callable[[int], None] = lambda n: None,
             retry: RetryPolicy | None = None, worker: bool = False) -> SendReport:
        """The real send: every subscribed reader who has not had this issue, exactly once. With
        `worker` (PostgreSQL), one of several processes that split the list between them."""
        self.require_secret()
        provider = provider or self.provider()
        if worker and resend_unknown:
            raise UsageError("--resend-unknown cannot go with --worker: other workers' readers are in "
                             "flight too; once the workers are done, run it without --worker")
        with self.settings.open_store() as store, store.send_record(self.stem, worker=worker) as record:
            report = self.new_report("send", provider.name)
            d = Dispatcher(self.personalizer(), provider, record, report, retry=retry or self.retry_policy(),
                           stop=stop or StopFlag(), limit=limit, resend_unknown=resend_unknown,
                           on_progress=on_progress, suppressed=store.suppressions.reasons)
            self._parallel(d, provider, record, worker)
            d.run(self.subscribers())
        if worker:  # in flight when this worker looked: another worker's, not unknown
            report.other_workers += len(report.unknown) - len(d.own_unknown)
            report.unknown = d.own_unknown
        self.save(report)
        return report

    def _parallel(self, d: Dispatcher, provider: Provider, record: DeliveryRecord, worker: bool) -> None:
        """Several connections at once, a rate and a daily quota: the provider's settings say
        (SMTP's [smtp] connections, rate, daily); a worker also claims its readers."""
        from .parallel import daily_pace

        settings = self.settings.provider_settings(self.provider_name)
        connections = getattr(settings, "connections", None)
        if connections is None or provider.max_batch != 1:
            if worker:
                raise UsageError(f"--worker sends through SMTP only, not {provider.name}")
            return
        d.connections = connections
        d.more_connections = self.provider
        d.pace = daily_pace(record, provider.name, settings.per_second, settings.daily)
        if worker:
            d.claim = lambda batch: self._claim(d, record, provider.name, batch)

    @staticmethod
    def _claim(d: Dispatcher, record: DeliveryRecord, provider: str, batch: list) -> list:
        taken = record.claim(f"{d.run_id}-claim", provider, batch)
        d.report.other_workers += len(batch) - len(taken)
        return [p for p in batch if key_of(p.email) in taken]

    def test_send(self, *, provider: Provider | None = None, retry: RetryPolicy | None = None) -> SendReport:
        """One [TEST] copy to each preview address, with the first subscriber's fields; not recorded."""
        self.require_secret()
        if not self.settings.preview:
            raise UsageError("no preview addresses: set preview = [...] in newsletter.toml "
                             "or NEWSLETTER_PREVIEW_TO=a@example.com,b@example.com")
        first = next((s for s in self.subscribers() if s.status == "subscribed"), None)
        if first is None:
            raise UsageError(f"{self.list_path}: no subscribed reader to take merge fields from")
        provider = provider or self.provider()
        report = self.new_report("test", provider.name)
        personalizer = self.personalizer(test=True)
        d = Dispatcher(personalizer, provider, NoRecord(), report, retry=retry or self.retry_policy())
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
