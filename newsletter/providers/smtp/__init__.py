"""SMTP: any relay (Postfix, SES, Mailgun, a local MailDev), one message per recipient."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import ProviderSpec


class SMTPSettings(BaseModel):
    """The [smtp] table of newsletter.toml."""

    model_config = ConfigDict(extra="forbid")

    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: str | None = Field(default=None, exclude=True, repr=False)  # NEWSLETTER_SMTP_PASSWORD only
    timeout: float = Field(default=30.0, gt=0)


SPEC = ProviderSpec(
    name="smtp",
    settings=SMTPSettings,
    client=".smtp.client:SMTPProvider",
    env={"NEWSLETTER_SMTP_HOST": "host", "NEWSLETTER_SMTP_PORT": "port",
         "NEWSLETTER_SMTP_USERNAME": "username", "NEWSLETTER_SMTP_PASSWORD": "password",
         "NEWSLETTER_SMTP_SECURITY": "security", "NEWSLETTER_SMTP_TIMEOUT": "timeout"},
    secrets=frozenset({"password"}),
    # one message per call, so the send record is written per message: if the process dies, at
    # most one reader's copy is of unknown fate (recording costs ~0.1 ms)
    batch_size=lambda settings: 1,
)

