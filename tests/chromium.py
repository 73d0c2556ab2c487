"""Debian's Chromium, headless, for the browser tests (driven by Playwright in conftest.py)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from support import on_ci

# Headless Debian Chromium as root: no sandbox, and nothing that reaches for the network.
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root, in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


def need_chromium() -> None:
    """Skip the calling test module without Playwright and Chromium; on CI, fail it instead."""
    if importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is missing: pip install -e '.[test]'"
    elif not CHROMIUM.exists():
        missing = f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM=path)"
    else:
        return
    if on_ci():
        pytest.fail(f"browser tests cannot run on CI: {missing}", pytrace=False)
    pytest.skip(missing, allow_module_level=True)
