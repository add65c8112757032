"""The awaited channel transport: every call over one WebSocket to the agent, many in flight at once.

A thin I/O layer over `channel.ChannelState`: it opens the link on the first call, reads frames in a
task of its own and hands each answer to the call waiting for it, and pipelines sends. When the
link drops it opens a new one with backoff (for `retry_for` seconds) and sends every unanswered
call again under its seq; the agent's ledger runs each at most once. An agent without a channel
(its upgrade answers 404) is called through `fallback`, HTTP, instead.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

import websockets
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from protocol import (
    METHODS,
    AgentError,
    AgentUnreachableError,
    ErrorBody,
    ErrorCode,
    ErrorDetail,
    ProtocolError,
    exception_for,
)
from protocol.channel import CHANNEL_PATH, MAX_FRAME, PING_INTERVAL, SESSION_PARAMETER, FrameError
from protocol.errors import RESTARTED
from protocol.models import AgentInfo, ReceiveResponse

from ..channel import ChannelState
from ..transport import AsyncTransport, Call, Reply
from ..wire import CONNECT_TIMEOUT, RETRY_FOR, Backoff, ssl_context

_CLOSES = frozenset({METHODS.close.name})


class ChannelUnavailable(Exception):
    """The agent has no channel: its upgrade was answered 404."""


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
        scheme, _, rest = self.url.partition("://")
        self._ws_url = {"http": "ws", "https": "wss"}.get(scheme, scheme) + "://" + rest + CHANNEL_PATH
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl = ssl_context(verify, self.url) if scheme == "https" else None
        self.retry_for = retry_for
        self.pipeline = pipeline
        self.ping_interval = ping_interval
        self.fallback = fallback
        self.state = ChannelState()
        self._broken: BaseException | None = None
        """Why the link was given up (or the client closed), once it has been."""
        self._session: str | None = None
        self._link: ClientConnection | None = None
        self._linked = asyncio.Event()
        self._linking: asyncio.Lock | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[int, asyncio.Future[Reply]] = {}
        self._answers = asyncio.Condition()
        self._blocked = 0
        """Callers waiting for a pipelined send's answer (room in a window, or a drain)."""
        self._fell_back = False
        self._closed = False

    async def call(self, call: Call) -> Reply:
        if self._fell_back or (await self._ensure_link(call.call_id.session) and self._fell_back):
            assert self.fallback is not None
            return await self.fallback.call(call)
        for seq in call.call_id.cancel:
            await self._send(self.state.cancel(seq))
        descriptor = getattr(call.request, "descriptor", None)
        if call.boot and self.state.info and call.boot != self.state.info.boot_id and descriptor is not None:
            return Reply(_restarted(call), self._boot())  # what the agent would answer, known here already
        if descriptor is not None:
            if call.method.name in _CLOSES:
                await self._drain(descriptor)
            elif (failure := self.state.failure(descriptor)) is not None:
                return Reply(failure, self._boot())
        if self.pipeline and call.method is METHODS.send and descriptor is not None:
            return await self._post(call, descriptor)
        if self.state.streams(call):
            return await self._receive(call)
        reply = await self._request(call)
        if descriptor is not None and call.method.name in _CLOSES and (failure := self.state.failure(descriptor)):
            return Reply(failure, reply.boot)  # closed, and the send that failed before is raised
        return reply

    async def flush(self, descriptor: int | None = None) -> list[ErrorDetail]:
        """Wait until every pipelined send (of one socket, or all) has its answer; the failures among them."""
        await self._drain(descriptor)
        if descriptor is not None:
            failure = self.state.failure(descriptor)
            return [failure] if failure else []
        return self.state.failures()

    async def identity(self) -> AgentInfo:
        if self._fell_back or (await self._ensure_link(None) and self._fell_back):
            assert self.fallback is not None
            return await self.fallback.identity()
        assert self.state.info is not None
        return self.state.info

    async def aclose(self) -> None:
        self._closed = True
        await self._give_up(AgentUnreachableError(f"{CHANNEL_PATH} (agent {self.url}): the client was closed"))
        if self._reader is not None:
            self._reader.cancel()
        if self._link is not None:
            await self._link.close()
        if self.fallback is not None:
            await self.fallback.aclose()

    async def _request(self, call: Call) -> Reply:
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        seq = call.call_id.seq
        self._waiters[seq] = waiter
        try:
            await self._send(self.state.frame(call))
            return await waiter
        except BaseException:
            self.state.forget(seq)  # interrupted or failed: not sent again after a new link
            raise
        finally:
            self._waiters.pop(seq, None)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: a failure given to a caller that left is not logged as lost

    async def _receive(self, call: Call) -> Reply:
        """A receive answered from its socket's stream, waiting at most the call's `wait` for data to arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + getattr(call.request, "wait", 0.0)
        while True:
            reply, frames = self.state.receive(call)
            for frame in frames:
                await self._send(frame)
            if reply is not None:
                return reply
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Reply(ReceiveResponse(pending=True), self._boot())
            self._blocked += 1
            try:
                async with self._answers:
                    await asyncio.wait_for(self._answers.wait(), min(remaining, self.state.touch_every()))
            except TimeoutError:  # the agent hears of a wait as of a call: a socket waited on is not idle
                if again := self.state.grant_again(call):
                    await self._send(again)
            finally:
                self._blocked -= 1
            if self._broken is not None:
                raise self._broken

    async def _post(self, call: Call, descriptor: int) -> Reply:
        size = len(getattr(call.request, "data", b""))
        await self._until(lambda: self.state.room(descriptor, size))
        if (failure := self.state.failure(descriptor)) is not None:  # answered while this send waited for room
            return Reply(failure, self._boot())
        reply = self.state.post(call, descriptor)
        await self._send(self.state.frame(call))
        return reply

    async def _drain(self, descriptor: int | None) -> None:
        await self._until(lambda: not self.state.in_flight(descriptor))

    async def _until(self, ready: Callable[[], bool]) -> None:
        if ready():
            return
        self._blocked += 1
        try:
            async with self._answers:
                await self._answers.wait_for(lambda: ready() or self._broken is not None)
        finally:
            self._blocked -= 1
        if self._broken is not None and not ready():
            raise self._broken

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

    def _boot(self) -> str | None:
        return self.state.info.boot_id if self.state.info else None

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
        while True:
            try:
                await self._link_once()
                return
            except (FrameError, ValidationError) as exc:  # a hello that is no frame of ours, or no agent's identity
                raise ProtocolError(f"{CHANNEL_PATH} (agent {self.url}): the agent's hello: {exc}") from None
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, EOFError) as exc:
                if isinstance(exc, InvalidStatus):
                    _refusal(exc, self.url)
                backoff = backoff or Backoff(time.monotonic() + self.retry_for)
                await asyncio.sleep(backoff.pause(exc, f"{CHANNEL_PATH} (agent {self.url})"))

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
            self._take(hello)
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
                        self._take(data)
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

    def _take(self, data: bytes) -> None:
        seq, reply = self.state.received(data)
        if seq is not None and reply is not None and (waiter := self._waiters.get(seq)) and not waiter.done():
            waiter.set_result(reply)

    async def _wake(self) -> None:
        if self._blocked:
            async with self._answers:
                self._answers.notify_all()

    async def _give_up(self, error: BaseException) -> None:
        """The link is gone for good: every caller waiting for an answer, for room or for the link gets `error`;
        pipelined sends without an answer are failures, raised by the next call on their socket."""
        self._broken = error
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self.state.abandon_posted(str(error))
        self._linked.set()  # wakes the writer and every caller parked on the link: they find `_broken`
        async with self._answers:
            self._answers.notify_all()


def _restarted(call: Call) -> ErrorDetail:
    return ErrorDetail(
        code=ErrorCode.AGENT_RESTARTED,
        message=RESTARTED,
        method=call.method.name,
    )


def _refusal(exc: InvalidStatus, url: str) -> None:
    """Raise what an upgrade refused by the agent means: no channel, a bad token, a refused origin or host."""
    status = exc.response.status_code
    if status == 404:
        raise ChannelUnavailable() from None
    try:
        detail = ErrorBody.model_validate_json(exc.response.body or b"").error
    except ValueError:
        if status >= 500:
            return  # a proxy's trouble: try again
        detail = ErrorDetail(code=ErrorCode.BAD_REQUEST, message=f"the upgrade was refused with HTTP {status}")
    raise exception_for(detail, f"{CHANNEL_PATH} (agent {url})") from None
