"""Several connections at once (SMTP): the one send loop, with one thread per connection.

Each connection keeps the single loop's exactly-once rule: its next message is committed as in
flight before it is handed over, and its answer is committed after the reply (in the same commit
as the connection's next message in flight), so a `kill -9` leaves at most one unknown reader per
connection. The main thread reads the list, skips who already has the issue, personalizes and
feeds a short queue; the send record is one database connection, used under one lock.

Shared by all connections: the message rate (`[smtp] rate`) and the daily quota (`[smtp] daily`,
counted from the send record, so it holds across runs).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .errors import NewsletterError
from .message import BatchResult, Personalization

if TYPE_CHECKING:
    from .dispatch import Dispatcher
    from .providers.base import Provider
    from .subscribers import SubscriberList

_END = object()


class Pace:
    """At most `rate` messages a second over all connections, and at most `allowance` in all."""

    def __init__(self, rate: float | None = None, allowance: int | None = None, quota_note: str = ""):
        self.interval = 1 / rate if rate else 0.0
        self.left = allowance
        self.quota_note = quota_note  # what to say when the allowance is used up
        self._next = 0.0
        self._lock = threading.Lock()

    def take(self, stop: Any) -> bool:
        """Wait for the next slot (Ctrl-C ends the wait); False when the quota is used up."""
        with self._lock:
            if self.left is not None:
                if self.left <= 0:
                    return False
                self.left -= 1
            slot = max(self._next, time.monotonic())
            self._next = slot + self.interval
        while not stop.requested and (wait := slot - time.monotonic()) > 0:
            time.sleep(min(wait, 0.2))
        return True


def daily_pace(record: Any, provider: str, rate: float | None, daily: int | None) -> Pace | None:
    """The pace of a send: the rate, and what the last 24 h of the send record leave of `daily`."""
    if not rate and not daily:
        return None
    allowance = note = None
    if daily:
        since = (datetime.now(timezone.utc) - timedelta(hours=24)).isoformat(timespec="seconds")
        used = record.handed_over_since(provider, since) if hasattr(record, "handed_over_since") else 0
        allowance = max(daily - used, 0)
        note = (f"daily quota reached: [{provider}] daily = {daily:,} messages in 24 h, and the send record "
                f"has {used:,} handed to {provider} in the 24 h before this run began; the rest is left "
                "for later: run the same command again once the oldest of them is 24 h old")
    return Pace(rate, allowance, note or "")


class _Locked:
    """The send record behind one lock: the main thread reads it, the connections write it."""

    def __init__(self, record: Any):
        self._record = record
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._record, name)

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return locked

    def seal(self) -> None:
        """Take the lock for good: on an abort (a second Ctrl-C) the main thread goes on to close the
        database while the connections may still be running; sealed, none of them can be inside it
        then, and any that tries waits until the process ends."""
        self._lock.acquire()

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` (another user of the same database connection) under the same lock."""

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return fn(*args, **kwargs)

        return locked


