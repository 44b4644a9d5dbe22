"""A cap on request bodies, enforced while they stream in (ASGI middleware).

Every endpoint but the two uploads (which stream multipart bodies to disk under their own
caps, see `service.uploads`) gets at most `KEIKO_MAX_REQUEST_BYTES`: a declared
Content-Length above it is refused before a byte is read, and a chunked body is cut off as
soon as it passes it. Either way the answer is `413` and nothing is parsed.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Streamed by their routes, each under its own cap.
UPLOADS = {("POST", "/datasets"), ("POST", "/predict/files")}


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in UPLOADS:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                answer = JSONResponse({"detail": self._message(int(value))}, status_code=413)
                await answer(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # HTTPException passes FastAPI's body parsing untouched and becomes a 413.
                    raise HTTPException(413, detail=self._message(received, at_least=True))
            return message

        await self.app(scope, limited, send)

    def _message(self, size: int, at_least: bool = False) -> str:
        more = "at least " if at_least else ""
        return (
            f"request body is {more}{size} bytes; the limit is {self.max_bytes} bytes "
            "(KEIKO_MAX_REQUEST_BYTES)"
        )
