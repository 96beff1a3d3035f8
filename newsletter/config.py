"""Settings: newsletter.toml at the project root, overridden by environment variables.

Secrets (SendGrid key, SMTP password, unsubscribe signing key) come only from the environment,
so that newsletter.toml can live in git.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

CONFIG_NAME = "newsletter.toml"
SECRET_KEYS = {"password", "api_key", "secret", "sendgrid_api_key"}
MAKE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
# Cc (NUL, TAB, CR, LF, ESC, U+0085 ...) and the Unicode line/paragraph separators: never in a header
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(v: str | None) -> str | None:
    """Refuse a value that would break a mail header (or a one-line footer) apart."""
    if v is not None and (m := _CONTROL.search(v)):
        raise ValueError(f"contains a control character or line break (U+{ord(m.group()):04X}) at "
                         f"character {m.start() + 1}; write it as one line of plain text")
    return v


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Brand(_Section):
    color: str = "#1f6feb"
    background: str = "#f4f5f7"
    logo: str | None = None

    @field_validator("color", "background")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", v):
            raise ValueError("use a hex colour like #1f6feb")
        return v


class SMTPSettings(_Section):
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)  # a TCP port
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: str | None = Field(default=None, exclude=True)  # from NEWSLETTER_SMTP_PASSWORD only
    timeout: float = 30.0


class SendGridSettings(_Section):
    api_url: str = "https://api.sendgrid.com"
    api_key: str | None = Field(default=None, exclude=True, repr=False)  # SENDGRID_API_KEY only
    asm_group_id: int | None = None
    batch_size: int = Field(default=1000, ge=1, le=1000)


class Settings(_Section):
    name: str = "Newsletter"
    language: str = "en"
    from_name: str | None = None
    from_email: str = "newsletter@example.com"
    reply_to: str | None = None
    postal_address: str | None = None
    unsubscribe_url: str | None = None  # template with {email} and {token}
    unsubscribe_mailto: str | None = None
    view_online_url: str | None = None  # template with {issue}
    preview: list[str] = Field(default_factory=list)
    provider: Literal["sendgrid", "smtp"] = "sendgrid"  # used by --send; without it, a dry run
    brand: Brand = Field(default_factory=Brand)
    smtp: SMTPSettings = Field(default_factory=SMTPSettings)
    sendgrid: SendGridSettings = Field(default_factory=SendGridSettings)
    secret: str | None = Field(default=None, exclude=True, repr=False)  # NEWSLETTER_SECRET only
    state_dir: Path = Path(".newsletter")
    retry_attempts: int = Field(default=5, ge=1, le=20)  # per batch, first try included
    retry_backoff: float = Field(default=2.0, ge=0)  # seconds before the 2nd try; doubles
    root: Path = Path(".")
    path: Path | None = None

    @field_validator("name", "from_name", "postal_address")
    @classmethod
    def _header_text(cls, v: str | None) -> str | None:
        return _one_line(v)

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
        _fields(v, {"email", "token"})
        if "{token}" not in v:
            raise ValueError("must contain {token}: without it anyone could unsubscribe anyone")
        return v

    @field_validator("view_online_url")
    @classmethod
    def _view_online(cls, v: str | None) -> str | None:
        if v is not None:
            if not v.startswith(("https://", "http://")):
                raise ValueError("must be an http(s) URL")
            _fields(v, {"issue"})
        return v

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    def line_of(self, key: str) -> int | None:
        """Line of `key = ...` in newsletter.toml, for located messages."""
        if self.path is None or not self.path.is_file():
            return None
        return _line_of(self.path.read_text(encoding="utf-8"), key)


def _fields(template: str, allowed: set[str]) -> None:
    """Refuse {placeholders} other than `allowed` (and broken braces) in a URL template."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"{e}; write a literal brace as {{{{ or }}}}") from None
    if names - allowed:
        raise ValueError(f"unknown placeholder {{{sorted(names - allowed)[0]}}}; use "
                         + " and ".join("{" + a + "}" for a in sorted(allowed)))


