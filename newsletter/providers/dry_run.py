"""The default provider: nothing leaves the machine. It writes who would receive the issue
(recipients.csv) and a few complete sample messages (.eml) to open in a mail client."""

from __future__ import annotations

import csv
import io
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


def _row(email: str, name: str, line: int) -> str:
    """One line of recipients.csv, as csv.writer writes it (QUOTE_MINIMAL, CRLF). csv.writer looks
    at every character of every cell (~15% of a dry run's time per reader): the usual row, with
    nothing to quote, is joined here, and only a row that needs quoting (a comma, a quote or a line
    break in a cell) goes through csv.writer."""
    if email.startswith(FORMULA_STARTS) or name.startswith(FORMULA_STARTS):
        email, name = str(csv_safe(email)), str(csv_safe(name))
    both = email + name
    if "," in both or '"' in both or "\n" in both or "\r" in both:  # what csv.writer quotes (excel)
        out = io.StringIO()
        csv.writer(out).writerow([email, name, line])
        return out.getvalue()
    return f"{email},{name},{line}\r\n"


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
        """List the batch in recipients.csv; the first `samples` readers of the run (who must be
        personalized whole, see Personalizer.whole) are also written as .eml files."""
        self._file.write("".join([_row(p.email, p.name, p.line) for p in batch]))
        for p in batch[:max(0, self.samples - self.written)]:
            self.written += 1
            safe = re.sub(r"[^\w.@-]+", "_", p.email)
            path = self.outbox / f"sample-{self.written}-{safe}.eml"
            # as SMTP sends it: a non-ASCII address travels as UTF-8 (SMTPUTF8)
            utf8 = not (envelope.from_email + p.email).isascii()
            path.write_bytes(build_message(envelope, p).as_bytes(policy=_UTF8 if utf8 else None))
        return BatchResult(sent=dict.fromkeys([p.email for p in batch], "dry-run"))

    def close(self) -> None:
        self._file.close()
