"""The client's transports: one call of the method table over HTTP to one agent, blocking or awaited.

Each is a thin I/O layer over `wire.Wire`, which builds every request and reads every reply: it
sends, reads the body, and on a transport failure sends the same request again as `wire.Backoff`
says. Both drive httpx's transport layer directly: the agent needs none of `httpx.Client`'s
cookies, redirects or hooks, and skipping them takes a third off every call's latency.

Every call carries an id; after a transport failure the same id is sent again with backoff, so
the agent runs it at most once and an answer lost on the way is fetched again, not redone.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from protocol import Method
from protocol.models import Request, Response

from .wire import CALL_TIMEOUT, CONNECT_TIMEOUT, LIMITS, RETRY_FOR, Backoff, Wire, ssl_context

__all__ = ["CALL_TIMEOUT", "CONNECT_TIMEOUT", "RETRY_FOR", "AsyncHttpTransport", "HttpTransport"]


class _Transport:
    def __init__(self, url: str, token: str, *, verify: bool | str = True, retry_for: float = RETRY_FOR) -> None:
        self.wire = Wire(url, token)
        self.url = self.wire.url
        self.calls = self.wire.calls
        self.retry_for = retry_for
        self._pool = self._pool_type(verify=ssl_context(verify, self.url), limits=LIMITS)

    _pool_type: type[httpx.HTTPTransport] | type[httpx.AsyncHTTPTransport]


class HttpTransport(_Transport):
    """Calls an agent's endpoints over pooled keep-alive connections, blocking."""

    _pool_type = httpx.HTTPTransport

    def call(self, method: Method, request: Request, *, boot: str | None = None,
             seq: int | None = None) -> tuple[Response, str | None]:
        """Run one method on the agent as call `seq` (a new one by default); returns the result and boot id.

        On KeyboardInterrupt a call given its `seq` stays open: calling again with that `seq` collects its answer.
        """
        with self.calls.number(seq) as seq:
            reply = self._send(self.wire.request(method, request, boot, seq), method, request)
        return self.wire.result(method, request, reply)

    def identity(self) -> bytes:
        """The body of the agent's identity endpoint."""
        return self.wire.identity(self._send(self.wire.identity_request()))

    def close(self) -> None:
        self._pool.close()

    def _send(self, request: httpx.Request, method: Method | None = None,
              call: Request | None = None) -> httpx.Response:
        backoff = None
        while True:
            try:
                reply = self._pool.handle_request(request)
                try:
                    reply.read()
                finally:
                    reply.close()
                return reply
            except httpx.TransportError as exc:
                backoff = backoff or Backoff(time.monotonic() + self.retry_for)  # from the first failure
                time.sleep(backoff.pause(exc, self.wire.where(method, call)))


class AsyncHttpTransport(_Transport):
    """The same as `HttpTransport`, awaited: concurrent calls each get a connection of their own."""

    _pool_type = httpx.AsyncHTTPTransport

    async def call(self, method: Method, request: Request, *, boot: str | None = None,
                   seq: int | None = None) -> tuple[Response, str | None]:
        """`HttpTransport.call`, awaited; cancelled, a call given its `seq` stays open, as on KeyboardInterrupt."""
        with self.calls.number(seq) as seq:
            reply = await self._send(self.wire.request(method, request, boot, seq), method, request)
        return self.wire.result(method, request, reply)

    async def identity(self) -> bytes:
        """The body of the agent's identity endpoint."""
        return self.wire.identity(await self._send(self.wire.identity_request()))

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def _send(self, request: httpx.Request, method: Method | None = None,
                    call: Request | None = None) -> httpx.Response:
        backoff = None
        while True:
            try:
                reply = await self._pool.handle_async_request(request)
                try:
                    await reply.aread()
                finally:
                    await reply.aclose()
                return reply
            except httpx.TransportError as exc:
                backoff = backoff or Backoff(time.monotonic() + self.retry_for)  # from the first failure
                await asyncio.sleep(backoff.pause(exc, self.wire.where(method, call)))
