"""The state store, seen from an asyncio service.

PostgreSQL: a few worker threads, each owning one connection (psycopg connections block and belong
to one thread); the event loop only waits for the answer, and other requests go on meanwhile.

SQLite: a commit costs ~0.2 ms, less than handing the call to a thread and back (measured: ~0.45 ms
a one-click request inline, ~0.9 ms through a thread), so calls run on the event loop's own
connection, which waits at most BUSY_MS for SQLite's write lock. Only when another process holds
that lock longer (a send recording a batch) does the call move to a worker thread, which waits up to
30 s without holding up the loop. Every call is one transaction that either committed or rolled
back, and all of them are idempotent, so running one again there is safe.

A call that fails drops its connection: the next call opens a fresh one, so a database restart
costs the requests in flight, not the service.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..config import Settings
    from ..store import Store

log = logging.getLogger("newsletter.web")
T = TypeVar("T")
_STOP = object()
BUSY_MS = 20  # the longest the event loop waits for SQLite's write lock before handing the call over


class StoreUnavailable(Exception):
    """The store did not answer in time (or at all)."""


class StoreThreads:
    """`await threads.run(fn)` calls fn(store) on a worker thread (SQLite: on the event loop while
    the write lock is free) and returns its result."""

    def __init__(self, settings: Settings, size: int | None = None, timeout: float = 30.0):
        self.settings = settings
        self.size = size or (4 if settings.database_url else 1)
        self.timeout = timeout
        self.inline = not settings.database_url
        self._loop_store: Store | None = None  # SQLite: the event loop's own connection
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.size):
            t = threading.Thread(target=self._work, name=f"newsletter-store-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(_STOP)
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()
        self._drop_loop_store()

    async def run(self, fn: Callable[[Store], T]) -> T:
        if self.inline:
            try:
                return self._run_here(fn)
            except sqlite3.OperationalError as e:
                if not _busy(e):
                    raise
                # another process holds the write lock: wait for it on a worker thread
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            # the call may still finish and commit: harmless, every write here is idempotent
            raise StoreUnavailable(f"the state store did not answer within {self.timeout:g} s") from None

    def _run_here(self, fn: Callable[[Store], T]) -> T:
        try:
            if self._loop_store is None:
                self._loop_store = self.settings.open_store()
                self._loop_store.db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
            return fn(self._loop_store)
        except sqlite3.OperationalError as e:
            if not _busy(e):
                self._drop_loop_store()
            raise
        except BaseException:
            self._drop_loop_store()
            raise

    def _drop_loop_store(self) -> None:
        if self._loop_store is not None:
            store, self._loop_store = self._loop_store, None
            _close_quietly(store)

    def _work(self) -> None:
        store: Store | None = None
        while (job := self._jobs.get()) is not _STOP:
            fn, future, loop = job
            try:
                if store is None:
                    store = self.settings.open_store()
                result = fn(store)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting request
                if store is not None:
                    _close_quietly(store)
                    store = None
                loop.call_soon_threadsafe(_settle, future, None, e)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)
        if store is not None:
            _close_quietly(store)


def _busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the request timed out or went away meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _close_quietly(store: Store) -> None:
    try:
        store.close()
    except Exception as e:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
        log.debug("closing the state store: %s", e)


@contextmanager
def one_transaction(store: Store) -> Iterator[tuple[Any, Any]]:
    """(suppressions, events) of `store` whose writes all land in one transaction: one commit for
    a whole webhook delivery, and nothing of it if any write fails."""
    with store.db.transaction():  # their own calls are single statements: they join this one
        yield store.suppressions, store.events
