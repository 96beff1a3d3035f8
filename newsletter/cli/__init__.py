"""The command line: parses, calls the library, prints, and decides every exit code.

Exit codes: 0 done; 1 invalid input or failed checks; 2 usage; 3 incomplete send (run it again);
70 a bug in newsletter; 130 interrupted.
"""

from . import editor, lists, preview, sending, serve  # noqa: F401  (each registers its commands on `cli`)
from .base import cli, main

__all__ = ["cli", "main"]
