"""The gateway's errors: one exception carrying the HTTP status and the OpenAI-style body it is answered with.

Shared by `modelsat serve` and `modelsat.Client` (which raises it), so it imports nothing of Starlette.
"""
from __future__ import annotations


class GatewayError(Exception):
    """A request the gateway cannot serve: `status` (4xx: the request; 502/504: every upstream attempt failed; 429:
    every attempt was rate-limited; 503: the gateway is shutting down), `param` the request field at fault,
    `headers` to send along (e.g. Retry-After)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 attempts: list[dict] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.attempts = status, message, kind, param, attempts
        self.headers = headers or {}

    def body(self) -> dict:
        """The OpenAI-style error body: {"error": {"message", "type", "param", "code", "attempts"?}}."""
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}
        if self.attempts is not None:
            error["attempts"] = self.attempts
        return {"error": error}


def bad_request(message: str, param: str | None = None, status: int = 400) -> GatewayError:
    """A 4xx for the request's fault, naming the field `param`."""
    return GatewayError(status, message, param=param)
