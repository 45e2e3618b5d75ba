"""Where mer keeps what it caches: ``$XDG_CACHE_HOME/mer/<name>`` (``~/.cache/mer/<name>``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """``$XDG_CACHE_HOME``, or ``~/.cache`` when it is unset or empty (the XDG rule)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"))


def mer_cache(name: str) -> Path:
    """One of mer's cache folders (``features``, ``whisper``, ``models``, ``text_states``)."""
    return cache_home() / "mer" / name
