"""`check --spam`: the sample reader's whole message scored by SpamAssassin, local tests only.

SpamAssassin runs as `spamassassin -t -L` (test mode: the report is appended to the message; -L: no
DNS or other network tests), fed the .eml on stdin. Its score is SpamAssassin's default rule set on
this message; a receiving server adds network tests (DNS blocklists, SPF/DKIM) and its own weights.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import NewsletterError

if TYPE_CHECKING:
    from .config import Settings
    from .pipeline import Prepared

INSTALL = "sudo apt-get install spamassassin (Debian/Ubuntu; `make spamassassin` as root does it)"
_DETAILS = re.compile(r"Content analysis details:\s+\((-?[\d.]+) points?, (-?[\d.]+) required\)")
_ROW = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")
_STATUS = re.compile(r"score=(-?[\d.]+)\s+required=(-?[\d.]+)")


class SpamCheckError(NewsletterError):
    """SpamAssassin is missing, failed or took too long."""


@dataclass(frozen=True)
class SpamRule:
    name: str
    points: float
    description: str


@dataclass(frozen=True)
class SpamReport:
    """SpamAssassin's verdict: the total, its spam threshold ("required"), and each rule that fired."""

    score: float
    required: float
    rules: tuple[SpamRule, ...] = field(default=())
    version: str = ""
    seconds: float = 0.0

    @property
    def is_spam(self) -> bool:
        return self.score >= self.required

    def lines(self, *, all_rules: bool = False) -> list[str]:
        """A summary line, then one line per rule with points (all_rules: the 0-point ones too)."""
        head = (f"spam score {self.score:.1f} (SpamAssassin{' ' + self.version if self.version else ''} "
                f"marks spam from {self.required:.1f}; local tests only, {self.seconds:.1f} s)")
        rules = [r for r in self.rules if all_rules or r.points != 0]
        return [head + (":" if rules else "")] + [f"  {r.points:5.1f} {r.name:<24} {r.description}" for r in rules]


def parse_report(output: str) -> SpamReport:
    """Read `spamassassin -t` output: the X-Spam-Status header and the report table appended last.
    The last "Content analysis details" is SpamAssassin's own: the message body comes before it."""
    head = output.split("\n\n", 1)[0]
    version = m.group(1) if (m := re.search(r"X-Spam-Checker-Version: SpamAssassin (\S+)", head)) else ""
    start = output.rfind("Content analysis details:")
    if start < 0:
        if m := _STATUS.search(head.replace("\n", " ")):
            return SpamReport(float(m.group(1)), float(m.group(2)), (), version)
        raise SpamCheckError("SpamAssassin's output has no report; run `spamassassin -t -L < message.eml` to see why")
    m = _DETAILS.match(output, start)
    if not m:
        raise SpamCheckError("could not read SpamAssassin's report (an unknown format?)")
    score, required = float(m.group(1)), float(m.group(2))
    rules: list[tuple[float, str, str]] = []
    table = output[m.end():].split("\n")
    in_table = False
    for line in table:
        if line.startswith("----"):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.strip():
            if rules:
                break
            continue
        if row := _ROW.match(line):
            rules.append((float(row.group(1)), row.group(2), row.group(3).strip()))
        elif rules and line.startswith(" "):  # a description continued
            p, n, d = rules[-1]
            rules[-1] = (p, n, f"{d} {line.strip()}")
        else:
            break
    ordered = sorted(rules, key=lambda r: (-r[0], r[1]))
    return SpamReport(score, required, tuple(SpamRule(n, p, d) for p, n, d in ordered), version)


def spam_score(message_bytes: bytes, *, timeout: float = 60, command: str = "spamassassin") -> SpamReport:
    """Score a whole message with SpamAssassin's local tests; raises SpamCheckError when it cannot."""
    exe = shutil.which(command)
    if exe is None:
        raise SpamCheckError(f"SpamAssassin is not installed ({command} not found): {INSTALL}")
    start = time.perf_counter()
    try:
        proc = subprocess.run([exe, "-t", "-L"], input=message_bytes, capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise SpamCheckError(f"SpamAssassin took over {timeout:g} s; try again, or run it by hand: "
                             "spamassassin -t -L < message.eml") from None
    if proc.returncode != 0 or not proc.stdout:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise SpamCheckError(f"SpamAssassin failed (exit {proc.returncode}): {why[0]}")
    report = parse_report(proc.stdout.decode("utf-8", "replace"))
    return SpamReport(report.score, report.required, report.rules, report.version,
                      time.perf_counter() - start)


def sample_eml(prepared: Prepared, settings: Settings) -> bytes:
    """The sample reader's complete message (headers, text and HTML parts), as `send` builds it."""
    from .mime import build_message
    from .personalize import SAMPLE_SECRET, SAMPLE_SUBSCRIBER, Personalizer

    p = Personalizer(prepared.rendered, settings, SAMPLE_SECRET, provider=settings.provider)
    return build_message(p.envelope(), p(SAMPLE_SUBSCRIBER)).as_bytes()
