"""Email client compatibility of an HTML email, from caniemail's data (MIT; vendored in newsletter/data/,
refreshed by scripts/update-caniemail.sh). No Node at run time.

compat_report(html) finds the features the HTML uses (compat_scan), looks each one up for each chosen
client at its most recently tested version, and sorts what is not fully supported:

- baseline or not: a feature MJML's own markup needs anyway (the HTML of a minimal MJML document with
  the same components uses it too) is expected; anything else comes from the template or the issue;
- degrades gracefully or not: DEGRADES lists features whose absence leaves a readable, working email
  (dark-mode styles, rounded corners); `[check] accept` in newsletter.toml adds to it.

`newsletter check --strict` fails on the rest: an unsupported feature outside the baseline.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .compat_scan import scan
from .errors import UsageError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_CLIENTS = ("gmail", "apple-mail", "outlook", "yahoo")
# what a family name means without a platform: the apps and webmails most readers use
FAMILY_PLATFORMS = {
    "gmail": ("desktop-webmail", "ios", "android"),
    "apple-mail": ("macos", "ios"),
    "outlook": ("windows", "macos", "outlook-com", "ios", "android"),
    "yahoo": ("desktop-webmail", "ios", "android"),
}
# features whose absence in a client leaves the email readable and working: partial or no support
# is reported, but it is not a problem to fix and never fails --strict
DEGRADES = {
    "css-at-media-prefers-color-scheme": "clients without it show the light design (or darken it themselves)",
    "html-meta-color-scheme": "a dark-mode hint; without it the client darkens the email its own way, or not",
    "css-color-scheme": "a dark-mode hint; without it the client darkens the email its own way, or not",
    "css-at-media-prefers-reduced-motion": "motion preferences apply only where supported",
    "css-border-radius": "square corners instead of rounded ones",
    "css-box-shadow": "no shadow",
    "css-letter-spacing": "normal spacing between letters",
    "css-text-transform": "the text shows as typed (e.g. not in capitals)",
    "css-text-underline-offset": "the underline sits at its default place",
    "css-pseudo-class-hover": "no hover effect",
    "css-pseudo-class-focus": "the browser's own focus ring",
    "css-pseudo-class-focus-visible": "the browser's own focus ring",
    **dict.fromkeys(("html-aria-label", "html-aria-labelledby", "html-aria-describedby", "html-aria-hidden",
                     "html-aria-live"), "an accessibility hint; without it assistive technology reads the "
                                        "content as it is"),
    "html-role": "assistive technology reads tables as tables",
    "html-lang": "the client's language is assumed for hyphenation and speech",
}
DARK_ONLY = "used only in dark-mode styles: where unsupported, the light design shows"
LEVELS = {"y": "supported", "a": "partial", "n": "unsupported", "u": "unknown"}
VALUE = {"y": 1.0, "a": 0.5, "n": 0.0}  # support as a number for the score; unknown is left out
PLATFORM_NAMES = {"desktop-webmail": "web", "mobile-webmail": "mobile web"}


@lru_cache(maxsize=1)
def load_data() -> dict[str, Any]:
    """caniemail's data as shipped with newsletter (read once: it is package data, never edited)."""
    return json.loads((DATA_DIR / "caniemail.json").read_text(encoding="utf-8"))


def data_version() -> str:
    path = DATA_DIR / "caniemail-version.txt"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else \
        f"caniemail (data of {load_data().get('last_update_date', '?')})"


@dataclass(frozen=True)
class Client:
    family: str  # caniemail's family: gmail, apple-mail, outlook, yahoo, ...
    platform: str  # caniemail's platform: desktop-webmail, ios, android, windows, macos, outlook-com, ...
    name: str  # "Gmail web", "Outlook Windows"

    @property
    def key(self) -> str:
        return f"{self.family}.{self.platform}"


def known_clients() -> dict[str, list[str]]:
    """family -> its platforms, as the data has them."""
    fams: dict[str, list[str]] = {}
    for feature in load_data()["data"]:
        for family, platforms in feature["stats"].items():
            known = fams.setdefault(family, [])
            known += [p for p in platforms if p not in known]
    return fams


