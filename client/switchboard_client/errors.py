"""The one error the client raises: the server's code and message, or a transport failure."""


class SwitchboardError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status  # HTTP status; 0 when the server could not be reached
        self.code = code
        self.message = message
