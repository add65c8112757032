"""The blocking channel transport: the awaited one (aio/channel.py), run on an event loop of its own.

The loop lives in a daemon thread, so the blocking client works the same from many threads at once
and inside a Jupyter cell, where the calling thread already runs a loop of its own. An interrupted
call (KeyboardInterrupt) is cancelled in that loop, and the next call cancels it on the agent.
At exit, pipelined sends still in flight are flushed, or a warning says how many were not.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from protocol import AgentError, ErrorDetail
from protocol.channel import PING_INTERVAL
from protocol.models import AgentInfo

from ..aio.channel import AsyncChannelTransport
from ..aio.http import AsyncHttpTransport
from ..transport import Call, Reply
from ..wire import RETRY_FOR

T = TypeVar("T")

EXIT_FLUSH = 10.0
"""Seconds an exiting process waits for its pipelined sends' answers."""


class ChannelTransport:
    """Calls the agent at `url` over its channel, blocking; HTTP when the agent has no channel."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        verify: bool | str = True,
        retry_for: float = RETRY_FOR,
        pipeline: bool = True,
        ping_interval: float = PING_INTERVAL,
        fallback: bool = True,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"engee channel {url}", daemon=True)
        self._thread.start()
        http = AsyncHttpTransport(url, token, verify=verify, retry_for=retry_for) if fallback else None
        self.channel = AsyncChannelTransport(
            url,
            token,
            verify=verify,
            retry_for=retry_for,
            pipeline=pipeline,
            ping_interval=ping_interval,
            fallback=http,
        )
        self.url = self.channel.url
        atexit.register(self._at_exit)

    def call(self, call: Call) -> Reply:
        return self._run(self.channel.call(call))

    def identity(self) -> AgentInfo:
        return self._run(self.channel.identity())

    def flush(self, descriptor: int | None = None) -> list[ErrorDetail]:
        return self._run(self.channel.flush(descriptor))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        atexit.unregister(self._at_exit)
        self._run(self.channel.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _run(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()  # an interrupt: the call's task ends in the loop too
            raise

    def _at_exit(self) -> None:
        left = self.channel.state.in_flight()
        if not left or self._loop.is_closed():
            return
        try:
            failures = self._run(self.channel.flush(), EXIT_FLUSH)
        except (FutureTimeout, AgentError, OSError) as exc:
            print(
                f"engee_client: {left} pipelined sends to {self.url} may not have arrived: {exc or 'no answer'}",
                file=sys.stderr,
            )
            return
        for failure in failures:
            print(f"engee_client: a pipelined send to {self.url} failed: {failure.message}", file=sys.stderr)
