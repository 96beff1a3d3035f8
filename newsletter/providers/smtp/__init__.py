"""SMTP: any relay (Postfix, SES, Mailgun, a local MailDev), one message per recipient."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import ProviderSpec


class SMTPSettings(BaseModel):
    """The [smtp] table of newsletter.toml."""

    model_config = ConfigDict(extra="forbid")

    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: str | None = Field(default=None, exclude=True, repr=False)  # NEWSLETTER_SMTP_PASSWORD only
    timeout: float = Field(default=30.0, gt=0, le=3600)  # a socket cannot wait forever (inf: crash)
    # Messages in flight at once, one connection each. 4: hosted relays (SES, Mailgun, Postmark,
    # Gmail/Workspace) accept a handful of concurrent connections per sender and some start
    # refusing (421/451 "too many connections") beyond ~5-10; Postfix's default per-client limit
    # is 50. Four keeps well inside both, and is where a 2-core sender stops gaining (README).
    connections: int = Field(default=4, ge=1, le=64)
    rate: str | None = None  # at most this many messages, all connections together: "14/s", "600/m", "/h"
    daily: int | None = Field(default=None, ge=1)  # messages through smtp in any 24 h, across runs

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        m = _RATE.fullmatch(v.strip()) if v is not None else None
        if v is not None and (m is None or not float(m[1])):  # "0/s" would mean no limit at all
            raise ValueError(f"{v!r} is not a rate: write it as a count above 0 per second, minute or "
                             "hour, e.g. \"14/s\", \"600/m\" or \"5000/h\"")
        return v.strip() if v else None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v.strip() or any(c.isspace() or not c.isprintable() for c in v.strip()):
            raise ValueError(f"{v!r} is not a host name: write one like smtp.example.org or an IP address")
        return v.strip()

    @field_validator("username", "password")
    @classmethod
    def _ascii(cls, v: str | None) -> str | None:
        if v is not None and not v.isascii():  # never echo the value: the password is a secret
            raise ValueError("has a character outside ASCII, and SMTP login (Python's smtplib) sends "
                             "ASCII only; use an ASCII user name and password for this relay")
        return v

    @property
    def per_second(self) -> float | None:
        """The rate setting as messages per second (None: no limit)."""
        if not self.rate:
            return None
        m = _RATE.fullmatch(self.rate)
        assert m is not None
        return float(m[1]) / {"s": 1, "m": 60, "h": 3600}[m[2]]


_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(s|m|h)")


SPEC = ProviderSpec(
    name="smtp",
    settings=SMTPSettings,
    client=".smtp.client:SMTPProvider",
    env={"NEWSLETTER_SMTP_HOST": "host", "NEWSLETTER_SMTP_PORT": "port",
         "NEWSLETTER_SMTP_USERNAME": "username", "NEWSLETTER_SMTP_PASSWORD": "password",
         "NEWSLETTER_SMTP_SECURITY": "security", "NEWSLETTER_SMTP_TIMEOUT": "timeout",
         "NEWSLETTER_SMTP_CONNECTIONS": "connections", "NEWSLETTER_SMTP_RATE": "rate",
         "NEWSLETTER_SMTP_DAILY": "daily"},
    secrets=frozenset({"password"}),
    # one message per call, so the send record is written per message: if the process dies, at
    # most one reader's copy per connection is of unknown fate (see parallel.py)
    batch_size=lambda settings: 1,
)

