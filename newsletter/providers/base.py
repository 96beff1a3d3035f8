"""What every provider receives and returns. Providers only send: everything a message needs
(personalized values, unsubscribe headers, the text part) is decided before they see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from ..merge import Filler, filler


@dataclass(frozen=True)
class Envelope:
    """The parts every message of one send shares. subject/html/text carry NLMF tokens
    (NLMF<n>H in the HTML, filled HTML-escaped; NLMF<n>T in subject and text, filled raw)."""

    issue_id: str  # e.g. "2021-03"; SendGrid category and custom arg, SMTP X-Newsletter-Issue
    from_email: str
    from_name: str
    reply_to: str | None
    subject: str
    html: str
    text: str
    slots: int  # number of slots: values lists have this length
    categories: tuple[str, ...] = ()
    asm_group_id: int | None = None  # SendGrid unsubscribe group instead of our own URL
    test: bool = False

    @cached_property
    def fillers(self) -> tuple[Filler, Filler, Filler]:
        return filler(self.subject), filler(self.html), filler(self.text)

    def fill(self, p: "Personalization") -> tuple[str, str, str]:
        """(subject, html, text) for one recipient."""
        subject, html, text = self.fillers
        return subject.fill(p.raw), html.fill(p.escaped), text.fill(p.raw)


@dataclass(frozen=True)
class Personalization:
    """One recipient: address, slot values (raw and HTML-escaped) and per-recipient headers."""

    email: str
    name: str
    raw: tuple[str, ...]
    escaped: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)  # List-Unsubscribe, List-Unsubscribe-Post
    line: int = 0  # line in the subscriber list, for messages


@dataclass
class BatchResult:
    """What happened to each address of a batch; every address lands in exactly one dict."""

    sent: dict[str, str] = field(default_factory=dict)  # email -> provider's answer (message id, status)
    failed: dict[str, str] = field(default_factory=dict)  # email -> permanent error: do not retry now
    retry: dict[str, str] = field(default_factory=dict)  # email -> transient error: retry later
    # email -> why its fate is unknown (handed over, no answer): stays "in flight", never retried
    unknown: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None  # seconds the provider asked us to wait
    unreachable: bool = False  # the service itself failed (down, 5xx, rate limit), not one address


class Provider(Protocol):
    name: str
    max_batch: int  # recipients per send() call

    def send(self, envelope: Envelope, batch: list[Personalization]) -> BatchResult:
        """Hand a batch to the provider. Never raises for a failed batch: report it in the result
        (retry for transient failures, failed for permanent ones); raise only NewsletterError for
        problems no retry can fix (missing API key, bad settings)."""
        ...

    def close(self) -> None:
        """Release connections; called once at the end of a send."""
        ...