def resolve_clients(names: Iterable[str]) -> list[Client]:
    """`gmail` (its usual platforms) or `outlook.windows` (one platform) -> Clients; ValueError for a
    name the data does not know, with the closest known names."""
    data, fams = load_data(), known_clients()
    nice = data["nicenames"]
    clients: list[Client] = []
    for name in names:
        family, _, platform = name.strip().lower().partition(".")
        if family not in fams or (platform and platform not in fams[family]):
            choices = list(fams) + [f"{f}.{p}" for f, ps in fams.items() for p in ps]
            close = difflib.get_close_matches(name, choices, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; families: {', '.join(sorted(fams))}"
            raise ValueError(f"unknown email client {name!r}{hint}")
        for p in [platform] if platform else FAMILY_PLATFORMS.get(family, fams[family]):
            fam_name = nice["family"].get(family, family)
            plat_name = PLATFORM_NAMES.get(p, nice["platform"].get(p, p))
            label = plat_name if plat_name.startswith(fam_name) else f"{fam_name} {plat_name}"
            client = Client(family, p, label)
            if client not in clients:
                clients.append(client)
    return clients


ORIGINS = {
    "mjml": "MJML's own markup",
    "layout": "MJML's markup for the template's component attributes",
    "content": "the template's HTML and CSS, or the issue's text",
}


@dataclass
class Finding:
    """One feature the HTML uses, and how each client supports it."""

    slug: str  # caniemail's id, e.g. css-border-radius
    title: str
    url: str
    count: int  # occurrences in the HTML
    places: list[tuple[str, int]]  # where, most frequent first
    origin: str  # a key of ORIGINS; "mjml" is the baseline
    degrades: str | None  # why its absence is harmless, when it is on the allow-list
    support: dict[str, str]  # client key -> y / a / n / u at the client's latest tested version, as the data says
    notes: dict[str, list[str]] = field(default_factory=dict)  # client key -> caniemail's notes
    partial_ok: str | None = None  # why partial support does not affect the values used here

    @property
    def baseline(self) -> bool:
        return self.origin == "mjml"

    def level(self, client: Client) -> str:
        """y / a / n / u for this HTML: partial support counts as support when the values used here
        are the ones every partly supporting client handles (PARTIAL_OK)."""
        level = self.support.get(client.key, "u")
        return "y" if level == "a" and self.partial_ok else level

    def levels(self, clients: Iterable[Client]) -> set[str]:
        return {self.level(c) for c in clients}


@dataclass
class CompatReport:
    """What compat_report found, with the score and the per-family view the CLI prints."""

    clients: list[Client]
    findings: list[Finding]  # every feature found, supported or not
    data: str  # which caniemail data
    baseline_components: list[str]

    @property
    def families(self) -> dict[str, list[Client]]:
        fams: dict[str, list[Client]] = {}
        for c in self.clients:
            fams.setdefault(c.family, []).append(c)
        return fams

    def family_name(self, family: str) -> str:
        return load_data()["nicenames"]["family"].get(family, family)

    def client_score(self, client: Client) -> float:
        """Percent: mean over the features found of 1 (supported), ½ (partial), 0 (unsupported);
        features the data has no answer for are left out."""
        values = [VALUE[f.level(client)] for f in self.findings if f.level(client) in VALUE]
        return 100 * sum(values) / len(values) if values else 100.0

    def family_score(self, family: str) -> float:
        scores = [self.client_score(c) for c in self.families[family]]
        return sum(scores) / len(scores)

    @property
    def score(self) -> float:
        """The mean of the family scores: each family counts the same, however many platforms it has."""
        scores = [self.family_score(f) for f in self.families]
        return sum(scores) / len(scores) if scores else 100.0

    def problems(self, family: str | None = None, *, level: str | None = None,
                 baseline: bool = False, degrades: bool | None = None) -> list[Finding]:
        """Findings partly or not supported by a client (of `family`); by default only those outside
        MJML's baseline. `level` "n" or "a" narrows to unsupported or partial; `degrades` True/False
        keeps only allow-listed or only other findings."""
        clients = self.families.get(family, []) if family else self.clients
        wanted = {level} if level else {"a", "n"}
        return [f for f in self.findings
                if f.baseline == baseline and wanted & f.levels(clients)
                and (degrades is None or bool(f.degrades) == degrades)]

    @property
    def failures(self) -> list[Finding]:
        """What --strict refuses: unsupported somewhere, outside the baseline, not on the allow-list."""
        return self.problems(level="n", degrades=False)

    def summary(self) -> list[str]:
        """A few lines: the score, then per family what the template or the issue adds."""
        updated = str(load_data().get("last_update_date", "?"))[:10]
        lines = [f"compatibility {self.score:.0f}% across {len(self.clients)} email clients (caniemail data of "
                 f"{updated}); what the template and the issue add beyond MJML's own markup:"]
        width = max((len(self.family_name(f)) for f in self.families), default=0)
        for family in self.families:
            n = self.problems(family, level="n", degrades=False)
            a = [f for f in self.problems(family, degrades=False) if f not in n]
            soft = self.problems(family, degrades=True)
            text = f"{len(n)} unsupported, {len(a)} partial, {len(soft)} degrading gracefully"
            if n or a:
                text += " (to look at: " + ", ".join(f.title for f in n + a) + ")"
            lines.append(f"  {self.family_name(family):<{width}}  {self.family_score(family):3.0f}%  {text}")
        return lines

    def details(self) -> list[str]:
        """--verbose: each finding beyond the baseline, per family, with where it is and the notes."""
        lines = []
        for family, clients in self.families.items():
            found = self.problems(family)
            lines.append(f"{self.family_name(family)} ({', '.join(c.name for c in clients)}): "
                         f"{len(found) or 'nothing'} beyond MJML's baseline")
            for f in found:
                lines += _finding_lines(f, clients)
        base = self.problems(baseline=True)
        if base:
            lines.append(f"MJML's own markup (the baseline, expected): {len(base)} partly or not supported: "
                         + ", ".join(f.title for f in base))
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "score": round(self.score, 1),
            "formula": "per client: mean over the features found of 1 supported, 0.5 partial, 0 unsupported "
                       "(unknown left out); per family: mean of its clients; score: mean of the families",
            "baseline_components": self.baseline_components,
            "clients": [{"key": c.key, "name": c.name, "score": round(self.client_score(c), 1)}
                        for c in self.clients],
            "families": {fam: {
                "name": self.family_name(fam), "score": round(self.family_score(fam), 1),
                "unsupported": [f.slug for f in self.problems(fam, level="n", degrades=False)],
                "partial": [f.slug for f in self.problems(fam, degrades=False)
                            if f not in self.problems(fam, level="n", degrades=False)],
                "degrades_gracefully": [f.slug for f in self.problems(fam, degrades=True)],
            } for fam in self.families},
            "failures": [f.slug for f in self.failures],
            "findings": [{"slug": f.slug, "title": f.title, "url": f.url, "count": f.count,
                          "origin": f.origin, "from": ORIGINS[f.origin], "degrades": f.degrades,
                          "partial_ok": f.partial_ok,
                          "places": [{"where": w, "count": n} for w, n in f.places[:5]],
                          "support": f.support, "notes": f.notes} for f in self.findings],
        }

    def to_markdown(self) -> str:
        keys = [c.key for c in self.clients]
        mark = {"y": "✓", "a": "◐", "n": "✗", "u": "?"}
        out = ["# Email client compatibility", "", *[f"    {line}" for line in self.summary()], "",
               "Every feature the template and the issue use beyond MJML's own markup, then MJML's own that are "
               "not fully supported (✓ supported, ◐ partial, ✗ unsupported, ? unknown):", "",
               "| feature | where | " + " | ".join(c.name for c in self.clients) + " |",
               "|---|---|" + "---|" * len(keys)]
        for f in sorted(self.findings, key=lambda f: (f.baseline, f.slug)):
            if f.baseline and not (f.levels(self.clients) & {"a", "n"}):
                continue
            title = f"[{_md(f.title)}]({f.url})" + (" (MJML)" if f.baseline else "") + \
                (f" (degrades gracefully: {f.degrades})" if f.degrades else "") + \
                (f" (partial support, not for these values: {f.partial_ok})" if f.partial_ok else "")
            where = "; ".join(f"`{w}` ×{n}" for w, n in f.places[:2]).replace("|", "\\|")
            out.append(f"| {title} | {where} | " + " | ".join(mark[f.support.get(k, 'u')] for k in keys) + " |")
        out += ["", f"Score: per client, the mean over the {len(self.findings)} features found of 1 (supported), "
                "½ (partial), 0 (unsupported), unknown left out; per family the mean of its clients; overall the "
                "mean of the families. Fully supported features are in the JSON report.", ""]
        return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _finding_lines(f: Finding, clients: Sequence[Client]) -> list[str]:
    by_level: dict[str, list[str]] = {}
    for c in clients:
        by_level.setdefault(f.level(c), []).append(c.name)
    who = "; ".join(f"{LEVELS[lv]} in {', '.join(names)}" for lv, names in by_level.items() if lv in "an")
    tag = f" (degrades gracefully: {f.degrades})" if f.degrades else ""
    lines = [f"  - {f.title}{tag}: {who}; from {ORIGINS[f.origin]}. {f.url}",
             "    at " + "; ".join(f"{w} ×{n}" for w, n in f.places[:3]) + (" …" if len(f.places) > 3 else "")]
    notes = {n for c in clients for n in f.notes.get(c.key, [])}
    lines += [f"    note: {n}" for n in sorted(notes)]
    return lines


