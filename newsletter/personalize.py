"""Per-recipient work: merge-field values, the signed unsubscribe URL and the RFC 8058 headers.

The issue is rendered once (render.py); here we only compute the few strings that differ per reader.
"""

from __future__ import annotations

from urllib.parse import quote

from .config import Settings
from .providers.base import Envelope, Personalization
from .render import Rendered
from .subscribers import Subscriber
from .tokens import unsubscribe_token, verify_unsubscribe_token

__all__ = ["ASM_UNSUBSCRIBE", "Personalizer", "unsubscribe_token", "verify_unsubscribe_token"]  # tokens: re-exported

ASM_UNSUBSCRIBE = "<%asm_group_unsubscribe_raw_url%>"  # SendGrid fills it when an ASM group is set


class Personalizer:
    """Turns a Subscriber into a Personalization for one rendered issue."""

    def __init__(self, rendered: Rendered, settings: Settings, secret: str, *, provider: str,
                 test: bool = False):
        self.rendered = rendered
        self.settings = settings
        self.secret = secret
        self.test = test
        # SendGrid's unsubscribe groups exist only when SendGrid sends
        self.asm = settings.sendgrid.asm_group_id is not None and provider == "sendgrid"
        self.url_template = settings.unsubscribe_url or ""
        self.mailto = settings.unsubscribe_mailto

    def unsubscribe_url(self, email: str) -> str:
        if not self.url_template:
            return ASM_UNSUBSCRIBE if self.asm else ""
        return self.url_template.format(email=quote(email, safe="@"), token=unsubscribe_token(self.secret, email))

    def headers(self, url: str, email: str) -> dict[str, str]:
        links = []
        if url.startswith("https://"):
            links.append(f"<{url}>")
        if self.mailto:
            links.append(f"<mailto:{self.mailto}?subject={quote('unsubscribe ' + email)}>")
        headers = {}
        if links:
            headers["List-Unsubscribe"] = ", ".join(links)
        if url.startswith("https://"):
            # RFC 8058 one-click: the mailbox provider POSTs to the URL; no confirmation page
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return headers

    def __call__(self, sub: Subscriber, to: str | None = None) -> Personalization:
        """Personalize for `sub`; `to` sends that copy elsewhere (test sends to a preview inbox)."""
        address = to or sub.email
        url = self.unsubscribe_url(address)
        raw, escaped = self.rendered.values(sub.fields, url)
        if url == ASM_UNSUBSCRIBE:
            escaped[0] = url  # SendGrid's own tag: it must reach SendGrid verbatim to be replaced
        headers = {} if (self.asm and not self.url_template) else self.headers(url, address)
        return Personalization(address, "" if to else sub.name, tuple(raw), tuple(escaped), headers, sub.line)

    def envelope(self) -> Envelope:
        r, s = self.rendered, self.settings
        prefix = "[TEST] " if self.test else ""
        return Envelope(
            issue_id=r.stem,
            from_email=s.from_email,
            from_name=s.from_name or s.name,
            reply_to=s.reply_to,
            subject=prefix + r.subject,
            html=r.html,
            text=r.text,
            slots=len(r.fields) + 1,
            categories=("newsletter", r.stem) if not self.test else ("newsletter", r.stem, "test"),
            asm_group_id=s.sendgrid.asm_group_id if self.asm else None,
            test=self.test,
        )
