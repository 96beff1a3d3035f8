"""SendGrid's Event Webhook: signed batches of events about the mail we sent.

Each event is kept once (de-duplicated on `sg_event_id`: SendGrid delivers again whatever it is not
sure arrived). Bounces, complaints and unsubscribes become suppressions, so the next send skips
those readers; delivered, open and click are counted per issue. A delivery is written in one
transaction before it is answered 2xx: an acknowledged event is never lost, and a failed write is
a 5xx that SendGrid retries.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ConfigError
from .body import read_body
from .logline import printable
from .store import StoreThreads, one_transaction

log = logging.getLogger("newsletter.web")

PATH = "/webhooks/sendgrid"
LIMIT = 5 * 1024 * 1024
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
PROVIDER = "sendgrid"
# event -> suppression reason
SUPPRESS = {"bounce": "bounced", "spamreport": "complained", "unsubscribe": "unsubscribed",
            "group_unsubscribe": "unsubscribed"}
# words in a `dropped` event's reason -> suppression reason: SendGrid dropped the mail because the
# address is on one of its own lists ("Bounced Address", "Spam Reporting Address", ...)
DROPPED = (("bounce", "bounced"), ("spam", "complained"), ("unsubscribe", "unsubscribed"))
_PEM = re.compile(r"-----(BEGIN|END) PUBLIC KEY-----|\s+")
# what JSON can carry and a store cannot keep: NUL (PostgreSQL refuses it) and lone surrogates
# ("\ud800": not UTF-8, so neither store takes them)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    email: str
    issue: str | None
    occurred_at: str | None
    suppress: str | None = None  # a suppression reason, if this event makes one
    detail: str | None = None


def parse_event(item: Any) -> Event:
    """One event of a delivery; ValueError says what is wrong with a malformed one."""
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - a malformed event, reported as such
    event_id, kind, email = item.get("sg_event_id"), item.get("event"), item.get("email")
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 200):
        raise ValueError("no sg_event_id")
    if not (isinstance(kind, str) and 0 < len(kind) <= 50):
        raise ValueError("no event type")
    if not (isinstance(email, str) and "@" in email and len(email) <= 320):
        raise ValueError("no email address")
    if any(_UNSTORABLE.search(value) for value in (event_id, kind, email)):
        raise ValueError("NUL or a lone surrogate in sg_event_id, event or email")
    stamp = item.get("timestamp")
    occurred = None
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and 0 <= stamp < 1e11:
        occurred = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
    categories = item.get("category")
    categories = [categories] if isinstance(categories, str) else categories if isinstance(categories, list) else []
    categories = [_UNSTORABLE.sub("\ufffd", c) for c in categories if isinstance(c, str)]
    issue = item.get("issue")  # our custom arg; SendGrid puts custom args at the top of the event
    if "test" in categories:
        issue = None  # a [TEST] copy to the preview inbox is not the issue's audience
    elif isinstance(issue, str) and issue:
        issue = _UNSTORABLE.sub("\ufffd", issue)
    else:
        issue = next((c for c in categories if c != "newsletter"), None)
    reason = _UNSTORABLE.sub("\ufffd", str(item.get("reason") or item.get("response") or "")[:500]) or None
    suppress = SUPPRESS.get(kind)
    if kind == "bounce" and item.get("type") == "blocked":
        suppress = None  # a block is the receiving server refusing for now, not a dead address
    elif kind == "dropped" and reason:
        suppress = next((r for word, r in DROPPED if word in reason.lower()), None)
    return Event(event_id, kind, email, issue[:200] if issue else None, occurred, suppress,
                 f"sendgrid {kind}: {reason}" if suppress and reason else f"sendgrid {kind}" if suppress else None)


class SendGridWebhook:
    """POST /webhooks/sendgrid. With a verification key, only requests SendGrid signed are taken."""

    def __init__(self, public_key: str | None, store: StoreThreads):
        self.store = store
        self.verifier = None
        if public_key:
            from sendgrid.helpers.eventwebhook import EventWebhook

            try:  # SendGrid shows the key as base64 DER; a pasted PEM block works too
                self.verifier = EventWebhook(_PEM.sub("", public_key))
            except Exception:  # noqa: BLE001 - whatever cryptography makes of a wrong key
                raise ConfigError("NEWSLETTER_SENDGRID_WEBHOOK_KEY: not a public key; copy the "
                                  "verification key from SendGrid (Settings > Mail Settings > Event "
                                  "Webhook > Signature Verification)") from None

    def refusal(self, request: Request, body: bytes) -> tuple[int, str] | None:
        """None if the request may be taken; else (status, why)."""
        if self.verifier is None:
            return None
        signature, timestamp = request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP)
        if not signature or not timestamp:
            return 401, "unsigned request"
        try:
            # the signature is over the timestamp followed by the raw body, as SendGrid sent it
            ok = self.verifier.verify_signature(body.decode("utf-8"), signature, timestamp)
        except Exception:  # noqa: BLE001 - bad base64, bad DER, not UTF-8: not SendGrid's signature
            ok = False
        return None if ok else (403, "bad signature")

    async def handle(self, request: Request) -> Response:
        body = await read_body(request, LIMIT)
        refused = self.refusal(request, body)
        if refused is not None:
            log.warning("SendGrid webhook: %d refused (%s)", *refused)
            return JSONResponse({"error": refused[1]}, refused[0])
        try:
            items = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
            return JSONResponse({"error": "not JSON"}, 400)
        if not isinstance(items, list):
            return JSONResponse({"error": "not a JSON array of events"}, 400)
        events, skipped = [], 0
        for i, item in enumerate(items):
            try:
                events.append(parse_event(item))
            except ValueError as e:
                skipped += 1
                event_id = item.get("sg_event_id") if isinstance(item, dict) else None
                log.warning("SendGrid webhook: event %d of %d skipped (%s)%s", i + 1, len(items), e,
                            f": sg_event_id {printable(str(event_id), 200)}" if event_id else "")
        try:
            kept, suppressed = await self.store.run(lambda store: keep(store, events))
        except Exception as e:  # noqa: BLE001 - a 5xx: SendGrid delivers the batch again later
            log.error("SendGrid webhook: %d events not stored, SendGrid will retry: %s: %s",
                      len(events), type(e).__name__, e)
            return JSONResponse({"error": "not stored; retry"}, 503)
        log.info("SendGrid webhook: %d events, %d new, %d repeats, %d skipped, %d suppressions",
                 len(items), kept, len(events) - kept, skipped, suppressed)
        return JSONResponse({"received": len(items), "new": kept, "repeats": len(events) - kept,
                             "skipped": skipped})


def keep(store: Any, events: list[Event]) -> tuple[int, int]:
    """Write a delivery's events in one transaction: (new events, new suppressions)."""
    kept = suppressed = 0
    with one_transaction(store) as (suppressions, log_of_events):
        for e in events:
            if not log_of_events.add(e.id, PROVIDER, e.kind, e.email, e.issue, e.occurred_at):
                continue  # delivered before: already counted, already acted on
            kept += 1
            if e.suppress:
                suppressed += suppressions.add(e.email, e.suppress, "webhook", issue=e.issue, detail=e.detail,
                                               at=e.occurred_at)
    return kept, suppressed
