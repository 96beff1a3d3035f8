"""Real-browser checks of the rendered email: what a reader would notice in Debian's Chromium, in
the light and the dark scheme, from a small phone to a desktop.

No network: every remote request is intercepted; images get a locally generated wide PNG, the rest
is aborted. One browser for the module (starting Chromium is the slow part). Screenshots of both
schemes at 375 and 600 px go to out/screenshots/ for a person to look at.
Run: .venv/bin/python -m pytest tests/test_browser.py -q
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from newsletter.colors import AA, AA_LARGE, contrast, hex_color
from newsletter.config import Settings, load_settings
from newsletter.pipeline import prepare, write_rendered
from test_render import RICH_ISSUE

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "out" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
# (width, is_mobile, device_scale_factor): small and common phones, the 600 px design width, a desktop
VIEWPORTS = {"320": (320, True, 2), "375": (375, True, 2), "600": (600, False, 1), "1024": (1024, False, 1)}
SCHEMES = ["light", "dark"]
IMAGE_SIZE = (1600, 900)  # wider than the 600 px email on purpose: the template must scale it down

pytestmark = [
    pytest.mark.browser,
    # CI fails separately when browser tests were skipped; locally a missing browser is not an error
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from playwright.sync_api import Browser, Page, Route, expect  # noqa: E402


def wide_png(width: int, height: int) -> bytes:
    """A striped RGB PNG made with zlib+struct only (no Pillow in the test dependencies)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"".join(b"\x0b\x6b\xcb" if (x // 100) % 2 else b"\xf4\xf5\xf7" for x in range(width))
    raw = b"".join(b"\x00" + row for _ in range(height))  # filter byte 0 before every scanline
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


@cache
def image_bytes() -> bytes:
    return wide_png(*IMAGE_SIZE)


def route_offline(route: Route) -> None:
    """Serve images locally, abort everything else that would leave the machine."""
    request = route.request
    if request.url.startswith(("http://", "https://")) and request.resource_type == "image":
        route.fulfill(status=200, content_type="image/png", body=image_bytes())
    elif request.url.startswith(("http://", "https://")):
        route.abort()
    else:
        route.continue_()  # data:, about:blank


def route_images_blocked(route: Route) -> None:
    """As Outlook and many Gmail readers have it by default: no remote image loads."""
    route.abort() if route.request.url.startswith(("http://", "https://")) else route.continue_()


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(ROOT / "newsletter.toml", env={})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


class Email:
    def __init__(self, name: str, html: str, subject: str, preheader: str, language: str):
        self.name, self.html, self.subject, self.preheader, self.language = name, html, subject, preheader, language


@pytest.fixture(scope="module", params=["2021-03", "rich"])
def email(request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Email:
    """The real March issue (Russian, 13 sections) or an English one with emoji, CJK, a long URL,
    a long word, tables, lists and script tags in every field."""
    out = tmp_path_factory.mktemp(request.param)
    if request.param == "rich":
        source = out / "rich.yaml"
        source.write_text(RICH_ISSUE, encoding="utf-8")
    else:
        source = ROOT / "issues" / f"{request.param}.yaml"
    prepared = prepare(source, settings)
    html_path = next(p for p in write_rendered(prepared, settings, out) if p.suffix == ".html")
    issue = prepared.issue
    return Email(request.param, html_path.read_text(encoding="utf-8"), issue.subject, issue.preheader or "",
                 issue.language)


def open_email(browser: Browser, html: str, viewport: str, scheme: str = "light",
               route: Any = route_offline) -> Page:
    width, mobile, scale = VIEWPORTS[viewport]
    context = browser.new_context(viewport={"width": width, "height": 800}, is_mobile=mobile,
                                  has_touch=mobile, device_scale_factor=scale, color_scheme=scheme)
    page = context.new_page()
    page.route("**/*", route)
    page.set_content(html, wait_until="load")  # "load" waits for the (routed) images too
    return page


# Every visible piece of text with its colour, size and the background it is drawn on: the first
# ancestor (itself included) whose background is not transparent.
TEXT_COLOURS = """() => {
  const out = [], walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const background = el => {
    for (; el; el = el.parentElement) {
      const bg = getComputedStyle(el).backgroundColor;
      if (!/rgba\\(.*, 0\\)$/.test(bg) && bg !== 'transparent') return bg;
    }
    return getComputedStyle(document.documentElement).backgroundColor;
  };
  for (let node; (node = walker.nextNode());) {
    const el = node.parentElement, text = node.textContent.replace(/[\\s\\u034f\\u200c]+/g, ' ').trim();
    if (!text || !el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    const box = el.getBoundingClientRect();
    if (box.width < 1 || box.height < 1) continue;
    const style = getComputedStyle(el);
    out.push({text: text.slice(0, 40), tag: el.tagName, color: style.color, background: background(el),
              size: parseFloat(style.fontSize), weight: parseInt(style.fontWeight)});
  }
  return out;
}"""


def parse_rgb(css: str) -> str:
    r, g, b = (float(x) for x in re.findall(r"[\d.]+", css)[:3])
    return hex_color(r, g, b)


def contrast_findings(page: Page) -> list[dict[str, Any]]:
    """Every visible text with its contrast ratio and the ratio WCAG AA asks of it."""
    found = page.evaluate(TEXT_COLOURS)
    for t in found:
        t["ratio"] = contrast(parse_rgb(t["color"]), parse_rgb(t["background"]))
        large = t["size"] >= 24 or (t["size"] >= 18.66 and t["weight"] >= 700)
        t["needed"] = AA_LARGE if large else AA
    return found


LOWEST: dict[str, tuple[float, str]] = {}  # scheme -> the lowest contrast seen and its text


@pytest.fixture(scope="module", autouse=True)
def contrast_report() -> Iterator[None]:
    """After the module: the lowest contrast seen per scheme, printed (-s) and written beside the
    screenshots."""
    yield
    if LOWEST:
        report = "".join(f"{s}: {r:.2f}:1, {where}\n" for s, (r, where) in sorted(LOWEST.items()))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / "contrast.txt").write_text(report, encoding="utf-8")
        print("\nlowest text contrast\n" + report)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_layout_and_contrast(browser: Browser, email: Email, viewport: str, scheme: str) -> None:
    width = VIEWPORTS[viewport][0]
    page = open_email(browser, email.html, viewport, scheme)
    try:
        if viewport in ("375", "600"):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / f"{email.name}-{scheme}-{width}.png", full_page=True)
        # On a mobile viewport Chromium zooms out overflowing pages, which grows innerWidth: compare
        # with the configured width too, or an overflow would hide itself.
        scroll_width, inner_width = page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth]")
        assert inner_width == width, f"page zoomed out to {inner_width}px: content overflows"
        assert scroll_width <= width, f"horizontal scroll at {width}px: scrollWidth={scroll_width}"
        images = page.evaluate("""() => [...document.images].map(img => {
            const box = img.getBoundingClientRect(), parent = img.parentElement.getBoundingClientRect();
            return {src: img.src, natural: img.naturalWidth, right: box.right, width: box.width,
                    container: parent.width};
        })""")
        assert images, "both issues have images"
        for img in images:
            assert img["natural"] == IMAGE_SIZE[0], f"{img['src']} did not load: {img}"
            assert img["right"] <= width + 0.5, f"{img['src']} sticks out of the {width}px viewport: {img}"
            assert img["width"] <= img["container"] + 0.5, f"{img['src']} wider than its container: {img}"
        assert page.evaluate("window.__pwned") is None, "text from the issue ran as a script"

        texts = contrast_findings(page)
        assert len(texts) > 20
        failing = [t for t in texts if t["ratio"] < t["needed"]]
        assert not failing, f"below WCAG AA in the {scheme} scheme: {failing[:5]}"
        lowest = min(texts, key=lambda t: t["ratio"])
        where = f"{lowest['text']!r} in {email.name} at {width}px"
        LOWEST[scheme] = min(LOWEST.get(scheme, (21.0, "")), (lowest["ratio"], where))
        # the scheme really applies, to every text: on a dark background in the dark scheme, on a
        # light one in the light scheme
        assert any(t["tag"] == "H1" for t in texts)
        wrong = [t for t in texts if (contrast(parse_rgb(t["background"]), "#000000") < 2) != (scheme == "dark")]
        assert not wrong, f"the {scheme} scheme leaves these as they were: {wrong[:3]}"
        body_bg = parse_rgb(page.evaluate("getComputedStyle(document.body).backgroundColor"))
        assert (contrast(body_bg, "#000000") < 2) == (scheme == "dark"), body_bg
    finally:
        page.context.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_phone_readability_and_tap_targets(browser: Browser, email: Email, scheme: str) -> None:
    page = open_email(browser, email.html, "375", scheme)
    try:
        sizes = page.eval_on_selector_all(
            ".nl-prose p, .nl-prose li, .nl-links > div", "ps => ps.map(p => parseFloat(getComputedStyle(p).fontSize))")
        assert sizes, "no body text found in .nl-prose"
        assert min(sizes) >= 16, f"body text too small on a phone: {min(sizes)}px"
        for heading in page.locator("h1, h2").all():
            expect(heading).to_be_visible()
            box = heading.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375 + 0.5, (
                f"heading {heading.inner_text()[:40]!r} is cut off: {box}")
        # the links line: each link a tap target of at least 24 x 24 px (WCAG 2.5.8)
        targets = page.eval_on_selector_all(".nl-links a", """as => as.map(a => {
            const b = a.getBoundingClientRect(); return {text: a.textContent, width: b.width, height: b.height};
        })""")
        assert targets
        small = [t for t in targets if t["height"] < 24 or t["width"] < 24]
        assert not small, f"tap targets under 24 px: {small[:3]}"
        # The title is the visible h1; the preheader only feeds the inbox preview line
        assert page.title() == email.subject
        if email.preheader:
            hidden = page.get_by_text(email.preheader)
            expect(hidden).to_have_count(1)
            expect(hidden).to_be_hidden()
        # The unsubscribe link is in the footer, i.e. after the last section, and can be seen
        unsubscribe = page.locator('a[href^="https://example.org/unsubscribe?"]')
        expect(unsubscribe).to_have_count(1)
        expect(unsubscribe).to_have_text("Отписаться" if email.language == "ru" else "Unsubscribe")
        unsubscribe.scroll_into_view_if_needed()
        expect(unsubscribe).to_be_visible()
        is_last = page.evaluate("""() => {
            const link = document.querySelector('a[href^="https://example.org/unsubscribe?"]');
            const prose = [...document.querySelectorAll('.nl-prose')].pop();
            return !!(prose.compareDocumentPosition(link) & Node.DOCUMENT_POSITION_FOLLOWING);
        }""")
        assert is_last, "the unsubscribe link is not in the footer"
    finally:
        page.context.close()


def test_what_a_screen_reader_meets(browser: Browser, email: Email) -> None:
    page = open_email(browser, email.html, "375")
    try:
        assert page.evaluate("document.documentElement.lang") == email.language
        expect(page.get_by_role("heading", level=1)).to_have_count(1)
        sections = page.locator(".nl-rule").count()  # one rule above each section (and the outro)
        assert page.get_by_role("heading", level=2).count() >= sections - 1
        levels = [int(h.evaluate("h => h.tagName[1]")) for h in page.locator("h1, h2, h3, h4, h5, h6").all()]
        assert levels[0] == 1 and all(b <= a + 2 for a, b in zip(levels, levels[1:])), levels
        # every image has a text alternative; layout tables are not tables to a screen reader
        for img in page.locator("img").all():
            assert (img.get_attribute("alt") or "").strip(), img.evaluate("i => i.outerHTML")
        assert page.get_by_role("table").count() == page.locator(".nl-prose table").count()
        for link in page.get_by_role("link").all():
            name = link.inner_text().strip().lower()
            assert name and name not in {"here", "click here", "link", "this", "more", "здесь", "тут"}, name
    finally:
        page.context.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_alt_text_with_images_blocked(browser: Browser, email: Email, scheme: str) -> None:
    page = open_email(browser, email.html, "375", scheme, route=route_images_blocked)
    try:
        alts = page.eval_on_selector_all(".nl-image img", """imgs => imgs.map(img => {
            const s = getComputedStyle(img), box = img.getBoundingClientRect();
            let bg = 'rgba(0, 0, 0, 0)';
            for (let el = img; el && /rgba\\(.*, 0\\)$/.test(bg); el = el.parentElement) bg = getComputedStyle(el).backgroundColor;
            return {alt: img.alt, font: s.fontFamily, size: parseFloat(s.fontSize), color: s.color,
                    background: bg, height: box.height};
        })""")
        assert alts
        for a in alts:
            assert not a["font"].lower().startswith(("times", "serif")), a
            assert "Helvetica" in a["font"] and a["size"] >= 14, a
            assert a["height"] >= 14, f"the alt text has no room: {a}"
            assert contrast(parse_rgb(a["color"]), parse_rgb(a["background"])) >= AA, a
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{email.name}-{scheme}-375-images-blocked.png", full_page=True)
        # the caption keeps its distance from the alt text above it
        gaps = page.evaluate("""() => [...document.querySelectorAll('.nl-image img')].map(img => {
            const caption = img.closest('td.nl-image').parentElement.nextElementSibling;
            if (!caption) return null;
            const text = caption.querySelector('div');
            return text ? text.getBoundingClientRect().top - img.getBoundingClientRect().bottom : null;
        }).filter(g => g !== null)""")
        assert gaps and min(gaps) >= 8, gaps
    finally:
        page.context.close()


RTL_ISSUE = """\
subject: "النشرة: أهم أخبار التعلم الآلي"
date: 2021-05-31
language: ar
preheader: "ملخص الشهر"
intro: |
  مرحبا {{ subscriber.name | default("قارئ") }}!
sections:
  - title: "القسم الأول"
    links:
      - {label: "مقال", url: "https://example.org/paper"}
    body: |
      هذا نص عربي مع [رابط](https://example.org/ar) ورقم 2021.

      - عنصر أول

      > اقتباس
"""


def test_a_right_to_left_issue_reads_right_to_left(browser: Browser, settings: Settings, tmp_path: Path) -> None:
    # an Arabic issue was laid out left to right: "!مرحبا قارئ" with its "!" at the wrong end, text,
    # bullets and the quote's rule on the left
    source = tmp_path / "ar.yaml"
    source.write_text(RTL_ISSUE, encoding="utf-8")
    html = next(p for p in write_rendered(prepare(source, settings), settings, tmp_path) if p.suffix == ".html")
    page = open_email(browser, html.read_text(encoding="utf-8"), "375")
    read = """sel => { const el = document.querySelector(sel), s = getComputedStyle(el), box = el.getBoundingClientRect();
                       return {dir: s.direction, align: s.textAlign, left: box.left, right: box.right,
                               pl: parseFloat(s.paddingLeft), pr: parseFloat(s.paddingRight),
                               bl: parseFloat(s.borderLeftWidth), br: parseFloat(s.borderRightWidth)} }"""
    for selector in (".nl-title h1", ".nl-prose p", ".nl-links"):
        style = page.evaluate(read, selector)
        assert style["dir"] == "rtl" and style["align"] in ("right", "-webkit-right"), (selector, style)
    ul, quote = page.evaluate(read, ".nl-prose ul"), page.evaluate(read, ".nl-prose blockquote")
    assert ul["pr"] > 0 and ul["pl"] == 0, ul  # bullets on the right, inside the text column
    assert quote["br"] > 0 and quote["bl"] == 0, quote
    page.context.close()
    # and a left-to-right issue stays as it was
    english = open_email(browser, next(p for p in write_rendered(prepare(ROOT / "issues" / "2021-03.yaml", settings),
                                                                 settings, tmp_path) if p.suffix == ".html")
                         .read_text(encoding="utf-8"), "375")
    assert english.evaluate(read, ".nl-prose p")["dir"] == "ltr"
    english.context.close()
