"""ASGI middleware in front of every route: the token check and the boot id on every response."""

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol import BOOT_HEADER, HEALTH_PATH, ErrorBody, ErrorCode, ErrorDetail

_HINT = "pass the token the agent printed at start as the header 'Authorization: Bearer <token>'"


class Gate:
    """Refuses any call without the right bearer token (401) before anything else is looked at."""

    def __init__(self, app: ASGIApp, token: str, boot_id: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.boot = (BOOT_HEADER.lower().encode(), boot_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_boot(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.boot]
            await send(message)

        if scope["path"] != HEALTH_PATH:
            problem = self._check(scope)
            if problem:
                await _unauthorized(problem, send_with_boot)
                return
        await self.app(scope, receive, send_with_boot)

    def _check(self, scope: Scope) -> str | None:
        given = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        if given is None:
            return f"missing token: {_HINT}"
        if not hmac.compare_digest(given, self.expected):
            return f"wrong token: {_HINT}"
        return None


async def _unauthorized(message: str, send: Send) -> None:
    body = ErrorBody(error=ErrorDetail(code=ErrorCode.UNAUTHORIZED, message=message)).to_json().encode()
    await send({
        "type": "http.response.start",
        "status": ErrorCode.UNAUTHORIZED.status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="engee-agent"'),
        ],
    })
    await send({"type": "http.response.body", "body": body})
