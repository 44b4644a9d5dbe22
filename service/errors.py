"""One error base class carrying its HTTP status; handlers turn it into JSON."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    detail: Any = Field(description="What went wrong: a message, or a list of field errors.")


class KeikoError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(KeikoError):
    status_code = 400


class NotFound(KeikoError):
    status_code = 404


class Conflict(KeikoError):
    status_code = 409


class PayloadTooLarge(KeikoError):
    status_code = 413


class Unprocessable(KeikoError):
    status_code = 422


class ServiceUnavailable(KeikoError):
    status_code = 503


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error codes a route can answer."""
    text = {
        400: "Malformed request",
        404: "Not found",
        409: "Conflict with the current state",
        413: "Payload too large",
        422: "Invalid input",
        503: "A dependency is down",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}
