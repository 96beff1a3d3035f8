"""SendGrid's v3 Mail Send API: up to 1000 recipients a request."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .. import ProviderSpec

# SendGrid replaces this with the reader's link to its unsubscribe group
ASM_UNSUBSCRIBE = "<%asm_group_unsubscribe_raw_url%>"


class SendGridSettings(BaseModel):
    """The [sendgrid] table of newsletter.toml."""

    model_config = ConfigDict(extra="forbid")

    api_url: str = "https://api.sendgrid.com"
    api_key: str | None = Field(default=None, exclude=True, repr=False)  # SENDGRID_API_KEY only
    asm_group_id: int | None = None  # SendGrid's unsubscribe group instead of our own unsubscribe URL
    batch_size: int = Field(default=1000, ge=1, le=1000)
    # List-Unsubscribe sent once, at the top level, with substitution tags for each reader's address
    # and token (~215 instead of ~460 bytes a reader). SendGrid documents substitutions in subject,
    # reply-to and content only, so this stays off until a real account shows the header arriving
    # filled in: look at a delivered message's List-Unsubscribe before turning it on.
    substitute_headers: bool = False
    # gzip the request body (Content-Encoding: gzip, in SendGrid's spec): ~9x smaller requests (the
    # example issue, 1000 readers: 502 kB -> 56 kB). SendGrid turns it on per account, on request
    # to its support; an account without it refuses every request, so it is off by default.
    compress: bool = False


SPEC = ProviderSpec(
    name="sendgrid",
    settings=SendGridSettings,
    client=".sendgrid.client:SendGridProvider",
    env={"SENDGRID_API_KEY": "api_key", "SENDGRID_API_URL": "api_url",
         "SENDGRID_SUBSTITUTE_HEADERS": "substitute_headers", "SENDGRID_COMPRESS": "compress"},
    secrets=frozenset({"api_key"}),
    batch_size=lambda settings: settings.batch_size,
    utf8_local_parts=False,  # SendGrid refuses addresses with a non-ASCII local part
    own_unsubscribe=lambda settings: ASM_UNSUBSCRIBE if settings.asm_group_id is not None else None,
)