# environment variable -> (section or None, key); applied over the file
ENV_OVERRIDES: dict[str, tuple[str | None, str]] = {
    "NEWSLETTER_NAME": (None, "name"),
    "NEWSLETTER_LANGUAGE": (None, "language"),
    "NEWSLETTER_FROM_NAME": (None, "from_name"),
    "NEWSLETTER_FROM_EMAIL": (None, "from_email"),
    "NEWSLETTER_REPLY_TO": (None, "reply_to"),
    "NEWSLETTER_POSTAL_ADDRESS": (None, "postal_address"),
    "NEWSLETTER_UNSUBSCRIBE_URL": (None, "unsubscribe_url"),
    "NEWSLETTER_UNSUBSCRIBE_MAILTO": (None, "unsubscribe_mailto"),
    "NEWSLETTER_VIEW_ONLINE_URL": (None, "view_online_url"),
    "NEWSLETTER_PROVIDER": (None, "provider"),
    "NEWSLETTER_SECRET": (None, "secret"),
    "NEWSLETTER_STATE_DIR": (None, "state_dir"),
    "NEWSLETTER_RETRY_ATTEMPTS": (None, "retry_attempts"),
    "NEWSLETTER_RETRY_BACKOFF": (None, "retry_backoff"),
    "NEWSLETTER_SMTP_HOST": ("smtp", "host"),
    "NEWSLETTER_SMTP_PORT": ("smtp", "port"),
    "NEWSLETTER_SMTP_USERNAME": ("smtp", "username"),
    "NEWSLETTER_SMTP_PASSWORD": ("smtp", "password"),
    "NEWSLETTER_SMTP_SECURITY": ("smtp", "security"),
    "SENDGRID_API_KEY": ("sendgrid", "api_key"),
    "SENDGRID_API_URL": ("sendgrid", "api_url"),
}


def find_config(start: Path | None = None) -> Path | None:
    """newsletter.toml in the current directory (the project root), or None."""
    candidate = start / CONFIG_NAME if start else Path(CONFIG_NAME)
    return candidate if candidate.is_file() else None


def _line_of(text: str, key: str) -> int | None:
    m = re.search(rf"^\s*{re.escape(key)}\s*=", text, re.MULTILINE)
    return text.count("\n", 0, m.start()) + 1 if m else None


def load_settings(path: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read newsletter.toml (if any) and apply environment overrides."""
    env = dict(os.environ if env is None else env)
    path = path or find_config()
    data: dict = {}
    text = ""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: no such configuration file; create it or drop --config")
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}; fix the TOML syntax") from None
        top = data.pop("newsletter", {})
        data = {**top, **data}
        for table in [data, *(v for v in data.values() if isinstance(v, dict))]:
            for key in list(table):
                if key in SECRET_KEYS:
                    raise ConfigError(
                        f"{path}:{_line_of(text, key)}: {key}: secrets are read only from the "
                        "environment; remove it from the file and set the environment variable"
                    )
    from_env: dict[tuple[str, ...], str] = {}  # setting -> the variable it came from, for messages
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            target = data.setdefault(section, {}) if section else data
            target[key] = env[var]
            from_env[(section, key) if section else (key,)] = var
    if env.get("NEWSLETTER_PREVIEW_TO"):
        data["preview"] = [a.strip() for a in env["NEWSLETTER_PREVIEW_TO"].split(",") if a.strip()]
        from_env[("preview",)] = "NEWSLETTER_PREVIEW_TO"
    root = path.parent if path else Path.cwd()
    data["root"] = root
    data["path"] = path
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            origin = from_env.get(tuple(map(str, err["loc"][:2]))) or from_env.get((str(err["loc"][0]),))
            line = _line_of(text, str(err["loc"][-1])) if text and not origin else None
            where = (f"environment variable {origin}" if origin else f"{path}:{line}" if line
                     else f"{path or 'environment'}")
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown setting; check the spelling (see Configuration in README.md)"
            lines.append(f"{where}: {loc}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    if not settings.state_dir.is_absolute():
        settings.state_dir = root / settings.state_dir
    return settings
