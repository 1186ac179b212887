"""The query service (FastAPI): ``create_app(config)``; ``ragline serve`` runs it with uvicorn."""

from ragline.service.app import create_app

__all__ = ["create_app"]
