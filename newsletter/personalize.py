"""Per-recipient work: merge-field values, the signed unsubscribe URL and the RFC 8058 headers.

The issue is rendered once (render.py); here we only compute the few strings that differ per reader.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Mapping
from email.header import Header
from html import escape
from string import Formatter
from urllib.parse import quote

from .config import ATOM, Settings
from .message import TAG_DOMAIN, TAG_LOCAL, TAG_TOKEN, Envelope, Personalization, Rendered
from .subscribers import Subscriber, address_key
from .tokens import token_signer, unsubscribe_token, verify_unsubscribe_token

__all__ = ["Personalizer", "sample_message", "html_size", "list_id_header", "unsubscribe_token",
           "verify_unsubscribe_token"]  # tokens: re-exported

# The reader every preview shows (render, check, preview, the HTML size): no name, so that
# `default(...)` fallbacks show. Its unsubscribe token is signed with a fixed key: it has the length
# of a real one (so the sizes are a reader's), but works for nobody.
SAMPLE_SUBSCRIBER = Subscriber(email="reader@example.com", name="", status="subscribed",
                               fields={"email": "reader@example.com"}, line=0)
SAMPLE_SECRET = "sample-only: not a real key, links signed with it are refused"
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~@-]*")  # what quote(x, safe="@") leaves as it is
_ATOM = re.compile(ATOM)  # a phrase's word written as it is
_ENCODED_WORD = 75  # RFC 2047 2: an encoded word's longest


def list_id_header(name: str, list_id: str) -> str:
    """The List-Id header's value (RFC 2919): the newsletter's name as the phrase, then <list_id>.

    It is ASCII and ready to be written as it is, so SMTP, the .eml files and SendGrid all carry the
    same header: plain words stay as they are; ASCII with specials ("Dev, News") becomes a quoted
    string; a non-ASCII name, or one that holds "=?" (which a mail client would decode as RFC 2047,
    and Python's parser turned into line breaks), becomes encoded words. Those come from the legacy
    Header encoder: CPython's folder drops the space between two encoded words (see mime._subject),
    and an encoded word in a phrase may hold only letters, digits and !*+-/=_, which both of
    Header's encodings keep to."""
    phrase = " ".join(name.split())  # settings refuse control characters; runs of spaces become one
    if not phrase:
        return f"<{list_id}>"
    words = phrase.split(" ")
    if phrase.isascii() and "=?" not in phrase and all(len(w) <= _ENCODED_WORD - 10 for w in words):
        if not all(_ATOM.fullmatch(w) for w in words):
            phrase = '"' + phrase.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:  # each word at most 75 characters (the first one fits after "List-Id: "); a space between
        # two of them is not part of the text
        encoded = Header(phrase, "utf-8", maxlinelen=_ENCODED_WORD, header_name="List-Id").encode(linesep="\n")
        phrase = " ".join(encoded.split())
    return f"{phrase} <{list_id}>"


def url_quote(email: str) -> str:
    """quote(email, safe="@"), without its work for the usual address that needs no quoting."""
    return email if _URL_SAFE.fullmatch(email) else quote(email, safe="@")


def mailto_quote(email: str) -> str:
    """quote("unsubscribe " + email): the subject of the mailto: unsubscribe link."""
    if _URL_SAFE.fullmatch(email):
        return "unsubscribe%20" + email.replace("@", "%40")
    return quote("unsubscribe " + email)


class Personalizer:
    """Turns a Subscriber into a Personalization for one rendered issue and one provider.

    Called once per reader, so what does not differ between readers is prepared here once: the
    signing key, the HTML-escaped URL template, the merge fields' compiled functions."""

    def __init__(self, rendered: Rendered, settings: Settings, secret: str, *, provider: str,
                 test: bool = False, whole: int | None = None):
        self.rendered = rendered
        self.settings = settings
        self.secret = secret
        self.test = test
        # how many readers (the first ones) get a whole personalization; the others are only
        # `listed` (None: every reader). The dry run lists every reader and writes whole messages
        # for its first few: a signed link and headers for each reader were a third of its time,
        # for nothing that it shows or checks.
        self.whole = whole
        # {issue} is the same for every reader: filled in here, so only {email} and {token} remain
        self.url_template = _prefill(settings.unsubscribe_url or "", issue=quote(rendered.stem, safe=""))
        self.mailto = settings.unsubscribe_mailto
        # a provider with its own unsubscribe mechanism (SendGrid's groups) fills its tag itself
        self.provider_tag = settings.own_unsubscribe(provider)
        self._sign = token_signer(secret)
        self._values = _values_of([f.evaluate for f in rendered.fields])
        # the URL's HTML form is the escaped template filled in: the values filled in (quoted
        # address, base64url token) hold nothing html.escape changes. Only for plain {email}/{token}.
        plain = all(name in (None, "email", "token") and not spec and conv is None
                    for _, name, spec, conv in Formatter().parse(self.url_template))
        self._escaped_template = html_lib.escape(self.url_template) if plain else None
        self._mailto_link = f"<mailto:{self.mailto}?subject=" if self.mailto else ""

    def unsubscribe_url(self, email: str, key: str | None = None) -> str:
        """The reader's link; `key` is address_key(email) when the caller has it already."""
        if not self.url_template:
            return self.provider_tag or ""
        return self.url_template.format(email=url_quote(email),
                                        token=self._sign(key if key is not None else address_key(email)))

    def headers(self, url: str, email: str) -> dict[str, str]:
        https = url.startswith("https://")
        mailto = self._mailto_link + mailto_quote(email) + ">" if self._mailto_link else ""
        if https:
            # RFC 8058 one-click: the mailbox provider POSTs to the URL; no confirmation page
            return {"List-Unsubscribe": f"<{url}>, {mailto}" if mailto else f"<{url}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        return {"List-Unsubscribe": mailto} if mailto else {}

    def listed(self, sub: Subscriber) -> Personalization:
        """A reader as a dry run lists them: address, name, line, and the merge fields filled from
        their row, as for a send (a value that cannot be made fails here too). Not a message to send:
        no unsubscribe link (slot 0 is empty), no headers, no HTML-escaped values."""
        return Personalization(sub.email, sub.name, ("",) + self._values(sub.fields), (), {}, sub.line)

    def batch(self, subs: list[Subscriber]) -> list[Personalization]:
        """`[self(sub) for sub in subs]`, with the listed readers made without a call through it
        each: the send loop's call, once a batch."""
        if self.whole is None or self.whole >= len(subs):
            return [self(sub) for sub in subs]
        whole = max(self.whole, 0)
        listed = self.listed
        return [self(sub) for sub in subs[:whole]] + [listed(sub) for sub in subs[whole:]]

    def __call__(self, sub: Subscriber, to: str | None = None) -> Personalization:
        """Personalize for `sub`; `to` sends that copy elsewhere (test sends to a preview inbox)."""
        if self.whole is not None:
            if self.whole <= 0:
                return self.listed(sub)
            self.whole -= 1
        address = to or sub.email
        values = self._values(sub.fields)
        escaped = [escape(v) for v in values]
        parts = None
        if not self.url_template:  # the provider's own tag must reach it verbatim to be replaced
            url = url_html = self.provider_tag or ""
        else:
            quoted = url_quote(address)
            token = self._sign(sub.key if to is None or to == sub.email else address_key(address))
            url = self.url_template.format(email=quoted, token=token)
            if self._escaped_template is not None:
                url_html = self._escaped_template.format(email=quoted, token=token)
                parts = (quoted, token)
            else:
                url_html = escape(url)
        if self.provider_tag and url == self.provider_tag:
            url_html = url  # the provider's own tag must reach it verbatim to be replaced
            headers = {}  # and the provider adds its own List-Unsubscribe headers
            parts = None
        else:
            headers = self.headers(url, address)
        return Personalization(address, "" if to else sub.name, (url, *values), (url_html, *escaped), headers,
                               sub.line, parts)

    def envelope(self) -> Envelope:
        r, s = self.rendered, self.settings
        return Envelope(
            issue_id=r.stem,
            from_email=s.from_email,
            from_name=s.from_name or s.name,
            reply_to=s.reply_to,
            subject=("[TEST] " if self.test else "") + r.subject,
            html=r.html,
            text=r.text,
            slots=r.slots,
            categories=("newsletter", r.stem, "test") if self.test else ("newsletter", r.stem),
            test=self.test,
            unsubscribe_url=self.url_template if self._escaped_template is not None else "",
            unsubscribe_headers=self.tagged_headers(),
            list_id=list_id_header(s.name, s.list_id) if s.list_id else "",
        )

    def tagged_headers(self) -> dict[str, str]:
        """The headers of a reader whose parts are the tags (see message.TAG_LOCAL), made by the
        very code every reader's headers come from; empty when the URL is not a plain template."""
        if self._escaped_template is None or not self.url_template:
            return {}
        address = f"{TAG_LOCAL}@{TAG_DOMAIN}"
        url = self.url_template.format(email=url_quote(address), token=TAG_TOKEN)
        if self.provider_tag and url == self.provider_tag:
            return {}
        return self.headers(url, address)


Fields = Mapping[str, str]


def _values_of(evaluators: list[Callable[[Fields], str]]) -> Callable[[Fields], tuple[str, ...]]:
    """One function from a reader's fields to the merge fields' values, in slot order. Called once per
    reader: an issue has one merge field or two, and a comprehension would make a function object
    on every call."""
    if len(evaluators) == 1:
        (only,) = evaluators
        return lambda fields: (only(fields),)

    def values(fields: Fields) -> tuple[str, ...]:
        out = []
        for evaluate in evaluators:
            out.append(evaluate(fields))
        return tuple(out)

    return values


def _prefill(template: str, **known: str) -> str:
    """`template` with the placeholders in `known` filled in and every other one left as it is."""
    if not any(name in known for _, name, _, _ in Formatter().parse(template)):
        return template  # nothing to fill: the template as written
    out = []
    for literal, name, spec, conv in Formatter().parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name in known:
            out.append(format(known[name], spec or "").replace("{", "{{").replace("}", "}}"))
        elif name is not None:
            out.append("{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}")
    return "".join(out)


def sample_message(rendered: Rendered, settings: Settings) -> tuple[str, str, str]:
    """(subject, html, text) as SAMPLE_SUBSCRIBER gets them: what `render` writes, what `check`
    and the dry run measure, what the preview shows. One fill path, the one every send uses."""
    p = Personalizer(rendered, settings, SAMPLE_SECRET, provider=settings.provider)
    return p.envelope().fill(p(SAMPLE_SUBSCRIBER))


def html_size(rendered: Rendered, settings: Settings) -> int:
    """Bytes of the HTML part as a reader gets it (UTF-8, before transfer encoding), for the
    sample reader: the figure check, render and the dry run all print."""
    return len(sample_message(rendered, settings)[1].encode("utf-8"))
