"""SendGrid v3 Mail Send: one request per batch, the content sent once with its NLMF tokens left in
and each recipient's values as SendGrid substitutions (example issue, 1000 readers: 0.76 MB)."""

from __future__ import annotations

import html as html_lib
import http.client
import json
from collections.abc import Callable
import logging
import time
from email.utils import parsedate_to_datetime
from urllib.error import URLError
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from ...errors import ConfigError
from ...merge import token
from ...message import UNSUBSCRIBE_SLOT, BatchResult, Envelope, Personalization
from ...scrub import scrub
from . import SendGridSettings

TIMEOUT = 60.0  # seconds; the client's default is none at all, which can hang a send forever
MAX_RETRY_AFTER = 900.0  # a rate-limit reset further away than this is clock skew or a bad header
MAX_CATEGORIES = 10  # SendGrid rejects more
# An explicit charset makes python_http_client send our str as-is (.encode("utf-8")) instead of
# re-serializing it with json.dumps' default ensure_ascii: \uXXXX is 6 bytes for a 2-byte letter.
CONTENT_TYPE = "application/json; charset=utf-8"

# Substitution tags of the unsubscribe URL's parts; letters only (like the NLMF tokens), so nothing in
# the content or in a URL is read as one by accident
_EMAIL_TAG, _TOKEN_TAG = "NLMFUE", "NLMFUT"

# Its DEBUG lines carry the Authorization header (our API key) and whole request bodies.
logging.getLogger("python_http_client.client").setLevel(logging.INFO)


