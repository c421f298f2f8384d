"""The audit log page, for coordinators."""

from __future__ import annotations

from hotline.workspace import bp  # noqa: F401  (routes are added to the workspace blueprint)
