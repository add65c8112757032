"""The awaited HTTP transport: `sync/http.py` as coroutines; concurrent calls each get a connection of their own."""

from __future__ import annotations

import asyncio
import time

import httpx

from protocol import ErrorDetail
from protocol.models import AgentInfo

from ..transport import Call, Reply
from ..wire import LIMITS, RETRY_FOR, Backoff, Resend, Wire, ssl_context


class AsyncHttpTransport:
    """Calls the agent at `url` over HTTP, awaited; `retry_for` seconds of retries after transport failures."""

    kind = "http"
    """What carries the calls, for display."""

    def __init__(self, url: str, token: str, *, verify: bool | str = True, retry_for: float = RETRY_FOR) -> None:
        self.wire = Wire(url, token)
        self.url = self.wire.url
        self.retry_for = retry_for
        self._pool = httpx.AsyncHTTPTransport(verify=ssl_context(verify, self.url), limits=LIMITS)

    async def call(self, call: Call) -> Reply:
        return self.wire.reply(call, await self._send(self.wire.request(call), call))

    async def identity(self) -> AgentInfo:
        return self.wire.identity(await self._send(self.wire.identity_request(), None))

    async def flush(self, descriptor: int | None = None) -> list[ErrorDetail]:
        """Nothing to wait for: every HTTP call waits for its own answer."""
        return []

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def _send(self, request: httpx.Request, call: Call | None) -> httpx.Response:
        backoff, resend = None, Resend(call, self.retry_for)
        while True:
            try:
                reply = await self._pool.handle_async_request(request)
                try:
                    await reply.aread()
                finally:
                    await reply.aclose()
            except httpx.TransportError as exc:
                backoff = backoff or Backoff(time.monotonic() + self.retry_for)  # from the first failure
                await asyncio.sleep(backoff.pause(exc, self.wire.where(call)))
                continue
            if (pause := resend.pause(reply)) is None:
                return reply
            await asyncio.sleep(pause)
