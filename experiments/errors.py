"""The one exception type the command line turns into a clear message instead of a stack trace."""
from __future__ import annotations


class GbdError(RuntimeError):
    """A user-facing failure: missing file or model, unknown architecture, bad option, bad numbers."""
