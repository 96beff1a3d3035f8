"""Pre-send checks: things that are valid YAML but would hurt readers or deliverability."""

from __future__ import annotations

import re
from pathlib import Path

from .colors import AA, WHITE, contrast, palette
from .config import Settings
from .errors import Problem
from .issue import Issue
from .issuetext import MARKDOWN_FIELDS, markdown_findings
from .message import Rendered
from .personalize import html_size

# Gmail clips messages whose HTML is above ~102 KB, hiding the footer and the unsubscribe link.
SIZE_ERROR = 102_000
SIZE_WARNING = 90_000
SUBJECT_MAX = 78  # RFC 5322's line length; longer subjects are cut in most inbox lists
PREHEADER_MAX = 110  # inbox previews show roughly 40–110 characters
# `{ subscriber.name }`: a merge field with one brace each side, which nothing fills
_SINGLE_BRACES = re.compile(r"(?<!\{)\{\s*(subscriber\s*(?:\.\s*\w+|\[[^\]{}]{1,60}\])[^{}]{0,60}?)\s*\}(?!\})")


def check_issue(issue: Issue, path: Path, settings: Settings, rendered: Rendered) -> list[Problem]:
    """Every finding for an issue that validated, errors and warnings, in file order."""
    found: list[Problem] = []

    def add(loc: tuple[str | int, ...], message: str, severity: str = "warning", line: int | None = None) -> None:
        field = ".".join(str(p) for p in loc)
        found.append(Problem(path, issue.line_of(*loc, text_line=line) if loc else 1, field, message, severity))

    size = html_size(rendered, settings)
    if size >= SIZE_ERROR:
        add((), f"HTML is {size:,} bytes; Gmail clips above ~102 KB and hides the footer and "
            "unsubscribe link: shorten the issue or split it", "error")
    elif size >= SIZE_WARNING:
        add((), f"HTML is {size:,} bytes, close to Gmail's ~102 KB clipping limit")
    if len(issue.subject) > SUBJECT_MAX:
        add(("subject",), f"subject is {len(issue.subject)} characters; inboxes cut it after about "
            f"{SUBJECT_MAX}: put the point first or shorten it")
    if not issue.preheader:
        add(("subject",), "no preheader: inboxes will preview the first text of the email instead; "
            "add `preheader:` (40–110 characters)")
    elif len(issue.preheader) > PREHEADER_MAX:
        add(("preheader",), f"preheader is {len(issue.preheader)} characters; inboxes show about "
            f"{PREHEADER_MAX}")
    # the same findings parse_issue reports when a file is invalid (it reports them all at once)
    for loc, text in issue.texts():
        if loc[-1] in MARKDOWN_FIELDS:
            for f in markdown_findings(text):
                add(loc, f.message, f.severity, f.line)
        for m in _SINGLE_BRACES.finditer(text):
            field = " ".join(m.group(1).split())
            add(loc, f"{{ {field} }} has single braces and reaches every reader as written; a merge field is "
                f"{{{{ {field} }}}}", line=text.count("\n", 0, m.start()))
    cfg = settings.path or "newsletter.toml"
    if settings.brand.logo and not settings.brand.logo.startswith("https://"):
        found.append(Problem(cfg, settings.line_of("logo"), "brand.logo",
                             "logo is not https: many mail clients block it"))
    brand, dark = settings.brand, palette(settings.brand)["dark"]
    for key, color, grounds in (("color", brand.color, (WHITE, brand.background)),
                                ("dark_color", brand.dark_color, (dark["background"], dark["surface"]))):
        worst = min(contrast(color, g) for g in grounds) if color else AA
        if worst < AA:
            found.append(Problem(cfg, settings.line_of(key), f"brand.{key}", f"{color} reaches {worst:.1f}:1 "
                                 f"on {' and '.join(grounds)}; links need 4.5:1 (WCAG AA) to be read: pick "
                                 f"a {'darker' if key == 'color' else 'lighter'} shade", "warning"))
    if not settings.postal_address:
        found.append(Problem(cfg, settings.line_of("postal_address"), "postal_address", "no postal address: bulk mail must carry "
                             "the sender's postal address (CAN-SPAM); set postal_address", "error"))
    if not settings.unsubscribe_url and not settings.own_unsubscribe(settings.provider):
        found.append(Problem(cfg, settings.line_of("unsubscribe_url"), "unsubscribe_url", "no unsubscribe URL: set unsubscribe_url "
                             "(with {email} and {token}) or [sendgrid] asm_group_id", "error"))
    return found
