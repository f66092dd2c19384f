"""``python -m bikesense``: the same as the ``bikesense`` command."""

from bikesense.cli import app

app()
