"""Switchboard: a realtime event server. Publish over HTTP, listen over Socket.IO."""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
__version__ = "0.1.0"