class SendGridProvider:
    """Sends batches of up to 1000 recipients, one personalization (one `to`) each."""

    name = "sendgrid"

    def __init__(self, settings: SendGridSettings):
        if not settings.api_key:
            raise ConfigError(
                "SENDGRID_API_KEY is not set: create an API key with Mail Send permission in "
                "SendGrid (Settings > API Keys) and export it in the environment"
            )
        if not settings.api_url.startswith(("https://", "http://")):
            raise ConfigError(
                f"sendgrid.api_url = {settings.api_url!r}: use a URL like https://api.sendgrid.com"
            )
        self.max_batch = min(settings.batch_size, 1000)
        self.api_url = settings.api_url.rstrip("/")  # "host/" would POST to //v3/mail/send
        self._key = settings.api_key
        self._asm_group_id = settings.asm_group_id
        self._client = SendGridAPIClient(settings.api_key, host=self.api_url).client
        self._client.request_headers["Content-Type"] = CONTENT_TYPE

    def __repr__(self) -> str:  # never show the key
        return f"SendGridProvider(api_url={self.api_url!r}, max_batch={self.max_batch})"

    def send(self, envelope: Envelope, batch: list[Personalization]) -> BatchResult:
        result = BatchResult()
        unique: list[Personalization] = []
        seen: dict[str, str] = {}
        for p in batch:
            # SendGrid refuses a request naming an address twice (compared case-insensitively);
            # an exact repeat is the same result key, so it simply shares the first one's outcome
            key = p.email.casefold()
            if key not in seen:
                seen[key] = p.email
                unique.append(p)
            elif seen[key] != p.email:
                result.failed[p.email] = f"same address as {seen[key]} in this batch; not sent"
        if not unique:  # the real API rejects an empty personalizations list
            return result
        self._post(envelope, unique, result)
        return result

    def _post(self, envelope: Envelope, batch: list[Personalization], result: BatchResult) -> None:
        """One request for `batch`; on 413 (too large: nothing was sent) the two halves in turn."""
        emails = [p.email for p in batch]
        body = json.dumps(self.body(envelope, batch), ensure_ascii=False, separators=(",", ":"))
        try:
            response = self._client.mail.send.post(request_body=body, timeout=TIMEOUT)
        except HTTPError as e:  # python_http_client raises for every status >= 400
            if e.status_code == 413 and len(batch) > 1:
                half = len(batch) // 2
                for part in (batch[:half], batch[half:]):
                    if result.unreachable:  # rate limited or down: the rest waits, unasked
                        reason = next(iter(result.retry.values()))
                        result.retry.update(dict.fromkeys((p.email for p in part), reason))
                    else:
                        self._post(envelope, part, result)
                return
            self._refused(result, emails, e.status_code, e.body, e.headers)
        except URLError as e:
            # urllib wraps failures while connecting and writing the request: SendGrid never got a
            # whole request, so nothing was sent and a retry is safe
            message = self._scrub(f"SendGrid unreachable: {e.reason}")
            result.retry.update(dict.fromkeys(emails, message))
            result.unreachable = True
        except (OSError, http.client.HTTPException) as e:
            # a timeout or hang-up while waiting for the answer: SendGrid may have accepted the
            # batch. Retrying could email everyone twice, so its fate is recorded as unknown.
            message = self._scrub(f"no answer from SendGrid after the request was sent: {e or type(e).__name__}")
            result.unknown.update(dict.fromkeys(emails, message))
        else:
            answer = response.headers.get("X-Message-Id") or "accepted"
            result.sent.update(dict.fromkeys(emails, answer))

    def body(self, envelope: Envelope, batch: list[Personalization]) -> dict[str, Any]:
        """The /v3/mail/send request for one batch, as a plain dict (the helpers are ~4x slower).

        Only what differs per reader goes into each personalization: the shared parts are sent once
        with substitution tags in them (see `_content`)."""
        subject, html_part, text, tags = self._content(envelope, batch)
        custom_args = {"issue": envelope.issue_id}
        personalizations = []
        for p in batch:
            to = {"email": p.email, "name": p.name} if p.name else {"email": p.email}
            item: dict[str, Any] = {"to": [to]}
            if tags:
                item["substitutions"] = {tag: value(p) for tag, value in tags}
            if p.headers:
                # SendGrid substitutes in subject, reply-to and content, not in headers (its spec):
                # each reader's List-Unsubscribe travels whole
                item["headers"] = p.headers
            # the spec types top-level custom_args as a string; per personalization it is an object
            item["custom_args"] = custom_args
            personalizations.append(item)
        sender = {"email": envelope.from_email}
        if envelope.from_name:
            sender["name"] = envelope.from_name
        # text/plain must come before text/html: SendGrid rejects the other order
        content = [{"type": t, "value": v} for t, v in (("text/plain", text), ("text/html", html_part)) if v]
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": sender,
            "subject": subject,
            "content": content,
        }
        if envelope.reply_to:
            body["reply_to"] = {"email": envelope.reply_to}
        categories = list(dict.fromkeys(envelope.categories))[:MAX_CATEGORIES]  # must be unique
        if categories:
            body["categories"] = categories
        if self._asm_group_id is not None:
            body["asm"] = {"group_id": self._asm_group_id}
        return body

    def close(self) -> None:
        """Nothing to release: python_http_client opens a new connection per request."""

    def _content(self, envelope: Envelope, batch: list[Personalization]
                 ) -> tuple[str, str, str, list[tuple[str, Callable[[Personalization], str]]]]:
        """(subject, html, text) for one request, with the tags its personalizations fill, and the
        (tag, value of a reader) pairs. Per reader only what differs is sent:

        - the unsubscribe URL (slot 0) is written into the content once, from the envelope's template,
          with two tags for the reader's quoted address and token (instead of the whole URL, twice);
        - a merge field whose HTML-escaped value equals its raw value for every reader of the batch
          (a name without & < > " ') takes one tag in both parts instead of two.
        SendGrid expanding these tags gives each reader exactly Envelope.fill's strings (tested)."""
        fillers = envelope.fillers
        used_html, used_text = set(fillers[1].slots), set(fillers[0].slots) | set(fillers[2].slots)
        # the URL by its parts, unless a value could be read as one of our tags by SendGrid
        url_parts = (bool(envelope.unsubscribe_url) and "NLMF" not in envelope.unsubscribe_url
                     and (UNSUBSCRIBE_SLOT in used_html or UNSUBSCRIBE_SLOT in used_text)
                     and all(p.unsubscribe is not None and "NLMF" not in p.unsubscribe[0]
                             and "NLMF" not in p.unsubscribe[1] for p in batch))
        html_values, text_values = [], []
        tags: list[tuple[str, Callable[[Personalization], str]]] = []
        for slot in range(envelope.slots):
            raw_tag, html_tag = token(slot, False), token(slot, True)
            if slot == UNSUBSCRIBE_SLOT and url_parts:
                tagged = envelope.unsubscribe_url.format(email=_EMAIL_TAG, token=_TOKEN_TAG)
                html_values.append(html_lib.escape(envelope.unsubscribe_url).format(email=_EMAIL_TAG, token=_TOKEN_TAG))
                text_values.append(tagged)
                tags += [(_EMAIL_TAG, _quoted_email), (_TOKEN_TAG, _token)]
                continue
            same = slot in used_html and all(p.escaped[slot] == p.raw[slot] for p in batch)
            html_values.append(raw_tag if same else html_tag)
            text_values.append(raw_tag)
            if slot in used_text or same:
                tags.append((raw_tag, _raw(slot)))
            if slot in used_html and not same:
                tags.append((html_tag, _escaped(slot)))
        subject, html_part, text = (fillers[0].fill(text_values), fillers[1].fill(html_values),
                                    fillers[2].fill(text_values))
        return subject, html_part, text, tags

    def _refused(self, result: BatchResult, emails: list[str], status: int, body: bytes,
                 headers: Any) -> None:
        """Sort a >= 400 answer: 408/429/5xx are worth retrying, other 4xx will fail again."""
        phrase = http.client.responses.get(status, "error")
        detail = _errors(body)
        message = f"{status} {phrase}: {detail}" if detail else f"{status} {phrase}"
        if status in (401, 403):
            message += "; check SENDGRID_API_KEY (a valid key with Mail Send permission)"
        elif status == 413:  # only a single reader gets here: larger batches are split first
            message += ("; SendGrid refused the message as too large even for one reader (at most "
                        "30 MB a request): make the issue smaller")
        message = self._scrub(f"SendGrid: {message}")
        if status in (408, 429) or status >= 500:
            result.retry.update(dict.fromkeys(emails, message))
            result.retry_after = _retry_after(headers)
            result.unreachable = True
        else:
            result.failed.update(dict.fromkeys(emails, message))

    def _scrub(self, text: str) -> str:
        """Belt and braces: no message we produce may contain the API key."""
        return scrub(text, (self._key,), "[SENDGRID_API_KEY]")


