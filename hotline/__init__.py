"""Halyq Uni hotline: the Flask application (webhooks, CLI, jobs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from hotline.config import Settings


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Create the hotline app (see hotline.app.create_app)."""
    from hotline.app import create_app as factory

    return factory(config)
