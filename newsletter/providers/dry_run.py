"""The default provider: nothing leaves the machine. It writes who would receive the issue
(recipients.csv) and a few complete sample messages (.eml) to open in a mail client."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..message import BatchResult, Envelope, Personalization
from ..mime import POLICY, build_message

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_UTF8 = POLICY.clone(utf8=True)


def csv_safe(cell: object) -> object:
    """A cell a spreadsheet will not run: text that starts like a formula gets a leading ' (OWASP,
    CSV injection). Use it for every cell of every CSV this tool writes; numbers pass as they are."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


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
            self._csv.writerow([csv_safe(p.email), csv_safe(p.name), p.line])
            if self.written < self.samples:
                self.written += 1
                safe = re.sub(r"[^\w.@-]+", "_", p.email)
                path = self.outbox / f"sample-{self.written}-{safe}.eml"
                # as SMTP sends it: a non-ASCII address travels as UTF-8 (SMTPUTF8)
                utf8 = not (envelope.from_email + p.email).isascii()
                path.write_bytes(build_message(envelope, p).as_bytes(policy=_UTF8 if utf8 else None))
            result.sent[p.email] = "dry-run"
        return result

    def close(self) -> None:
        self._file.close()
