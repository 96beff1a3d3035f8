"""Colours for the email: WCAG contrast, and the light and dark palettes the templates receive.

Contrast follows WCAG 2.x (relative luminance of sRGB); AA asks 4.5:1 for text, 3:1 for large text
(24 px, or 18.66 px bold).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Brand

AA = 4.5
AA_LARGE = 3.0
WHITE = "#ffffff"

# The default template's neutral colours, light and dark. The dark ones follow the brand's
# dark background when one is configured (see palette()).
LIGHT = {"surface": WHITE, "text": "#1f2328", "muted": "#57606a", "border": "#d0d7de", "code": "#f0f2f4"}
DARK = {"background": "#0d1117", "surface": "#161b22", "text": "#e6edf3", "muted": "#9da7b3",
        "border": "#30363d", "code": "#262c36"}


def rgb(color: str) -> tuple[int, int, int]:
    """#rgb or #rrggbb -> (r, g, b) in 0..255."""
    h = color.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def hex_color(r: float, g: float, b: float) -> str:
    return "#" + "".join(f"{max(0, min(255, round(c))):02x}" for c in (r, g, b))


def luminance(color: str) -> float:
    """WCAG relative luminance, 0 (black) to 1 (white)."""
    def linear(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours, 1 to 21."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def mix(a: str, b: str, t: float) -> str:
    """`a` moved a fraction `t` of the way towards `b`."""
    return hex_color(*(x + (y - x) * t for x, y in zip(rgb(a), rgb(b))))


def readable(color: str, backgrounds: tuple[str, ...], minimum: float = AA) -> str:
    """`color` itself when it reaches `minimum` on every background; else the nearest shade that
    does, lightened on dark backgrounds and darkened on light ones (the hue stays recognisable)."""
    toward = "#ffffff" if max(luminance(b) for b in backgrounds) < 0.18 else "#000000"
    for step in range(51):
        candidate = mix(color, toward, step / 50)
        if min(contrast(candidate, b) for b in backgrounds) >= minimum:
            return candidate
    return toward


def palette(brand: Brand) -> dict[str, dict[str, str]]:
    """The colours of both schemes: `light` and `dark`, each with background (around the email),
    surface (behind the text), text, muted, border, code (code background) and link (the brand
    colour, made readable in dark mode unless [brand] dark_color is set)."""
    light = {"background": brand.background, **LIGHT, "link": brand.color}
    dark = dict(DARK)
    if brand.dark_background:
        dark["background"] = brand.dark_background
        dark["surface"] = mix(brand.dark_background, WHITE, 0.05)
        dark["border"] = mix(brand.dark_background, WHITE, 0.18)
        dark["code"] = mix(brand.dark_background, WHITE, 0.1)
    grounds = (dark["background"], dark["surface"], dark["code"])
    dark["text"] = readable(dark["text"], grounds)
    dark["muted"] = readable(dark["muted"], grounds)
    dark["link"] = brand.dark_color or readable(brand.color, grounds)
    return {"light": light, "dark": dark}
