"""``python -m ragline.cli …``: how the tests, benchmarks and the crash harness start the CLI."""

from ragline.cli import app

app()
