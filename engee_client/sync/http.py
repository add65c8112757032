"""The blocking HTTP transport: one call of the method table per request, over pooled keep-alive connections.

A thin I/O layer over `wire.Wire`, which builds every request and reads every reply. It drives
httpx's transport layer directly: the agent needs none of `httpx.Client`'s cookies, redirects or
hooks, and skipping them takes a third off every call's latency. On a transport failure it sends
the same request (the same call id) again as `wire.Backoff` says, so the agent runs the call at
most once and an answer lost on the way is fetched again, not redone.
"""

from __future__ import annotations

import time

import httpx

from protocol import ErrorDetail
from protocol.models import AgentInfo

from ..transport import Call, Reply
from ..wire import LIMITS, RETRY_FOR, Backoff, Resend, Wire, ssl_context


class HttpTransport:
    """Calls the agent at `url` over HTTP, blocking; `retry_for` seconds of retries after transport failures."""

    kind = "http"
    """What carries the calls, for display."""

    def __init__(self, url: str, token: str, *, verify: bool | str = True, retry_for: float = RETRY_FOR) -> None:
        self.wire = Wire(url, token)
        self.url = self.wire.url
        self.retry_for = retry_for
        self._pool = httpx.HTTPTransport(verify=ssl_context(verify, self.url), limits=LIMITS)

    def call(self, call: Call) -> Reply:
        return self.wire.reply(call, self._send(self.wire.request(call), call))

    def identity(self) -> AgentInfo:
        return self.wire.identity(self._send(self.wire.identity_request(), None))

    def flush(self, descriptor: int | None = None) -> list[ErrorDetail]:
        """Nothing to wait for: every HTTP call waits for its own answer."""
        return []

    def close(self) -> None:
        self._pool.close()

    def _send(self, request: httpx.Request, call: Call | None) -> httpx.Response:
        backoff, resend = None, Resend(call, self.retry_for)
        while True:
            try:
                reply = self._pool.handle_request(request)
                try:
                    reply.read()
                finally:
                    reply.close()
            except httpx.TransportError as exc:
                backoff = backoff or Backoff(time.monotonic() + self.retry_for)  # from the first failure
                time.sleep(backoff.pause(exc, self.wire.where(call)))
                continue
            if (pause := resend.pause(reply)) is None:
                return reply
            time.sleep(pause)
