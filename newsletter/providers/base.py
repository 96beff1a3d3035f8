"""The interface every provider implements. Providers only send: everything a message needs
(personalized values, unsubscribe headers, the text part) is decided before they see it."""

from __future__ import annotations

from typing import Protocol

from ..message import BatchResult, Envelope, Personalization


class Provider(Protocol):
    name: str
    max_batch: int  # recipients per send() call

    def send(self, envelope: Envelope, batch: list[Personalization]) -> BatchResult:
        """Hand a batch to the provider. Never raises for a failed batch: report it in the result
        (retry for transient failures, failed for permanent ones, unknown when it may have been
        delivered); raise only NewsletterError for problems no retry can fix (missing API key)."""
        ...

    def close(self) -> None:
        """Release connections; called once at the end of a send."""
        ...
