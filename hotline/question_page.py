"""A question's page: audio, transcript and correction, caller history, notes, tags, closing."""

from __future__ import annotations

from hotline.workspace import bp  # noqa: F401  (routes are added to the workspace blueprint)