class UnknownClientError(UsageError, ValueError):
    """compat_report was given a client caniemail's data does not know."""


def compat_report(html: str, clients: Sequence[str] | None = None, *, mjml: str | None = None,
                  accept: Iterable[str] = ()) -> CompatReport:
    """The compatibility of `html` (the final, inlined HTML) for `clients` (family names like "gmail"
    or family.platform like "outlook.windows"; default DEFAULT_CLIENTS). Pass the MJML it came from
    to measure MJML's baseline for exactly the components it uses and to tell what its attributes
    cause from what its content does; `accept` adds caniemail slugs to the degrades-gracefully list.
    Raises UnknownClientError (a UsageError, and a ValueError as before) for an unknown client."""
    try:
        chosen = resolve_clients([clients] if isinstance(clients, str) else clients or DEFAULT_CLIENTS)
    except ValueError as e:
        raise UnknownClientError(str(e)) from None
    features = {f["slug"]: f for f in load_data()["data"]}
    components = components_of(mjml) if mjml else list(DEFAULT_COMPONENTS)
    base = baseline(frozenset(components))
    layout = _layout(mjml) if mjml else frozenset()
    scanned = scan(html)
    allowed = {**{slug: DARK_ONLY for slug in scanned.dark_only}, **DEGRADES,
               **{slug: "accepted in [check] accept" for slug in accept}}
    findings = []
    for slug, places in sorted(scanned.found.items()):
        feature = features.get(slug)
        if feature is None:
            continue
        support, notes = {}, {}
        for c in chosen:
            level, numbers = _latest(feature, c)
            support[c.key] = level
            texts = [feature.get("notes_by_num", {}).get(n, "") for n in numbers]
            if level in "an" and any(texts):
                notes[c.key] = [t for t in texts if t]
        origin = "mjml" if slug in base else "layout" if slug in layout else "content"
        ok = PARTIAL_OK.get(slug)
        partial_ok = ok[1] if ok and all(ok[0](v) for v in scanned.values.get(slug, {""})) else None
        findings.append(Finding(slug, feature["title"], feature["url"], sum(places.values()),
                                places.most_common(), origin, allowed.get(slug), support, notes, partial_ok))
    return CompatReport(chosen, findings, data_version(), sorted(components))


