"""One error type, rendered as {"error": {"code", "message"}} over HTTP and on sockets."""

from __future__ import annotations

from pydantic import ValidationError

ErrorBody = dict[str, dict[str, str]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> ErrorBody:
        return {"error": {"code": self.code, "message": self.message}}


def invalid_payload(message: str) -> ApiError:
    return ApiError(400, "invalid_payload", message)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, "not_found", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def unavailable(message: str = "the store is unavailable, try again") -> ApiError:
    return ApiError(503, "unavailable", message)


def from_validation(exc: ValidationError) -> ApiError:
    """The first problem, naming the field: 'progress: Input should be ...'."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return invalid_payload("invalid payload")
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    message = f"{loc}: {first['msg']}" if loc else str(first["msg"])
    return invalid_payload(message)
