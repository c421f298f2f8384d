"""Data layer of the hotline: models, repositories, migrations and engine set-up (no Flask)."""