# Partial support whose limits some values avoid: slug -> (test of one value, why it is fine)
_COLOUR = re.compile(r"#[0-9a-f]{3,8}|[a-z]+")
PARTIAL_OK: dict[str, tuple[Callable[[str], bool], str]] = {
    "css-background": (lambda v: bool(_COLOUR.fullmatch(v)),
                       "only a single colour is used, which every client supports"),
    "css-font-weight": (lambda v: v in ("normal", "bold", "400", "700"),
                        "only normal/bold weights (400, 700) are used, which every client renders as meant"),
    "html-lists": (lambda v: v not in ("ol reversed", "li value"),
                   "no <ol reversed> or <li value>, the parts some clients lack"),
}


def _latest(feature: dict[str, Any], client: Client) -> tuple[str, list[str]]:
    """(y/a/n/u, note numbers) for the client's most recently tested version (the data lists
    versions oldest first)."""
    versions = feature["stats"].get(client.family, {}).get(client.platform, {})
    if not versions:
        return "u", []
    value = str(list(versions.values())[-1])
    level = value[:1] if value[:1] in LEVELS else "u"
    return level, re.findall(r"#(\d+)", value)


# --- MJML's baseline ------------------------------------------------------------------------
_SNIPPETS = {  # a minimal use of each MJML body component, all attributes at their defaults
    "mj-text": "<mj-text>text</mj-text>",
    "mj-image": '<mj-image src="https://example.org/a.png" />',
    "mj-divider": "<mj-divider />",
    "mj-button": '<mj-button href="https://example.org/">button</mj-button>',
    "mj-spacer": "<mj-spacer />",
    "mj-table": "<mj-table><tr><td>cell</td></tr></mj-table>",
    "mj-social": '<mj-social><mj-social-element name="facebook" href="https://example.org/">f'
                 "</mj-social-element></mj-social>",
    "mj-navbar": '<mj-navbar><mj-navbar-link href="https://example.org/">link</mj-navbar-link></mj-navbar>',
    "mj-accordion": "<mj-accordion><mj-accordion-element><mj-accordion-title>t</mj-accordion-title>"
                    "<mj-accordion-text>x</mj-accordion-text></mj-accordion-element></mj-accordion>",
    "mj-carousel": '<mj-carousel><mj-carousel-image src="https://example.org/a.png" /></mj-carousel>',
}
_COLUMN = "<mj-column>{}</mj-column>"
DEFAULT_COMPONENTS = ("mj-section", "mj-column", "mj-text", "mj-image", "mj-divider", "mj-button", "mj-spacer",
                      "mj-title", "mj-preview")


