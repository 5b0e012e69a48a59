"""Switchboard: a realtime event server. Publish over HTTP, listen over Socket.IO."""

__version__ = "0.1.0"

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "__version__", "create_app"]
