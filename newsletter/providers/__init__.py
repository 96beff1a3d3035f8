"""Mail providers, registered in one place.

Each provider is a subpackage: its `__init__` declares a `SPEC` (name, its `[name]` table in
newsletter.toml, its environment variables, its batch size, whether it brings its own unsubscribe
link) and stays cheap to import; the client that really talks to the service is imported only when a
send needs it. The configuration, the command line and the campaign all read this registry, so adding
a provider means adding one subpackage and one line below.

The dry run is a provider too (dry_run.py, the default), but not a registered one: it has no settings
and is never chosen with --provider.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from pydantic import BaseModel

from ..errors import ConfigError
from .base import Provider


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    settings: type[BaseModel]  # validates the provider's [name] table of newsletter.toml
    client: str  # "module:Class" of the provider, imported only when a send needs it
    env: Mapping[str, str] = field(default_factory=dict)  # environment variable -> setting
    secrets: frozenset[str] = frozenset()  # settings read only from the environment
    batch_size: Callable[[Any], int] = lambda settings: 1  # recipients per provider call
    utf8_local_parts: bool = True  # can deliver to пользователь@… (SMTPUTF8); lists are checked for it
    # the tag this provider replaces with its own unsubscribe link (SendGrid's groups), when set up
    own_unsubscribe: Callable[[Any], str | None] = lambda settings: None

    def create(self, settings: Any) -> Provider:
        """The provider, set up with its validated settings (a missing key fails here)."""
        module, _, name = self.client.partition(":")
        cls: Callable[[Any], Provider] = getattr(import_module(module, __name__), name)
        return cls(settings)


def _registered() -> dict[str, ProviderSpec]:
    from . import sendgrid, smtp

    return {spec.name: spec for spec in (sendgrid.SPEC, smtp.SPEC)}


REGISTRY: dict[str, ProviderSpec] = _registered()


def names() -> list[str]:
    return list(REGISTRY)


def spec(name: str) -> ProviderSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}; use one of: {', '.join(REGISTRY)}") from None


__all__ = ["Provider", "ProviderSpec", "REGISTRY", "names", "spec"]
