#!/usr/bin/env python3
"""A counting SMTP sink for the benchmarks: accepts everything, keeps nothing but how many
messages each recipient got.

    python bench/count_sink.py PORT REPORT.json

Postfix's smtp-sink cannot say who got what, and aiosmtpd reads DATA line by line (~105 messages/s
of 110 KB here). This one speaks just enough ESMTP for our client and smtplib (EHLO with PIPELINING,
MAIL, RCPT, DATA, RSET, NOOP, QUIT), finds the end of DATA with bytes.find, and counts a recipient
only when its message is accepted (the 250 after the final dot). On SIGTERM or SIGINT it writes
REPORT.json: {"messages", "recipients", "distinct", "most_copies", "second_copies"} and exits.
Standard library only.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from pathlib import Path

END = b"\r\n.\r\n"


class _Session(asyncio.Protocol):
    def __init__(self, counts: Counter[str], totals: dict[str, int]) -> None:
        self.counts, self.totals = counts, totals
        self.buffer = b""
        self.in_data = False
        self.rcpts: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 count-sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies: list[bytes] = []
        while self.buffer:
            if self.in_data:
                # the message starts right after "354": an empty one is ".\r\n" at once
                if self.buffer.startswith(b".\r\n"):
                    end, skip = 0, 3
                else:
                    end = self.buffer.find(END)
                    if end < 0:  # wait for the rest of the message
                        break
                    skip = end + len(END)
                self.buffer = self.buffer[skip:]
                self.in_data = False
                self.counts.update(self.rcpts)
                self.totals["messages"] += 1
                self.totals["recipients"] += len(self.rcpts)
                self.rcpts = []
                replies.append(b"250 2.0.0 queued\r\n")
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                break
            line, self.buffer = self.buffer[:line_end], self.buffer[line_end + 2:]
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                replies.append(b"250-count-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n")
            elif verb == b"MAIL":
                self.rcpts = []
                replies.append(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                address = line.partition(b":")[2].strip().split(b" ")[0].strip(b"<>")
                self.rcpts.append(address.decode("utf-8", "replace").lower())
                replies.append(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                self.in_data = True
                replies.append(b"354 go ahead\r\n")
            elif verb == b"RSET":
                self.rcpts = []
                replies.append(b"250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 bye\r\n")
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
            else:
                replies.append(b"250 2.0.0 ok\r\n")
        if replies:
            self.transport.write(b"".join(replies))


async def _serve(port: int, report: Path) -> None:
    counts: Counter[str] = Counter()
    totals = {"messages": 0, "recipients": 0}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Session(counts, totals), "127.0.0.1", port)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    await stop
    server.close()
    most = max(counts.values(), default=0)
    report.write_text(json.dumps({**totals, "distinct": len(counts), "most_copies": most,
                                  "second_copies": sum(c - 1 for c in counts.values() if c > 1)}))


def main() -> int:
    port, report = int(sys.argv[1]), Path(sys.argv[2])
    asyncio.run(_serve(port, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
