"""One error base class carrying its HTTP status; handlers turn it into JSON."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    detail: Any = Field(description="What went wrong: a message, or a list of field errors.")


class KeikoError(Exception):
    status_code = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class BadRequest(KeikoError):
    status_code = 400


class Unauthorized(KeikoError):
    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(KeikoError):
    status_code = 403


class NotFound(KeikoError):
    status_code = 404


class Conflict(KeikoError):
    status_code = 409


class PayloadTooLarge(KeikoError):
    status_code = 413


class Unprocessable(KeikoError):
    status_code = 422


class TooManyRequests(KeikoError):
    status_code = 429

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(message, headers=headers)


class ServiceUnavailable(KeikoError):
    status_code = 503


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error codes a route can answer."""
    text = {
        400: "Malformed request",
        401: "Missing or unknown API key",
        403: "The key may not do this",
        404: "Not found",
        409: "Conflict with the current state",
        413: "Payload too large",
        422: "Invalid input",
        429: "Too many requests, or too many active jobs",
        503: "A dependency is down",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}
