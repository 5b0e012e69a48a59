"""Python client for Switchboard: SwitchboardClient (sockets), AsyncAdmin and Admin (HTTP)."""

from .admin import UNSET, Admin, AsyncAdmin
from .client import TERMINAL, SwitchboardClient
from .errors import Cancelled, SwitchboardError

__all__ = [
    "TERMINAL",
    "UNSET",
    "Admin",
    "AsyncAdmin",
    "Cancelled",
    "SwitchboardClient",
    "SwitchboardError",
]
