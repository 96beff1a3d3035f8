"""Mail providers behind one small interface; registered by name. Dry run is one of them."""

from __future__ import annotations

from ..config import Settings
from ..errors import UsageError
from .base import BatchResult, Envelope, Personalization, Provider

NAMES = ("dry-run", "sendgrid", "smtp")


def batch_size(name: str, settings: Settings) -> int:
    """Recipients per provider call, without building the provider (dry-run summaries)."""
    if name == "smtp":
        from .smtp import SMTPProvider

        return SMTPProvider.max_batch
    return settings.sendgrid.batch_size if name == "sendgrid" else 1000


def make_provider(name: str, settings: Settings, **options: object) -> Provider:
    """Build the provider registered under `name`."""
    if name == "dry-run":
        from .dry_run import DryRunProvider

        return DryRunProvider(**options)  # type: ignore[arg-type]
    if name == "sendgrid":
        from .sendgrid import SendGridProvider

        return SendGridProvider(settings.sendgrid)
    if name == "smtp":
        from .smtp import SMTPProvider

        return SMTPProvider(settings.smtp)
    raise UsageError(f"unknown provider {name!r}; use one of: {', '.join(NAMES)}")


__all__ = ["BatchResult", "Envelope", "Personalization", "Provider", "make_provider", "NAMES"]
