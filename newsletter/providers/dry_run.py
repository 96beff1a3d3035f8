"""The default provider: nothing leaves the machine. It writes who would receive the issue
(recipients.csv) and a few complete sample messages (.eml) to open in a mail client."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..mime import build_message
from ..message import BatchResult, Envelope, Personalization


class DryRunProvider:
    name = "dry-run"
    max_batch = 1000

    def __init__(self, outbox: Path, samples: int = 3):
        self.outbox = outbox
        self.samples = samples
        self.written = 0
        outbox.mkdir(parents=True, exist_ok=True)
        for old in outbox.glob("sample-*.eml"):
            old.unlink()
        self._file = (outbox / "recipients.csv").open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(["email", "name", "line"])

    def send(self, envelope: Envelope, batch: list[Personalization]) -> BatchResult:
        result = BatchResult()
        for p in batch:
            self._csv.writerow([p.email, p.name, p.line])
            if self.written < self.samples:
                self.written += 1
                safe = re.sub(r"[^\w.@-]+", "_", p.email)
                path = self.outbox / f"sample-{self.written}-{safe}.eml"
                path.write_bytes(build_message(envelope, p).as_bytes())
            result.sent[p.email] = "dry-run"
        return result

    def close(self) -> None:
        self._file.close()