@dataclass
class ParallelSend:
    """Dispatcher.run with one thread per provider (connection); see the module's docstring."""

    d: Dispatcher
    providers: list[Provider]
    pace: Pace | None = None
    claim: Callable[[list[Personalization]], list[Personalization]] | None = None  # --worker

    def __post_init__(self) -> None:
        self.record = _Locked(self.d.record)
        self.report_lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.numbers = itertools.count(1)
        self.claim_size = 8 * len(self.providers)
        self.aborted = False  # a second Ctrl-C: the connections are still running, see run

    def run(self, subscribers: SubscriberList, todo: Iterable[Any]) -> None:
        q: queue.Queue[Any] = queue.Queue(maxsize=2 * len(self.providers))
        threads = [threading.Thread(target=self._connection, args=(p, q), daemon=True,
                                    name=f"smtp-{i}") for i, p in enumerate(self.providers)]
        for t in threads:
            t.start()
        try:
            try:
                for chunk in self._chunks(todo):
                    for p in chunk:
                        if not self._put(q, p):
                            self._left(1)
            finally:
                for _ in threads:
                    q.put(_END)  # blocks only while the connections drain what is queued
                for t in threads:
                    while t.is_alive():
                        t.join(0.2)  # in steps: Ctrl-C reaches the main thread meanwhile
        except KeyboardInterrupt:
            # abort at once: the connections (daemon threads) are left as they are, each maybe in
            # the middle of a reply; closing their sockets or the database under them crashed the
            # interpreter. What they held stays in flight in the record: unknown, never resent.
            self.aborted = True
            self.d.stop.requested = True
            self.record.seal()
            raise
        if self.errors:
            raise self.errors[0]

    def _chunks(self, todo: Iterable[Any]) -> Iterable[list[Personalization]]:
        """Personalized readers, claimed first when this is a worker."""
        d = self.d
        it = iter(todo)
        while not d.stop.requested:
            if self.claim is None:
                sub = next(it, None)
                if sub is None:
                    return
                yield [d.personalizer(sub)]
                continue
            batch = [d.personalizer(s) for s in itertools.islice(it, self.claim_size)]
            if not batch:
                return
            yield self.record.guard(self.claim)(batch)  # the same database connection: locked

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self.d.stop.requested:
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                pass
        return False

    def _left(self, n: int) -> None:
        with self.report_lock:
            self.d.report.left_for_later += n

    def _connection(self, provider: Provider, q: queue.Queue[Any]) -> None:
        """One connection: take the next message, send it, record the answer."""
        pending: BatchResult | None = None  # the last answer, committed with the next in-flight mark
        try:
            while True:
                try:
                    p = q.get_nowait()
                except queue.Empty:
                    if pending is not None:  # nothing to fuse it with: commit the answer now
                        self.record.step(pending)
                        pending = None
                    p = q.get()
                if p is _END:
                    return
                if self.d.stop.requested or self.errors:
                    self._left(1)
                    continue
                pending = self._one(provider, p, pending)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            self.errors.append(e)
            self.d.stop.requested = True
            while (p := q.get()) is not _END:  # let the main thread's puts through
                self._left(1)
        finally:
            try:
                if pending is not None:
                    self.record.step(pending)
            except BaseException as e:  # noqa: BLE001 - e.g. the disk is full: the main thread raises it
                self.errors.append(e)
                self.d.stop.requested = True
            finally:
                provider.close()

    def _one(self, provider: Provider, p: Personalization, pending: BatchResult | None) -> BatchResult | None:
        """One reader, retried while the server says the failure is transient; returns the answer
        still to be committed."""
        d, report = self.d, self.d.report
        result = BatchResult()
        for attempt in range(1, d.retry.attempts + 1):
            if self.pace is not None and not self.pace.take(d.stop):
                with self.report_lock:
                    report.quota_reached = self.pace.quota_note
                    report.left_for_later += 1
                d.stop.requested = True
                return pending
            if d.stop.requested and attempt == 1:
                self._left(1)
                return pending
            with self.report_lock:
                report.batches += attempt == 1
            self.record.step(pending, f"{d.run_id}-{next(self.numbers):05d}", provider.name, [p])
            pending = None
            try:
                result = provider.send(d.envelope, [p])
            except NewsletterError as e:
                # providers raise only before handing anything over: nothing was sent
                self.record.step(BatchResult(retry={p.email: str(e)}))
                raise
            with self.report_lock:
                report.requests += 1
                report.sent += len(result.sent)
                report.failed.update(result.failed)
                report.unknown.extend(result.unknown)
                d.own_unknown.extend(result.unknown)
                d.on_progress(len(result.sent) + len(result.failed) + len(result.unknown))
            if not result.retry:
                return result
            pending = result
            if attempt == d.retry.attempts or d.stop.requested:
                break
            d._wait(d.retry.wait(attempt, result.retry_after))
            if d.stop.requested:
                break
        with self.report_lock:
            report.unsent.update(result.retry)
            d.on_progress(len(result.retry))
            if result.unreachable and not report.provider_down:
                report.provider_down = next(iter(result.retry.values()), "provider unreachable")
        if result.unreachable:
            d.stop.requested = True
        return pending
