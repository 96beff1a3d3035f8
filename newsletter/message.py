"""Message data every stage shares, and the one fill path.

An issue is rendered once into a `Rendered` whose subject, HTML and text carry NLMF tokens; per reader
only a `Personalization` (the slot values) is made, and `Envelope.fill` turns the two into the strings
the reader gets. render, check, preview, the dry run and every provider use this same path, so the HTML
size one command prints is the size every other command prints.

This module imports nothing from the rest of the package but merge (the token format): providers, the
send record, mime and personalize all depend on it, never the other way round.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import merge

if TYPE_CHECKING:
    from .issue import Issue

UNSUBSCRIBE_SLOT = 0  # slot 0 is always the recipient's unsubscribe URL; merge fields follow
# Stand-ins for a reader's own parts of the unsubscribe URL (the quoted address around its last @,
# and the token): letters only, like the NLMF tokens, so that nothing else is read as one
TAG_EMAIL, TAG_LOCAL, TAG_DOMAIN, TAG_TOKEN = "NLMFUE", "NLMFUL", "NLMFUD", "NLMFUT"


@dataclass
class Rendered:
    """One issue, rendered once; subject, html and text carry NLMF tokens to be filled per reader."""

    issue: Issue
    stem: str  # the issue file's name without .yaml, e.g. "2021-03": the issue's id
    subject: str
    html: str
    text: str
    mjml: str
    fields: list[merge.MergeField] = field(default_factory=list)

    @property
    def slots(self) -> int:
        return len(self.fields) + 1

    def values(self, fields: Mapping[str, Any], unsubscribe_url: str) -> tuple[list[str], list[str]]:
        """(raw values, HTML-escaped values) of every slot, for one reader's fields."""
        raw = [unsubscribe_url] + [f.evaluate(fields) for f in self.fields]
        return raw, [html_lib.escape(v) for v in raw]


@dataclass(slots=True)  # not frozen: made once per reader, and a frozen one costs 3x as much to make
class Personalization:
    """One recipient: address, slot values (raw and HTML-escaped) and per-recipient headers."""

    email: str
    name: str
    raw: tuple[str, ...]
    escaped: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)  # List-Unsubscribe, List-Unsubscribe-Post
    line: int = 0  # line in the subscriber list, for messages
    # (quoted address, token): what this reader's unsubscribe URL (slot 0) is the envelope's
    # unsubscribe_url filled with; None when slot 0 is something else (a provider's own tag)
    unsubscribe: tuple[str, str] | None = None


@dataclass(frozen=True)
class Envelope:
    """The parts every message of one send shares. subject/html/text carry NLMF tokens
    (NLMF<n>H in the HTML, filled HTML-escaped; NLMF<n>T in subject and text, filled raw)."""

    issue_id: str  # e.g. "2021-03"; SendGrid category and custom arg, SMTP X-Newsletter-Issue
    from_email: str
    from_name: str
    reply_to: str | None
    subject: str
    html: str
    text: str
    slots: int  # number of slots: values lists have this length
    categories: tuple[str, ...] = ()
    test: bool = False
    # the unsubscribe URL template ({email}, {token}) slot 0 is filled from, when it is that simple:
    # a provider can then send the URL once and only each reader's two values (see SendGrid)
    unsubscribe_url: str = ""
    # the headers a reader whose quoted address is TAG_LOCAL@TAG_DOMAIN and whose token is TAG_TOKEN
    # gets (what Personalizer.headers makes for them): the same, with tags, for every reader
    unsubscribe_headers: dict[str, str] = field(default_factory=dict, compare=False)
    # the List-Id header (RFC 2919), the same for every reader and every issue: "phrase <list-id>",
    # already ASCII (personalize.list_id_header encodes the name); "": none
    list_id: str = ""
    # the three texts split once at their tokens (~0.2 ms for 60 KB): filling is then one join
    fillers: tuple[merge.Filler, merge.Filler, merge.Filler] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fillers = (merge.Filler(self.subject), merge.Filler(self.html), merge.Filler(self.text))
        object.__setattr__(self, "fillers", fillers)  # frozen: set once, here

    def fill(self, p: Personalization) -> tuple[str, str, str]:
        """(subject, html, text) as this recipient gets them."""
        subject, html, text = self.fillers
        return subject.fill(p.raw), html.fill(p.escaped), text.fill(p.raw)


@dataclass
class BatchResult:
    """What happened to each address of a batch; every address lands in exactly one dict."""

    sent: dict[str, str] = field(default_factory=dict)  # email -> provider's answer (message id, status)
    failed: dict[str, str] = field(default_factory=dict)  # email -> permanent error: do not retry now
    retry: dict[str, str] = field(default_factory=dict)  # email -> transient error: retry later
    # email -> why its fate is unknown (handed over, no answer): stays "in flight", never retried
    unknown: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None  # seconds the provider asked us to wait
    unreachable: bool = False  # the service itself failed (down, 5xx, rate limit), not one address
