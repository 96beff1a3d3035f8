"""One recipient's email as a MIME message: multipart/alternative, text first, then HTML."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

from .providers.base import Envelope, Personalization


def build_message(envelope: Envelope, p: Personalization) -> EmailMessage:
    """The complete message for one recipient, headers included (RFC 5322, RFC 8058)."""
    subject, html, text = envelope.fill(p)
    msg = EmailMessage()
    msg["From"] = formataddr((envelope.from_name, envelope.from_email))
    msg["To"] = Address(display_name=p.name, addr_spec=p.email) if p.name else p.email
    if envelope.reply_to:
        msg["Reply-To"] = envelope.reply_to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=envelope.from_email.rpartition("@")[2] or None)
    msg["X-Newsletter-Issue"] = envelope.issue_id
    for name, value in p.headers.items():
        msg[name] = value
    # text first, HTML last: clients show the last alternative they can render
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg
