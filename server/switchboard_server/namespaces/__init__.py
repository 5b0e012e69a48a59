from .base import Context, SwitchboardServer
from .info import InfoNamespace
from .job import JobNamespace

__all__ = ["Context", "InfoNamespace", "JobNamespace", "SwitchboardServer"]