def components_of(mjml: str) -> list[str]:
    """The MJML components a document uses."""
    return sorted(set(re.findall(r"<(mj-[a-z-]+)", mjml)) | {"mj-section", "mj-column", "mj-text"})


@lru_cache(maxsize=32)
def baseline(components: frozenset[str]) -> frozenset[str]:
    """Features the HTML of a minimal MJML document with these components (at their defaults) uses:
    what MJML's own markup needs whatever the template does."""
    body = "".join(snippet for name, snippet in _SNIPPETS.items() if name in components)
    column = _COLUMN.format(body)
    if "mj-group" in components:
        column = f"<mj-group>{column}</mj-group>"
    section = f"<mj-section>{column}</mj-section>"
    if "mj-wrapper" in components:
        section = f"<mj-wrapper>{section}</mj-wrapper>"
    if "mj-hero" in components:
        section += '<mj-hero background-url="https://example.org/h.png"><mj-text>t</mj-text></mj-hero>'
    head = "".join(tag for name, tag in (("mj-title", "<mj-title>t</mj-title>"),
                                         ("mj-preview", "<mj-preview>p</mj-preview>")) if name in components)
    return frozenset(scan(_render(f"<mjml><mj-head>{head}</mj-head><mj-body>{section}</mj-body></mjml>")).found)


_ENDING = ("mj-text", "mj-button", "mj-table", "mj-raw", "mj-navbar-link", "mj-accordion-title",
           "mj-accordion-text", "mj-social-element")
_ENDING_RE = re.compile(rf"(<({'|'.join(_ENDING)})\b[^>]*(?<!/)>)(.*?)(</\2>)", re.DOTALL)


def _layout(mjml: str) -> frozenset[str]:
    """Features of the document's layout alone (see _layout_only); empty when MJML cannot render it,
    and then the findings are only told apart as MJML's baseline or not."""
    try:
        return frozenset(scan(_render(_layout_only(mjml))).found)
    except ValueError:  # mjml-python's parse errors
        return frozenset()


def _layout_only(mjml: str) -> str:
    """The document with the template's own HTML and CSS taken out (mj-style, the content of
    mj-text and the other components that hold HTML): what MJML makes of the layout alone."""
    src = re.sub(r"<mj-style\b[^>]*>.*?</mj-style>", "", mjml, flags=re.DOTALL)
    return _ENDING_RE.sub(lambda m: m.group(1) + ("" if m.group(2) in ("mj-table", "mj-raw") else "x")
                          + m.group(4), src)


def _render(mjml_source: str) -> str:
    import mjml  # mjml-python; the renderer has it loaded already

    return str(mjml.mjml2html(mjml_source, fonts={}))
