from .base import Context
from .info import InfoNamespace
from .job import JobNamespace

__all__ = ["Context", "InfoNamespace", "JobNamespace"]
