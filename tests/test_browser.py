"""Real-browser checks of the rendered email: what a reader would notice in Debian's Chromium.

No network: every remote request is intercepted; images get a locally generated wide PNG, the rest
is aborted. Run: .venv/bin/python -m pytest tests/test_browser.py -q
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings
from newsletter.pipeline import prepare, write_rendered

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
# (width, is_mobile, device_scale_factor): a phone, the template's 600 px design width, a desktop
VIEWPORTS = {"phone-375": (375, True, 2), "600": (600, False, 1), "desktop-1024": (1024, False, 1)}
IMAGE_SIZE = (1600, 900)  # wider than the 600 px email on purpose: the template must scale it down

pytestmark = [
    pytest.mark.browser,
    # CI fails separately when browser tests were skipped; locally a missing browser is not an error
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from playwright.sync_api import Browser, Page, Route, expect  # noqa: E402

# An invented issue with everything that tends to break layouts or escaping
LONG_WORD = "Сверхдлиннаяконкатенациябезпробелов" * 6
LONG_URL = "https://example.org/" + "a-very-long-path-segment-without-any-break" * 5
STRESS_ISSUE = f"""\
subject: "Проверка вёрстки 🚀 & <script>window.__pwned = 1</script>"
date: 2021-04-30
language: ru
preheader: "Скрытый текст превью 🙈 & <b>не жирный</b>"
title: "Стресс-тест 🧪 вёрстки & <script>window.__pwned = 1</script>"
intro: |
  Кириллица, эмодзи 🎉🎉 и амперсанд & в одном абзаце. <script>window.__pwned = 1</script>
sections:
  - title: "{LONG_WORD}"
    image:
      src: https://example.com/wide-1600x900.png
      alt: "Очень широкая картинка"
      caption: "Подпись со словом {LONG_WORD}"
    links:
      - label: "{LONG_WORD}"
        url: {LONG_URL}
    body: |
      Длинное слово: {LONG_WORD}.

      Длинная ссылка: <{LONG_URL}> и текстом {LONG_URL}

      Код: `{LONG_WORD}` & <img src=x onerror="window.__pwned = 1">
outro: |
  Конец 👋 & <script>window.__pwned = 1</script>
"""


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


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(ROOT / "newsletter.toml")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module", params=["2021-03", "stress"])
def email(request: pytest.FixtureRequest, settings: Settings,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(html, subject, preheader) of the real March issue or of the invented stress issue."""
    out = tmp_path_factory.mktemp(request.param)
    if request.param == "stress":
        source = out / "stress.yaml"
        source.write_text(STRESS_ISSUE, encoding="utf-8")
    else:
        source = ROOT / "issues" / f"{request.param}.yaml"
    prepared = prepare(source, settings)
    html_path = next(p for p in write_rendered(prepared, settings, out) if p.suffix == ".html")
    return html_path.read_text(encoding="utf-8"), prepared.issue.subject, prepared.issue.preheader or ""


def open_email(browser: Browser, html: str, viewport: str) -> Page:
    width, mobile, scale = VIEWPORTS[viewport]
    context = browser.new_context(viewport={"width": width, "height": 800}, is_mobile=mobile,
                                  has_touch=mobile, device_scale_factor=scale)
    page = context.new_page()
    page.route("**/*", route_offline)
    page.set_content(html, wait_until="load")  # "load" waits for the (routed) images too
    return page


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_layout_fits_viewport(browser: Browser, email: tuple[str, str, str], viewport: str,
                              tmp_path: Path) -> None:
    html, _, _ = email
    width = VIEWPORTS[viewport][0]
    page = open_email(browser, html, viewport)
    try:
        if viewport.startswith("phone"):
            page.screenshot(path=tmp_path / "phone.png", full_page=True)  # for debugging failures
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
        assert images or "2021-03" not in html, "the March issue has images"
        for img in images:
            assert img["natural"] == IMAGE_SIZE[0], f"{img['src']} did not load: {img}"
            assert img["right"] <= width + 0.5, f"{img['src']} sticks out of the {width}px viewport: {img}"
            assert img["width"] <= img["container"] + 0.5, f"{img['src']} wider than its container: {img}"
        assert page.evaluate("window.__pwned") is None, "text from the issue ran as a script"
    finally:
        page.context.close()


def test_phone_readability(browser: Browser, email: tuple[str, str, str]) -> None:
    html, subject, preheader = email
    page = open_email(browser, html, "phone-375")
    try:
        sizes = page.eval_on_selector_all(
            ".nl-prose p", "ps => ps.map(p => parseFloat(getComputedStyle(p).fontSize))")
        assert sizes, "no body-text paragraphs found in .nl-prose"
        assert min(sizes) >= 14, f"body text too small on a phone: {min(sizes)}px"
        for heading in page.locator("h1, h2").all():
            expect(heading).to_be_visible()
            box = heading.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375 + 0.5, (
                f"heading {heading.inner_text()[:40]!r} is cut off: {box}")
        # The title is the visible h1; the preheader only feeds the inbox preview line
        assert page.title() == subject
        expect(page.locator("h1")).to_be_visible()
        if preheader:
            hidden = page.get_by_text(preheader, exact=True)
            expect(hidden).to_have_count(1)
            expect(hidden).to_be_hidden()
        # The unsubscribe link is in the footer, i.e. after the last section, and can be seen
        unsubscribe = page.locator('a[href^="https://example.org/unsubscribe?"]')
        expect(unsubscribe).to_have_count(1)
        expect(unsubscribe).to_have_text("Отписаться")
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
