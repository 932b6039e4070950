"""tokenward: short-lived JWT access tokens and rotating refresh tokens, done right."""

__version__ = "0.1.0"

__all__ = ["__version__"]
