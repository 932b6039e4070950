"""The HTTP layer: a thin FastAPI app over :class:`tokenward.app.service.AuthService`."""

from tokenward.web.app import create_app

__all__ = ["create_app"]
