"""The awaited channel transport: every call over one WebSocket to the agent, many in flight at once.

A thin I/O layer over `channel.ChannelState`: it opens the link on the first call, reads frames in a
task of its own and feeds each to the state, and drives each call's flow (`ChannelState.exchange`):
sending the frames it yields and awaiting the waits. When the link drops it opens a new one with
backoff (for `retry_for` seconds) and sends every unanswered call again under its seq; the agent's
ledger runs each at most once. An agent without a channel (its upgrade answers 404) is called
through `fallback`, HTTP, instead.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import websockets
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from protocol import AgentError, AgentUnreachableError, ErrorDetail, ProtocolError
from protocol.channel import CHANNEL_PATH, MAX_FRAME, PING_INTERVAL, SESSION_PARAMETER, FrameError
from protocol.models import AgentInfo

from ..channel import (
    ChannelState,
    ChannelUnavailable,
    Flow,
    Wait,
    channel_url,
    refused_upgrade,
    relink_pause,
    upgrade_refusal,
)
from ..transport import AsyncTransport, Call, Reply
from ..wire import CONNECT_TIMEOUT, RETRY_FOR, Backoff, ssl_context


class AsyncChannelTransport:
    """Calls the agent at `url` over its channel, awaited; `pipeline=False` makes every send wait for its answer."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        verify: bool | str = True,
        retry_for: float = RETRY_FOR,
        pipeline: bool = True,
        ping_interval: float = PING_INTERVAL,
        fallback: AsyncTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._ws_url = channel_url(self.url)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl = ssl_context(verify, self.url) if self.url.startswith("https:") else None
        self.retry_for = retry_for
        self.ping_interval = ping_interval
        self.fallback = fallback
        self.state = ChannelState(pipeline=pipeline)
        self._broken: BaseException | None = None
        """Why the link was given up (or the client closed), once it has been."""
        self._session: str | None = None
        self._link: ClientConnection | None = None
        self._linked = asyncio.Event()
        self._linking: asyncio.Lock | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._waiting = 0
        self._fell_back = False
        self._closed = False

    async def call(self, call: Call) -> Reply:
        if self._fell_back or (await self._ensure_link(call.call_id.session) and self._fell_back):
            assert self.fallback is not None
            return await self.fallback.call(call)
        reply: Reply = await self._drive(self.state.exchange(call))
        return reply

    async def flush(self, descriptor: int | None = None) -> list[ErrorDetail]:
        """Wait until every pipelined send (of one socket, or all) has its answer; the failures among them."""
        if self._fell_back:
            return []
        failures: list[ErrorDetail] = await self._drive(self.state.flushing(descriptor))
        return failures

    async def identity(self) -> AgentInfo:
        if self._fell_back or (await self._ensure_link(None) and self._fell_back):
            assert self.fallback is not None
            return await self.fallback.identity()
        assert self.state.info is not None
        return self.state.info

    @property
    def kind(self) -> str:
        """What carries the calls, for display."""
        return "http (the agent has no channel)" if self._fell_back else "channel"

    async def aclose(self) -> None:
        self._closed = True
        if self._link is not None and self._broken is None:
            try:
                for data in self.state.farewell():
                    await self._link.send(data)
            except ConnectionClosed:
                pass  # the agent gives back what it kept of the streams either way: from what it last heard
        await self._give_up(AgentUnreachableError(f"{CHANNEL_PATH} (agent {self.url}): the client was closed"))
        if self._reader is not None:
            self._reader.cancel()
        if self._link is not None:
            await self._link.close()
        if self.fallback is not None:
            await self.fallback.aclose()

    async def _drive(self, flow: Flow) -> Any:
        """Run a flow of the state: send what it yields, await its waits, throw in what went wrong."""
        try:
            step = next(flow)
            while True:
                try:
                    if isinstance(step, Wait):
                        value = await self._until(step)
                    else:
                        await self._send(step)
                        value = True
                except BaseException as exc:  # noqa: BLE001 - handed to the flow, which cleans up and raises it
                    step = flow.throw(exc)
                else:
                    step = flow.send(value)
        except StopIteration as done:
            return done.value

    async def _until(self, wait: Wait) -> bool:
        if wait.ready():
            return True
        self._waiting += 1
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: wait.ready() or self._broken is not None), wait.timeout
                )
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1
        if self._broken is not None and not wait.ready():
            raise self._broken
        return True

    async def _send(self, data: bytes) -> None:
        while True:
            await self._linked.wait()
            if self._broken is not None:
                raise self._broken
            link = self._link
            assert link is not None
            try:
                await link.send(data)
                return
            except ConnectionClosed:
                await asyncio.sleep(0)  # the reader sees the same close and links again; then this goes again

    async def _ensure_link(self, session: str | None) -> bool:
        """Link if not linked yet; True when this call made the first link (or found there is none)."""
        if self._closed:
            raise AgentUnreachableError(f"{CHANNEL_PATH} (agent {self.url}): the client was closed")
        if self._broken is not None and self._reader is None:  # given up before: try afresh, as a new client would
            self._broken = None
            self._linked.clear()
        if self._linked.is_set() or self._reader is not None:
            return False
        if self._linking is None:
            self._linking = asyncio.Lock()
        async with self._linking:
            if self._linked.is_set() or self._reader is not None:
                return False
            self._session = session or secrets.token_hex(8)
            try:
                await self._link_with_backoff()
            except ChannelUnavailable:
                if self.fallback is None:
                    raise AgentUnreachableError(f"the agent at {self.url} has no channel; use HTTP") from None
                self._fell_back = True
                return True
            self._reader = asyncio.ensure_future(self._read())
            return True

    async def _link_with_backoff(self) -> None:
        backoff: Backoff | None = None
        where = f"{CHANNEL_PATH} (agent {self.url})"
        due = self.state.answer_due(self.retry_for)  # calls a dropped link carried wait for an agent back
        while True:
            try:
                await self._link_once()
                return
            except (FrameError, ValidationError) as exc:  # a hello that is no frame of ours, or no agent's identity
                raise ProtocolError(f"{where}: the agent's hello: {exc}") from None
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, EOFError) as exc:
                if (refusal := upgrade_refusal(exc)) is not None:
                    refused_upgrade(*refusal, where, due)
                backoff = backoff or Backoff(max(time.monotonic() + self.retry_for, due or 0.0))
                await asyncio.sleep(relink_pause(backoff, exc, where, refusal))

    async def _link_once(self) -> None:
        link = await websockets.connect(
            f"{self._ws_url}?{SESSION_PARAMETER}={self._session}",
            additional_headers=self._headers,
            ssl=self._ssl,
            max_size=MAX_FRAME,
            compression=None,
            open_timeout=CONNECT_TIMEOUT,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            close_timeout=1,
            user_agent_header=None,
        )
        try:
            hello = await asyncio.wait_for(link.recv(), CONNECT_TIMEOUT)
            if not isinstance(hello, bytes):
                raise ProtocolError(f"{CHANNEL_PATH} (agent {self.url}): the agent's first frame is not binary")
            self.state.received(hello)
        except BaseException:
            await link.close()
            raise
        self._link = link
        for data in self.state.unanswered():  # what the last link left unanswered, under the same seqs
            await link.send(data)
        self._linked.set()

    async def _read(self) -> None:
        while not self._closed:
            link = self._link
            assert link is not None
            try:
                async for data in link:
                    if isinstance(data, bytes):
                        self.state.received(data)
                        await self._wake()
            except ConnectionClosed:
                pass
            except FrameError as exc:
                await self._give_up(ProtocolError(f"{CHANNEL_PATH} (agent {self.url}): {exc}"))
                await link.close()
                self._reader = None
                return
            if self._closed:
                return
            self._linked.clear()
            try:
                await self._link_with_backoff()
            except (AgentError, OSError, ChannelUnavailable) as exc:
                await self._give_up(exc if isinstance(exc, AgentError | OSError) else AgentUnreachableError(str(exc)))
                self._reader = None
                return
            await self._wake()  # a relink may have changed what the waits wait for (a restarted agent's streams)

    async def _wake(self) -> None:
        if self._waiting:
            async with self._changed:
                self._changed.notify_all()

    async def _give_up(self, error: BaseException) -> None:
        """The link is gone for good: every caller waiting for an answer, for room or for the link gets `error`;
        pipelined sends without an answer are failures, raised by the next call on their socket."""
        self._broken = error
        self.state.abandon_posted(str(error))
        self._linked.set()  # wakes the writer and every caller parked on the link: they find `_broken`
        async with self._changed:
            self._changed.notify_all()