def _errors(body: bytes | None) -> str:
    """SendGrid's own error messages from {"errors": [{"message", "field"}]}, else the raw text."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace")
    try:
        errors = json.loads(text)["errors"]
        parts = []
        for err in errors:
            part = str(err.get("message") or "").strip() or "error"
            field = err.get("field")
            if field and field != "null":  # the spec's examples say "null" as a string
                part += f" (field: {field})"
            parts.append(part)
        return "; ".join(parts)
    except (ValueError, KeyError, TypeError, AttributeError):
        return " ".join(text.split())[:300]


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait: Retry-After (seconds or HTTP date), else X-RateLimit-Reset (epoch)."""
    retry_after = headers.get("Retry-After") if headers is not None else None
    reset = headers.get("X-RateLimit-Reset") if headers is not None else None
    try:
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                wait = parsedate_to_datetime(retry_after).timestamp() - time.time()
        elif reset:
            wait = float(reset) - time.time()
        else:
            return None
    except (ValueError, TypeError, OverflowError):
        return None
    return min(max(wait, 0.0), MAX_RETRY_AFTER) if wait == wait else None  # NaN fails ==


def _quoted_email(p: Personalization) -> str:
    return p.unsubscribe[0]  # type: ignore[index]  # set whenever this tag is used


def _token(p: Personalization) -> str:
    return p.unsubscribe[1]  # type: ignore[index]


def _raw(slot: int) -> Callable[[Personalization], str]:
    return lambda p: p.raw[slot]


def _escaped(slot: int) -> Callable[[Personalization], str]:
    return lambda p: p.escaped[slot]
