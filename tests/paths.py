"""Paths the tests share (a plain module, not a pytest plugin: conftest.py imports it early)."""

from pathlib import Path

# Where the browser tests leave their screenshots (tests/browser/conftest.py).
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
