"""The state store, seen from an asyncio service: a few threads, each owning one connection.

SQLite and psycopg connections block and belong to one thread, so every store call runs on a worker
thread that opened its own store; the event loop only waits for the answer. SQLite gets one thread
(its writes queue anyway, and one writer never waits on SQLite's busy-sleep), PostgreSQL a few.
A call that fails drops that thread's connection: the next call opens a fresh one, so a database
restart costs the requests in flight, not the service.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..config import Settings
    from ..store import Store
    from ..store.db import Database

log = logging.getLogger("newsletter.web")
T = TypeVar("T")
_STOP = object()


class StoreUnavailable(Exception):
    """The store did not answer in time (or at all)."""


class StoreThreads:
    """`await threads.run(fn)` calls fn(store) on a worker thread and returns its result."""

    def __init__(self, settings: Settings, size: int | None = None, timeout: float = 30.0):
        self.settings = settings
        self.size = size or (4 if settings.database_url else 1)
        self.timeout = timeout
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

    async def run(self, fn: Callable[[Store], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            # the call may still finish and commit: harmless, every write here is idempotent
            raise StoreUnavailable(f"the state store did not answer within {self.timeout:g} s") from None

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
                    store = _close_quietly(store)
                loop.call_soon_threadsafe(_settle, future, None, e)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)
        if store is not None:
            _close_quietly(store)


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


class _Joined:
    """The store's connection from inside a transaction already open: the store's own calls
    (Suppressions.add, Events.add) join it instead of committing each on their own."""

    def __init__(self, db: Database):
        self._db = db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield


@contextmanager
def one_transaction(store: Store) -> Iterator[tuple[Any, Any]]:
    """(suppressions, events) of `store` whose writes all land in one transaction: one commit for
    a whole webhook delivery, and nothing of it if any write fails."""
    from ..suppressions import Events, Suppressions

    joined: Any = _Joined(store.db)
    with store.db.transaction():
        yield Suppressions(joined), Events(joined)
