"""A deadline for a whole HTTP request. A client's socket timeout bounds each read, not the answer:
a server sending a byte every few seconds holds the request for as long as it likes. The deadline
keeps a duplicate of each socket its request connects (handed over with `watch`, before any TLS or
proxy tunnel: TLS takes the socket object over, not the connection) and, once `seconds` have passed,
shuts them down, which wakes the blocked read at once. Used by linkcheck (httpx) and by the
suppressions sync (urllib)."""

from __future__ import annotations

import socket
import threading
from typing import Self


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        """Cut this connection too when time runs out (at once if it has already)."""
        with self._lock:
            self._sockets.append(sock.dup())
            if self.expired:
                self._shutdown()

    def _cut(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def __enter__(self) -> Self:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()  # the duplicate: the connection's own socket is its client's to close
            self._sockets.clear()
