"""newsletter: from an issue file in git to every subscriber's inbox.

The library the command line is a thin layer over. What a script may import, from here:

    from newsletter import load_settings, prepare, Campaign
    settings = load_settings()                      # newsletter.toml + environment
    prepared = prepare(Path("issues/2021-03.yaml"), settings)   # validate, render once, check
    campaign = Campaign(prepared, settings, "digest")
    print(campaign.plan().recipients)               # who would get it now
    report = campaign.send()                        # exactly once; resumable

Names load on first use, so that `import newsletter` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    "Settings": "config", "load_settings": "config", "find_config": "config",
    "Issue": "issue", "load_issue": "issue", "parse_issue": "issue",
    "Renderer": "render", "Rendered": "message",
    "Envelope": "message", "Personalization": "message", "BatchResult": "message",
    "Prepared": "pipeline", "prepare": "pipeline", "write_rendered": "pipeline",
    "sample_message": "personalize", "html_size": "personalize",
    "Subscriber": "subscribers", "SubscriberList": "subscribers",
    "Campaign": "campaign", "Plan": "campaign", "SendReport": "dispatch", "StopFlag": "dispatch",
    "SendRecord": "ledger", "DeliveryRecord": "ledger", "NoRecord": "ledger",
    "Store": "store", "open_store": "store", "Suppressions": "suppressions", "Suppression": "suppressions",
    "Provider": "providers", "ProviderSpec": "providers",
    "init_project": "scaffold",
    "compat_report": "compat", "CompatReport": "compat", "build_archive": "archive", "Archive": "archive",
    "NewsletterError": "errors", "ConfigError": "errors", "IssueError": "errors",
    "SubscriberListError": "errors", "UsageError": "errors", "Problem": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'newsletter' has no attribute {name!r}")


if TYPE_CHECKING:
    from .archive import Archive, build_archive
    from .campaign import Campaign, Plan
    from .compat import CompatReport, compat_report
    from .config import Settings, find_config, load_settings
    from .dispatch import SendReport, StopFlag
    from .errors import ConfigError, IssueError, NewsletterError, Problem, SubscriberListError, UsageError
    from .issue import Issue, load_issue, parse_issue
    from .ledger import DeliveryRecord, NoRecord, SendRecord
    from .store import Store, open_store
    from .suppressions import Suppression, Suppressions
    from .message import BatchResult, Envelope, Personalization, Rendered
    from .personalize import html_size, sample_message
    from .pipeline import Prepared, prepare, write_rendered
    from .providers import Provider, ProviderSpec
    from .render import Renderer
    from .scaffold import init_project
    from .subscribers import Subscriber, SubscriberList
