"""newsletter: from an issue file in git to every subscriber's inbox."""

__version__ = "0.1.0"
