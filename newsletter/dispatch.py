"""The one send loop: stream the list, skip who already has the issue, batch, hand to the
provider, record every answer, retry what failed transiently, and stop cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import TYPE_CHECKING

from .errors import NewsletterError
from .ledger import IN_FLIGHT, SENT, SendRecord
from .message import BatchResult, Personalization
from .personalize import Personalizer
from .providers.base import Provider
from .subscribers import Subscriber, SubscriberList

if TYPE_CHECKING:
    from .parallel import Pace


@dataclass
class RetryPolicy:
    attempts: int = 5  # per batch, first try included
    backoff: float = 2.0  # seconds before the 2nd try; doubles each time
    max_wait: float = 120.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait)
        return min(self.backoff * 2 ** (attempt - 1), self.max_wait)


class StopFlag:
    """Set by the first Ctrl-C: the batch in hand finishes and is recorded, then the loop stops."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def graceful_interrupt(stop: StopFlag, on_first: Callable[[], None] = lambda: None) -> Iterator[StopFlag]:
    """First Ctrl-C requests a clean stop; a second one interrupts at once."""
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        on_first()

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class SendReport:
    issue: str
    subscriber_list: str
    provider: str
    mode: str  # "dry-run" | "send" | "test"
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    finished_at: str = ""
    rows: int = 0
    skipped_by_status: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)  # reason -> readers skipped
    already_sent: int = 0
    unknown: list[str] = field(default_factory=list)  # in flight in an earlier run, no answer recorded
    left_for_later: int = 0  # beyond --limit, or not reached after Ctrl-C
    sent: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # permanent refusals
    unsent: dict[str, str] = field(default_factory=dict)  # still failing after the retries
    batches: int = 0
    requests: int = 0
    interrupted: bool = False
    provider_down: str = ""  # why the run stopped early, when the provider kept failing
    quota_reached: str = ""  # why the run stopped early, when the daily quota was used up
    other_workers: int = 0  # --worker: readers another worker took first
    html_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every reader waiting for the issue got it: nothing failed, unknown or left over."""
        return not (self.failed or self.unsent or self.unknown or self.interrupted or self.quota_reached)

    def as_dict(self) -> dict[str, object]:
        data = {**asdict(self), "complete": self.complete}
        if self.mode == "dry-run":  # nothing was sent: say what would have been
            data["would_send"] = data.pop("sent")
        return data

    def take_list(self, subscribers: SubscriberList) -> None:
        """What reading the list found: rows, statuses, invalid rows and duplicates."""
        self.rows = subscribers.rows
        self.skipped_by_status = {k: v for k, v in subscribers.by_status.items() if k != "subscribed"}
        self.invalid = [str(p) for p in subscribers.invalid]
        self.duplicates = [str(p) for p in subscribers.duplicates]


@dataclass
class Selection:
    """Who is waiting for the issue: subscribed readers who are not suppressed and whom the send
    record has no answer for. Counts the rest into the report; used by the send loop and by the
    count before a send."""

    record: SendRecord
    report: SendReport
    limit: int | None = None
    resend_unknown: bool = False
    suppressed: Callable[[list[str]], dict[str, str]] = lambda keys: {}  # key -> reason
    taken: int = 0

    def __call__(self, subscribers: Iterator[Subscriber]) -> Iterator[Subscriber]:
        subscribed = (s for s in subscribers if s.status == "subscribed")
        while chunk := list(islice(subscribed, 500)):  # one store look-up per 500 readers
            keys = [s.key for s in chunk]
            states = self.record.states(keys)
            suppressed = self.suppressed(keys)
            if not states and not suppressed and self.limit is None:  # the usual chunk: all waiting
                self.taken += len(chunk)
                yield from chunk
                continue
            for sub in chunk:
                state = states.get(sub.key)
                if sub.key in suppressed:  # left the list since the CSV was written: never mail them
                    reason = suppressed[sub.key]
                    self.report.suppressed[reason] = self.report.suppressed.get(reason, 0) + 1
                elif state == SENT:
                    self.report.already_sent += 1
                elif state == IN_FLIGHT and not self.resend_unknown:
                    self.report.unknown.append(sub.email)
                elif self.limit is not None and self.taken >= self.limit:
                    self.report.left_for_later += 1
                else:
                    self.taken += 1
                    yield sub


@dataclass
class Dispatcher:
    personalizer: Personalizer
    provider: Provider
    record: SendRecord  # who already has the issue, and where each answer is written
    report: SendReport
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    stop: StopFlag = field(default_factory=StopFlag)
    limit: int | None = None
    resend_unknown: bool = False
    on_progress: Callable[[int], None] = lambda n: None
    sleep: Callable[[float], None] = time.sleep
    suppressed: Callable[[list[str]], dict[str, str]] = lambda keys: {}  # see Selection
    # several connections at once (parallel.py): makes each further connection's provider
    more_connections: Callable[[], Provider] | None = None
    connections: int = 1
    pace: Pace | None = None  # the rate and the daily quota
    claim: Callable[[list[Personalization]], list[Personalization]] | None = None  # --worker

    def __post_init__(self) -> None:
        self.envelope = self.personalizer.envelope()
        self.run_id = uuid.uuid4().hex[:8]
        self.own_unknown: list[str] = []  # unknown in this run (not earlier ones): parallel sends

    def run(self, subscribers: SubscriberList) -> SendReport:
        """Send to every subscribed reader of the list who has not had this issue yet."""
        parallel = None
        if self.more_connections is not None and self.provider.max_batch == 1:
            from .parallel import ParallelSend

            providers = [self.provider] + [self.more_connections() for _ in range(self.connections - 1)]
            parallel = ParallelSend(self, providers, self.pace, self.claim)
        record, suppressed = self.record, self.suppressed
        if parallel is not None:  # one database connection: every use under one lock
            record, suppressed = parallel.record, parallel.record.guard(suppressed)
        todo = Selection(record, self.report, self.limit, self.resend_unknown, suppressed)(iter(subscribers))
        try:
            if parallel is not None:
                parallel.run(subscribers, todo)
            else:
                while not self.stop.requested and (chunk := list(islice(todo, self.provider.max_batch))):
                    self.send_batch(self.personalizer.batch(chunk))
            if self.stop.requested:
                self.report.interrupted = not (self.report.provider_down or self.report.quota_reached)
                # count the rest without sending, so the report is whole
                self.report.left_for_later += sum(1 for _ in todo)
        finally:
            if parallel is None or not parallel.aborted:  # else a connection's thread may be using it
                self.provider.close()
        self.report.take_list(subscribers)
        self.report.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return self.report

    def send_batch(self, batch: list[Personalization]) -> None:
        """One batch, retried while the provider says the failure is transient."""
        self.report.batches += 1
        batch_id = f"{self.run_id}-{self.report.batches:05d}"
        remaining = batch
        for attempt in range(1, self.retry.attempts + 1):
            self.record.mark_in_flight(batch_id, self.provider.name, remaining)
            try:
                result = self.provider.send(self.envelope, remaining)
            except NewsletterError as e:
                # providers raise only before handing anything over: nothing was sent
                self.record.record(BatchResult(retry={p.email: str(e) for p in remaining}))
                raise
            self.report.requests += 1
            self.record.record(result)
            self.report.sent += len(result.sent)
            self.report.failed.update(result.failed)
            self.report.unknown.extend(result.unknown)
            self.on_progress(len(result.sent) + len(result.failed) + len(result.unknown))
            if not result.retry:
                return
            remaining = [p for p in remaining if p.email in result.retry]
            if attempt == self.retry.attempts or self.stop.requested:
                break
            self._wait(self.retry.wait(attempt, result.retry_after))
            if self.stop.requested:
                break
        self.report.unsent.update(result.retry)
        self.on_progress(len(result.retry))
        if result.unreachable:
            # the provider itself kept failing: the next batches would only wait out the same
            # backoff; stop, and let the editor rerun the command once the provider is back
            self.report.provider_down = next(iter(result.retry.values()), "provider unreachable")
            self.stop.requested = True

    def _wait(self, seconds: float) -> None:
        """Sleep in small steps so that Ctrl-C during a backoff stops promptly."""
        end = time.monotonic() + seconds
        while not self.stop.requested and (left := end - time.monotonic()) > 0:
            self.sleep(min(left, 0.2))
