"""CSS inlining with premailer, set up for MJML's output; one Inliner per Renderer, no global state."""

from __future__ import annotations

import logging
from typing import Any

from .errors import NewsletterError

# MJML's head styles get this attribute so premailer keeps them verbatim (see Inliner.inline)
_IGNORE = ' data-premailer="ignore"'


class _NoNetwork:
    """premailer's HTTP session: an email is rendered from local files only."""

    def get(self, url: str, *args: object, **kwargs: object) -> object:
        raise NewsletterError(f"{url}: remote stylesheets are not fetched; put the CSS in templates/")


class Inliner:
    """Inlines a template's CSS into MJML's HTML, leaving MJML's own <style> blocks alone."""

    def __init__(self) -> None:
        # imported here, not at module level: premailer (with cssutils, lxml and requests) costs
        # ~0.2 s to import, and only rendering needs it
        from premailer import Premailer

        self._premailer: Any = Premailer
        # cssutils warns about every vendor property (mso-*, -webkit-*) MJML emits
        logging.getLogger("cssutils").setLevel(logging.CRITICAL)

    def inline(self, html: str, css: str) -> str:
        """MJML's head styles (resets, @media column widths with !important) stay a <style> block:
        inlining the resets onto every cell bloats the mail toward Gmail's clipping limit, and
        premailer's default strip_important breaks the mobile layout."""
        html = html.replace('<style type="text/css">', f'<style type="text/css"{_IGNORE}>')
        out = self._premailer(
            html,
            css_text=css,
            keep_style_tags=True,
            strip_important=False,
            remove_classes=False,
            disable_validation=True,
            allow_network=False,
            disable_leftover_css=True,
            # MJML's images never float; the check would parse each <img> style again
            align_floating_images=False,
            session=_NoNetwork(),
            cssutils_logging_level=logging.CRITICAL,
        ).transform(pretty_print=False)
        out = out.replace(_IGNORE, "")
        # premailer (lxml) drops the doctype; clients need it for standards mode
        if not out.lstrip().lower().startswith("<!doctype"):
            out = "<!doctype html>\n" + out
        return out
