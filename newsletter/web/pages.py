"""The few pages a reader sees: one small, self-contained HTML document each (no scripts, no fonts,
no images, nothing fetched from elsewhere), in the newsletter's language and brand colours."""

from __future__ import annotations

import logging
from html import escape
from pathlib import Path

from starlette.responses import HTMLResponse

from ..colors import contrast, palette
from ..config import Settings
from ..errors import NewsletterError
from ..templating import LABELS_NAME, TemplateSet

log = logging.getLogger("newsletter.web")

# nothing may load from elsewhere, no page may frame this one, forms post only here
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never pass it on
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex",
}

STYLE = """
:root{color-scheme:light dark}
*{box-sizing:border-box}
body{margin:0;padding:1rem;font:1.0625rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:%(background)s;color:%(text)s}
main{max-width:34rem;margin:12vh auto 0;padding:1.75rem 1.5rem;background:%(surface)s;border-radius:.5rem;
border-top:.25rem solid %(brand)s}
.name{margin:0 0 .5rem;font-size:.875rem;color:%(muted)s;text-transform:uppercase;letter-spacing:.04em}
h1{margin:0 0 1rem;font-size:1.5rem;line-height:1.25}
p{margin:0 0 1.25rem;overflow-wrap:anywhere}
button{font:inherit;font-weight:600;min-height:2.75rem;padding:.625rem 1.5rem;border:0;border-radius:.375rem;
background:%(brand)s;color:%(on_brand)s;cursor:pointer;width:100%%}
button:focus-visible{outline:.1875rem solid currentColor;outline-offset:.1875rem;box-shadow:0 0 0 .1875rem %(brand)s}
@media (min-width:30rem){button{width:auto}}
@media (prefers-color-scheme:dark){body{background:%(dark_background)s;color:%(dark_text)s}
main{background:%(dark_surface)s;border-top-color:%(dark_brand)s}.name{color:%(dark_muted)s}
button{background:%(dark_brand)s;color:%(dark_on_brand)s}}
"""


def _on(color: str) -> str:
    """White or near-black text on `color`, whichever contrasts more (WCAG)."""
    return "#ffffff" if contrast(color, "#ffffff") >= contrast(color, "#1f2328") else "#1f2328"


def _fill(label: str, **values: str) -> str:
    """The label as HTML with {name}/{email} filled: everything escaped, no format-string parsing
    (a project's own label with a stray brace still shows)."""
    text = escape(label)
    for key, value in values.items():
        text = text.replace("{" + key + "}", escape(value))
    return text


class Pages:
    """The pages of one newsletter. Labels are re-read when a labels.toml changes."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._labels: dict[str, str] = {}
        self._stamp: tuple[float, ...] | None = None
        colours = palette(settings.brand)  # the email's own colours, light and dark
        light, dark = colours["light"], colours["dark"]
        self.style = STYLE % {
            "background": light["background"], "surface": light["surface"], "text": light["text"],
            "muted": light["muted"], "brand": light["link"], "on_brand": _on(light["link"]),
            "dark_background": dark["background"], "dark_surface": dark["surface"], "dark_text": dark["text"],
            "dark_muted": dark["muted"], "dark_brand": dark["link"], "dark_on_brand": _on(dark["link"])}

    def labels(self) -> dict[str, str]:
        """The labels, re-read when the project's labels.toml changes. A labels.toml that cannot be
        read (a typo, a save half done) is logged and the last good labels (else the built-in ones)
        stay: a reader who unsubscribes must get a page, not an error."""
        files = [self.settings.templates_dir / LABELS_NAME]
        stamp = tuple(_mtime(f) for f in files)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._labels = TemplateSet(self.settings.templates_dir).labels(self.settings.language)
            except (NewsletterError, OSError, UnicodeDecodeError) as e:
                log.error("%s; the pages keep the %s labels until it is fixed", e,
                          "last good" if self._labels else "built-in")
                if not self._labels:
                    self._labels = TemplateSet(None).labels(self.settings.language)
        return self._labels

    def _page(self, title: str, body: str, status: int) -> HTMLResponse:
        s = self.settings
        html = (f'<!doctype html>\n<html lang="{escape(s.language)}"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                '<meta name="referrer" content="no-referrer"><meta name="robots" content="noindex">'
                f"<title>{title}</title><style>{self.style}</style></head>"
                f'<body><main><p class="name">{escape(s.name)}</p><h1>{title}</h1>{body}</main></body></html>\n')
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def confirm(self, email: str) -> HTMLResponse:
        """The page the link opens: one question, one button. The form posts to this very URL
        (no action attribute: the page's own URL, query and token included)."""
        labels, name = self.labels(), self.settings.name
        return self._page(
            _fill(labels["unsubscribe_title"], name=name),
            f'<p>{_fill(labels["unsubscribe_question"], name=name, email=email)}</p>'
            f'<form method="post"><button type="submit">{_fill(labels["unsubscribe_button"])}</button></form>',
            200)

    def done(self, email: str) -> HTMLResponse:
        labels, name = self.labels(), self.settings.name
        return self._page(_fill(labels["unsubscribed_title"], name=name),
                          f'<p>{_fill(labels["unsubscribed_done"], name=name, email=email)}</p>', 200)

    def invalid(self) -> HTMLResponse:
        """For any bad link: the same bytes whatever was wrong with it, and no address shown."""
        labels = self.labels()
        return self._page(_fill(labels["unsubscribe_invalid_title"]),
                          f'<p>{_fill(labels["unsubscribe_invalid"])}</p>', 400)

    def unavailable(self) -> HTMLResponse:
        labels = self.labels()
        response = self._page(_fill(labels["unsubscribe_title"], name=self.settings.name),
                              f'<p>{_fill(labels["unsubscribe_unavailable"])}</p>', 503)
        response.headers["Retry-After"] = "60"
        return response


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
