"""Settings: newsletter.toml at the project root, overridden by environment variables.

Secrets (SendGrid key, SMTP password, unsubscribe signing key) come only from the environment,
so that newsletter.toml can live in git.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from . import providers
from .errors import ConfigError

if TYPE_CHECKING:
    from .store import Store

CONFIG_NAME = "newsletter.toml"
# of the [newsletter] table (each provider declares its own); read only from the environment
SECRET_KEYS = {"secret", "secret_previous", "database_url", "sendgrid_webhook_key"}
MAKE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
# Cc (NUL, TAB, CR, LF, ESC, U+0085 ...) and the Unicode line/paragraph separators: never in a header
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# RFC 2919's list-id: list-label "." namespace, both dot-atom-text (RFC 5322 3.2.3), so at least one dot
ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 3.2.3: one or more atext
LIST_ID = re.compile(rf"{ATOM}(?:\.{ATOM})+")
LIST_ID_MAX = 255  # octets (RFC 2919 2)


def _one_line(v: str | None) -> str | None:
    """Refuse a value that would break a mail header (or a one-line footer) apart."""
    if v is not None and (m := _CONTROL.search(v)):
        raise ValueError(f"contains a control character or line break (U+{ord(m.group()):04X}) at "
                         f"character {m.start() + 1}; write it as one line of plain text")
    return v


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Brand(_Section):
    color: str = "#0969da"  # links and accents; 5.2:1 on white (WCAG AA asks 4.5:1)
    background: str = "#f4f5f7"
    logo: str | None = None
    # dark mode (clients that honour prefers-color-scheme); unset: derived, see colors.palette()
    dark_color: str | None = None
    dark_background: str | None = None

    @field_validator("color", "background", "dark_color", "dark_background")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", v):
            raise ValueError("use a hex colour like #1f6feb")
        return v


class Check(_Section):
    """[check]: which email clients the compatibility report covers, and what it accepts."""

    # caniemail families ("gmail": its usual platforms) or family.platform ("outlook.windows")
    clients: list[str] = Field(default_factory=lambda: ["gmail", "apple-mail", "outlook", "yahoo"])
    accept: list[str] = Field(default_factory=list)  # caniemail slugs that degrade gracefully for you

    @field_validator("clients")
    @classmethod
    def _clients(cls, v: list[str]) -> list[str]:
        from .compat import resolve_clients  # reads caniemail's data: only when the file names clients

        resolve_clients(v)
        return v

    @field_validator("accept")
    @classmethod
    def _accept(cls, v: list[str]) -> list[str]:
        from .compat import load_data

        known = {f["slug"] for f in load_data()["data"]}
        for slug in v:
            if slug not in known:
                raise ValueError(f"{slug!r} is not a caniemail feature; use its id, like css-border-radius "
                                 "(the last part of https://www.caniemail.com/features/css-border-radius/)")
        return v


class Settings(_Section):
    name: str = "Newsletter"
    language: str = "en"
    from_name: str | None = None
    from_email: str = "newsletter@example.com"
    # the List-Id header's <list-id> (RFC 2919), the same in every message of every issue: mail
    # clients file and filter the newsletter by it. Unset: derived from name and from_email (see
    # default_list_id); after validation it is always set. Declared after name and from_email:
    # its validator reads them.
    list_id: str | None = Field(default=None, validate_default=True)
    reply_to: str | None = None
    postal_address: str | None = None
    unsubscribe_url: str | None = None  # template with {email} and {token}, optionally {issue}
    unsubscribe_mailto: str | None = None
    view_online_url: str | None = None  # template with {issue}; default {archive_url}{issue}.html
    archive_url: str | None = None  # where `newsletter archive`'s folder is served, ending in /
    preview: list[str] = Field(default_factory=list)
    provider: str = "sendgrid"  # a registered provider, used by --send; without it, a dry run
    brand: Brand = Field(default_factory=Brand)
    check: Check = Field(default_factory=Check)
    # each registered provider's table ([smtp], [sendgrid]), validated by the provider's own model
    providers: dict[str, Any] = Field(default_factory=dict)
    secret: str | None = Field(default=None, exclude=True, repr=False)  # NEWSLETTER_SECRET only
    # earlier signing keys, still accepted by `newsletter serve` (links already sent keep working);
    # NEWSLETTER_SECRET_PREVIOUS only, comma-separated
    secret_previous: list[str] = Field(default_factory=list, exclude=True, repr=False)
    # the public key SendGrid shows for its signed Event Webhook; NEWSLETTER_SENDGRID_WEBHOOK_KEY only
    sendgrid_webhook_key: str | None = Field(default=None, exclude=True, repr=False)
    state_dir: Path = Path(".newsletter")
    # PostgreSQL state store (postgresql://...), from NEWSLETTER_DATABASE_URL only: it holds a password
    database_url: str | None = Field(default=None, exclude=True, repr=False)
    retry_attempts: int = Field(default=5, ge=1, le=20)  # per batch, first try included
    retry_backoff: float = Field(default=2.0, ge=0)  # seconds before the 2nd try; doubles
    root: Path = Path(".")
    path: Path | None = None

    @field_validator("provider")
    @classmethod
    def _provider(cls, v: str) -> str:
        if v not in providers.REGISTRY:
            raise ValueError(f"unknown provider {v!r}; use one of: {', '.join(providers.REGISTRY)}")
        return v

    @field_validator("secret_previous", mode="before")
    @classmethod
    def _previous(cls, v: object) -> object:
        return [k.strip() for k in v.split(",") if k.strip()] if isinstance(v, str) else v

    @property
    def unsubscribe_secrets(self) -> list[str]:
        """Every key an unsubscribe token may be signed with: the current one first."""
        return [k for k in (self.secret, *self.secret_previous) if k]

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a PostgreSQL URL like postgresql://user:password@host:5432/newsletter "
                             "(leave it unset for the SQLite store in the state folder)")
        return v or None

    def open_store(self, *, create: bool = True) -> Store:
        """The state store these settings name: PostgreSQL by URL, else SQLite in state_dir."""
        from .store import open_store

        return open_store(self.state_dir, self.database_url, create=create)

    def provider_settings(self, name: str) -> Any:
        """The [name] table of a registered provider, validated by its own model."""
        providers.spec(name)  # an unknown name is a ConfigError, not a KeyError
        return self.providers[name]

    def own_unsubscribe(self, provider: str) -> str | None:
        """The tag `provider` fills with its own unsubscribe link (SendGrid's groups), if set up."""
        return providers.spec(provider).own_unsubscribe(self.provider_settings(provider))


    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        from .issue import language_tag  # babel: only when the file sets a language

        return language_tag(v)

    @field_validator("name", "from_name", "postal_address")
    @classmethod
    def _header_text(cls, v: str | None) -> str | None:
        return _one_line(v)

    @field_validator("name", "from_name")
    @classmethod
    def _no_encoded_word(cls, v: str | None) -> str | None:
        # the From: header's parser would decode it, a line break included (header injection)
        if v is not None and "=?" in v:
            raise ValueError("holds '=?', which mail clients read as the start of an RFC 2047 encoded word; "
                             "write the name as plain text (any language: it is encoded for you)")
        return v

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        if v is None:
            return v
        strong = v.strip()
        if len(strong) < 32 or len(set(strong)) < 8:  # never echo the value: it is a secret
            raise ValueError(
                "too weak to sign unsubscribe links: use at least 32 characters (not counting spaces "
                "around it) and at least 8 different ones; make one with " + MAKE_SECRET + " and keep "
                "it stable: a new key breaks the unsubscribe links already sent")
        return v

    @field_validator("list_id")
    @classmethod
    def _list_id(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:  # derived, once name and from_email are known to be valid
            if "name" not in info.data or "from_email" not in info.data:
                return None  # their own errors are reported
            return default_list_id(info.data["name"], info.data["from_email"])
        _one_line(v)
        if v.startswith("<") and v.endswith(">"):
            raise ValueError(f"write it without the angle brackets: {v[1:-1]!r}; they are added in the header")
        if not LIST_ID.fullmatch(v):
            raise ValueError(f"{v!r} is not a list id like digest.example.org (RFC 2919: a label and a domain "
                             "you control, dot-separated parts of letters, digits and !#$%&'*+-/=?^_`{|}~, "
                             "no spaces)")
        if len(v) > LIST_ID_MAX:  # ASCII by now: characters are octets
            raise ValueError(f"is {len(v)} characters long; RFC 2919 allows at most {LIST_ID_MAX}")
        return v

    @field_validator("from_email", "reply_to", "unsubscribe_mailto")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        _one_line(v)
        if v is not None and not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,]+", v):
            raise ValueError(f"{v!r} is not an email address like name@example.org")
        return v

    @field_validator("preview")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        return [cls._address(a) or "" for a in v]

    @field_validator("unsubscribe_url")
    @classmethod
    def _unsubscribe(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith("https://"):
            raise ValueError("must be an https:// URL (RFC 8058 one-click unsubscribe requires https)")
        _fields(v, {"email", "token"}, optional=("issue",))
        if "{token}" not in v:
            raise ValueError("must contain {token}: without it anyone could unsubscribe anyone")
        return v

    @field_validator("view_online_url")
    @classmethod
    def _view_online(cls, v: str | None) -> str | None:
        if v is not None:
            if not v.startswith(("https://", "http://")):
                raise ValueError("must be an http(s) URL")
            _no_space(v)
            _fields(v, {"issue"})
        return v

    @field_validator("archive_url")
    @classmethod
    def _archive(cls, v: str | None) -> str | None:
        if v is not None:
            if not v.startswith(("https://", "http://")):
                raise ValueError("must be an http(s) URL, the address the archive folder is served at")
            if "{" in v or "?" in v or "#" in v:
                raise ValueError("must be a plain folder URL like https://example.org/issues/")
            _no_space(v)
            v = v if v.endswith("/") else v + "/"
        return v

    @model_validator(mode="after")
    def _view_online_default(self) -> Settings:
        # one setting for both: the email's "view in browser" link points at the archive's page
        if self.view_online_url is None and self.archive_url:
            self.view_online_url = self.archive_url + "{issue}.html"
        return self

    def view_online(self, stem: str) -> str | None:
        """The view-in-browser URL of issue `stem`, the name percent-encoded (a space, #, ? or % in a
        file name would otherwise cut the link short), or None without view_online_url."""
        return self.view_online_url.format(issue=quote(stem, safe="")) if self.view_online_url else None

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    def line_of(self, key: str) -> int | None:
        """Line of `key = ...` in newsletter.toml, for located messages."""
        if self.path is None or not self.path.is_file():
            return None
        return _line_of(self.path.read_text(encoding="utf-8-sig"), key)


def _slug(text: str) -> str:
    """Lower-case ASCII letters and digits of `text`, runs of anything else as one "-" (accents
    dropped: "Café" -> "cafe"); at most 63 characters, a DNS label's length."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:63].strip("-")


def default_list_id(name: str, from_email: str) -> str:
    """The list id when list_id is not set: a slug of the name (or, for a name with no ASCII letters,
    such as "Нейродайджест", of from_email's local part) and from_email's domain, the sender's own
    namespace, as RFC 2919 asks: "Weekly AI" + news@example.org -> weekly-ai.example.org."""
    local, _, domain = from_email.rpartition("@")
    label = _slug(name) or _slug(local) or "newsletter"
    try:
        namespace = domain.encode("idna").decode("ascii").lower()  # пример.рф -> xn--e1afmkfd.xn--p1ai
    except UnicodeError:
        namespace = ""
    list_id = f"{label}.{namespace}"
    if not LIST_ID.fullmatch(list_id) or len(list_id) > LIST_ID_MAX:
        raise ValueError(f"cannot be derived from from_email = {from_email!r} (its domain is not a plain "
                         'domain name); set list_id, like list_id = "news.example.org"')
    return list_id


def _no_space(url: str) -> None:
    """A space cuts a link short in the text part and is no URL in the feed: it must be written %20."""
    if any(c.isspace() for c in url):
        raise ValueError("has a space in it; write it as %20 (https://example.org/my%20issues/)")


def _fields(template: str, allowed: set[str], optional: tuple[str, ...] = ()) -> None:
    """Refuse {placeholders} other than `allowed` and `optional` (and broken braces) in a URL template."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"{e}; write a literal brace as {{{{ or }}}}") from None
    if unknown := names - allowed - set(optional):
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}; use "
                         + " and ".join("{" + a + "}" for a in sorted(allowed))
                         + "".join(", optionally {" + a + "}" for a in sorted(optional)))


# environment variable -> (provider table or None, key); applied over the file
ENV_OVERRIDES: dict[str, tuple[str | None, str]] = {
    "NEWSLETTER_NAME": (None, "name"),
    "NEWSLETTER_LANGUAGE": (None, "language"),
    "NEWSLETTER_FROM_NAME": (None, "from_name"),
    "NEWSLETTER_FROM_EMAIL": (None, "from_email"),
    "NEWSLETTER_LIST_ID": (None, "list_id"),
    "NEWSLETTER_REPLY_TO": (None, "reply_to"),
    "NEWSLETTER_POSTAL_ADDRESS": (None, "postal_address"),
    "NEWSLETTER_UNSUBSCRIBE_URL": (None, "unsubscribe_url"),
    "NEWSLETTER_UNSUBSCRIBE_MAILTO": (None, "unsubscribe_mailto"),
    "NEWSLETTER_VIEW_ONLINE_URL": (None, "view_online_url"),
    "NEWSLETTER_ARCHIVE_URL": (None, "archive_url"),
    "NEWSLETTER_PROVIDER": (None, "provider"),
    "NEWSLETTER_SECRET": (None, "secret"),
    "NEWSLETTER_SECRET_PREVIOUS": (None, "secret_previous"),
    "NEWSLETTER_SENDGRID_WEBHOOK_KEY": (None, "sendgrid_webhook_key"),
    "NEWSLETTER_STATE_DIR": (None, "state_dir"),
    "NEWSLETTER_DATABASE_URL": (None, "database_url"),
    "NEWSLETTER_RETRY_ATTEMPTS": (None, "retry_attempts"),
    "NEWSLETTER_RETRY_BACKOFF": (None, "retry_backoff"),
    **{var: (spec.name, key) for spec in providers.REGISTRY.values() for var, key in spec.env.items()},
}


def find_config(start: Path | None = None) -> Path | None:
    """newsletter.toml in `start` (default: the current directory) or the nearest folder above it,
    as git finds its repository: commands work from issues/ or subscribers/ too."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            # relative to the current directory when possible, so messages name short paths
            return Path(os.path.relpath(folder / CONFIG_NAME)) if start is None else folder / CONFIG_NAME
    return None


def _line_of(text: str, key: str) -> int | None:
    """Line of `key = ...`, or else of the table `[key]` (a misspelt `[smpt]`, `[newsletter.smtp]`)."""
    k = re.escape(key)  # [ \t]*, not \s*: that would start the match on a blank line above
    m = (re.search(rf"^[ \t]*{k}[ \t]*=", text, re.MULTILINE)
         or re.search(rf"^[ \t]*\[[ \t]*(?:[\w-]+[ \t]*\.[ \t]*)*{k}[ \t]*\]", text, re.MULTILINE))
    return text.count("\n", 0, m.start()) + 1 if m else None


def _read_file(path: Path) -> tuple[dict[str, Any], str]:
    """The file's settings, [newsletter] flattened into the top level, and its text."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file; create it with `newsletter init` "
                          "or drop --config")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Notepad's "UTF-8 with BOM") is fine
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text ({e.reason}); save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)$", str(e))
        where = f"{path}:{m.group(1)}" if m else f"{path}"
        raise ConfigError(f"{where}: {e}; fix the TOML syntax") from None
    top = data.pop("newsletter", {})
    tables = {name: data.pop(name) for name in list(data) if name in providers.REGISTRY}
    data = {**top, **data, "providers": tables}
    secret_keys = [(data, SECRET_KEYS)] + [
        (table, providers.REGISTRY[name].secrets) for name, table in tables.items() if isinstance(table, dict)]
    for table, keys in secret_keys:
        for key in table:
            if key in keys:
                raise ConfigError(
                    f"{path}:{_line_of(text, key)}: {key}: secrets are read only from the "
                    "environment; remove it from the file and set the environment variable"
                )
    return data, text


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read newsletter.toml (`path`, or the nearest one from the current directory up) and apply
    the environment's overrides. Raises ConfigError, saying where it looked, when there is none."""
    env = dict(os.environ if env is None else env)
    path = Path(path) if path is not None else None  # a str too
    if path is None:
        path = find_config()
        if path is None:
            raise ConfigError(
                f"no {CONFIG_NAME} in {Path.cwd()} or any folder above it; run `newsletter init` to "
                "start a newsletter here, or pass --config PATH"
            )
    data, text = _read_file(path)
    for var, (table, key) in ENV_OVERRIDES.items():
        if env.get(var):
            target = data["providers"].setdefault(table, {}) if table else data
            target[key] = env[var]
    if env.get("NEWSLETTER_PREVIEW_TO"):
        data["preview"] = [a.strip() for a in env["NEWSLETTER_PREVIEW_TO"].split(",") if a.strip()]
    root = path.parent
    data["root"] = root
    data["path"] = path
    errors: list[tuple[tuple[str, ...], Any]] = []
    tables = {}
    for name, spec in providers.REGISTRY.items():
        # a table left out gets the provider's defaults: every registered provider has settings
        try:
            tables[name] = spec.settings.model_validate(data["providers"].get(name) or {})
        except ValidationError as e:
            errors += [((name,), err) for err in e.errors()]
    data["providers"] = tables
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        errors += [((), err) for err in e.errors()]
    if errors:
        raise ConfigError(_located(errors, path, text, env)) from None
    if not settings.state_dir.is_absolute():
        settings.state_dir = root / settings.state_dir
    return settings


def _located(errors: list[tuple[tuple[str, ...], Any]], path: Path, text: str, env: Mapping[str, str]) -> str:
    """One `FILE:LINE: key: message` line per error; a value from the environment names its variable."""
    lines = []
    for table_loc, err in errors:
        loc = [*table_loc, *(str(p) for p in err["loc"])]
        var = _variable_for(loc, env)
        key = next((part for part in reversed(loc) if not part.isdigit()), "")  # preview.0 -> preview
        line = _line_of(text, key) if key and not var else None
        where = f"environment variable {var}" if var else (f"{path}:{line}" if line else f"{path}")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting; check the spelling (see Configuration in README.md)"
        lines.append(f"{where}: {'.'.join(loc)}: {msg}")
    return "\n".join(lines)


def _variable_for(loc: list[str], env: Mapping[str, str]) -> str | None:
    """The environment variable a wrong setting came from, if it came from one."""
    if loc[:1] == ["preview"] and env.get("NEWSLETTER_PREVIEW_TO"):
        return "NEWSLETTER_PREVIEW_TO"
    for var, (table, key) in ENV_OVERRIDES.items():
        if env.get(var) and loc[: 2 if table else 1] == ([table, key] if table else [key]):
            return var
    return None
