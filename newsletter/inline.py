"""CSS inlining with premailer, set up for MJML's output; one Inliner per Renderer, no global state."""

from __future__ import annotations

import builtins
import functools
import importlib.util
import logging
import types
from pathlib import Path
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
        self._premailer: Any = _cached_rules(_private_premailer())
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


_RULE_CACHE_SIZE = 32  # style blocks: MJML's few and the template's CSS, a handful per template


def _cached_rules(premailer: type) -> type:
    """premailer with its parsed style rules kept per (CSS text, position), for this Inliner only.

    Parsing and re-serialising the style sheets with cssutils is half of each inlining (~6 ms of the
    preview's re-render), yet the CSS rarely changes between two renders. A rule is plain text
    ((specificity, selector, declarations)), so a kept one is exactly what a fresh parse gives."""
    cache: dict[tuple[str, int], tuple[list[Any], list[Any]]] = {}

    class CachedPremailer(premailer):  # type: ignore[misc, valid-type]
        def _parse_style_rules(self, css_body: str, ruleset_index: int) -> tuple[list[Any], list[Any]]:
            key = (css_body, ruleset_index)
            if key not in cache:
                if len(cache) >= _RULE_CACHE_SIZE:
                    cache.clear()
                cache[key] = super()._parse_style_rules(css_body, ruleset_index)
            rules, leftover = cache[key]
            return list(rules), list(leftover)  # premailer extends its own lists with these

    return CachedPremailer


@functools.cache  # a pure function: the same private copy serves every Inliner of the process
def _private_premailer() -> type:
    """premailer's Premailer class, from a private copy of premailer's three modules.

    premailer imports `requests` at its top (~0.1 s and ~6 MB with urllib3, chardet, certifi) only to
    fetch remote stylesheets, which we never allow (allow_network=False and _NoNetwork), and its style
    merge validates every inline declaration with cssutils (~60 ms of regex compilation a process) only
    to log warnings we silence. In this copy `requests` is a stub and the merge does not validate. The
    copy is not in sys.modules: the real premailer, `requests` and cssutils stay as they are for any
    other code in the process."""
    spec = importlib.util.find_spec("premailer")
    if spec is None or spec.origin is None:
        raise NewsletterError("premailer is not installed: pip install premailer")
    folder = Path(spec.origin).parent
    stub = types.ModuleType("requests", "never called: newsletter does not let premailer fetch")
    private: dict[str, types.ModuleType] = {}

    def load(name: str) -> types.ModuleType:
        if name not in private:
            path = folder / f"{name.split('.', 1)[1]}.py"
            module = types.ModuleType(name)
            module.__file__ = str(path)
            module.__dict__["__builtins__"] = {**builtins.__dict__, "__import__": private_import}
            private[name] = module
            exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
        return private[name]

    def private_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (),
                       level: int = 0) -> Any:
        if name == "requests":
            return stub
        if name.startswith("premailer.") and level == 0:  # premailer's own absolute imports
            return load(name)
        return builtins.__import__(name, globals, locals, fromlist, level)

    merge_style = load("premailer.merge_style")
    validating = merge_style.csstext_to_pairs

    def csstext_to_pairs(csstext: str, validate: bool = False) -> Any:
        return validating(csstext, validate)

    # merge_styles() calls csstext_to_pairs(style) with validation on; in this copy only, it is off
    csstext_to_pairs._lock = validating._lock  # type: ignore[attr-defined]  # the function body uses it
    merge_style.__dict__["csstext_to_pairs"] = csstext_to_pairs
    premailer: Any = load("premailer.premailer")
    return premailer.Premailer  # type: ignore[no-any-return]
