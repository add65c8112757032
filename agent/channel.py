"""The channel transport: `/v1/channel`, a WebSocket carrying every method, as a thin adapter over the dispatcher.

Frames are those of protocol/channel.py. Each call runs as a task of its own, so a waiting receive
never delays another call; calls on one descriptor run one after another in a lane (reads in a lane
of their own), so they complete in the order they were sent. A channel's session keeps the sockets
it opened: when its client is gone and does not come back within `channel_grace` seconds, they are
closed, so a killed notebook does not hold them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from protocol import METHODS, AnyMethod, CallId, ErrorCode, ErrorDetail
from protocol.calls import valid_session
from protocol.channel import (
    CHANNEL_PATH,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_SESSION,
    CLOSE_UNSUPPORTED,
    MAX_FRAME,
    SESSION_PARAMETER,
    CallFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameError,
    GrantFrame,
    HelloFrame,
    ResultFrame,
    decode,
    encode_parts,
)
from protocol.models import Request
from tap import TAP, Tap

from .dispatch import Dispatcher, error_detail
from .eager import eager
from .gate import GATEWAY_PREFIX, PRINCIPAL
from .ledger import Outcome
from .settings import Principal
from .streams import Stream, nowhere

log = logging.getLogger("engee.agent")

_READS = frozenset({"receive", "accept", "read_line", "receive_exactly"})
_OPENS = frozenset({"socket", "accept"})

SessionKey = tuple[str, str]
"""(principal, session)."""
Lane = tuple[int, bool]
"""(descriptor, reads): calls in one lane run one after another, in the order sent."""


class Sessions:
    """The channel sessions of one agent: which channel serves each, and the sockets each opened."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._channels: dict[SessionKey, Channel] = {}
        self._opened: dict[SessionKey, set[int]] = {}
        self._releases: dict[SessionKey, asyncio.TimerHandle] = {}
        self._streams: dict[SessionKey, dict[int, Stream]] = {}

    async def join(self, channel: Channel) -> None:
        """`channel` serves its session from now on; one that served it before gives way."""
        key = channel.key
        if (release := self._releases.pop(key, None)) is not None:
            release.cancel()
        if (earlier := self._channels.get(key)) is not None:
            await earlier.close(CLOSE_SESSION, "the same session opened another channel")
        self._channels[key] = channel

    def leave(self, channel: Channel, closed: bool = False) -> None:
        """`channel` is gone: its session's sockets are closed unless it comes back within the grace time. A
        client that `closed` its channel said farewell: what its streams read goes back to the sockets now."""
        key = channel.key
        if self._channels.get(key) is not channel:
            return
        del self._channels[key]
        if closed:
            self._give_back(key)
        for stream in self._streams.get(key, {}).values():
            stream.emit = nowhere
        if key in self._opened or key in self._streams:
            self._release_later(key, channel.principal)

    def _give_back(self, key: SessionKey) -> None:
        """Stop the session's streams; what they read and no receive took goes back to the sockets, first in line."""
        for stream in self._streams.pop(key, {}).values():
            stream.entry.held.extendleft(reversed(stream.stop()))

    def opened(self, key: SessionKey, descriptor: int, principal: Principal) -> None:
        """The session opened `descriptor`; when no channel serves it any more, its release is due as well."""
        self._opened.setdefault(key, set()).add(descriptor)
        if key not in self._channels and key not in self._releases:
            self._release_later(key, principal)

    async def drain(self, timeout: float) -> None:
        """Until every channel has sent the outcome of each call it took, at most `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(channel.busy for channel in self._channels.values()):
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.01)

    def grant(self, channel: Channel, frame: GrantFrame) -> None:
        """Start, resume or widen the session's stream of a socket, as the client's grant says."""
        key, descriptor = channel.key, frame.descriptor
        streams = self._streams.setdefault(key, {})
        stream = streams.get(descriptor)
        if stream is not None and descriptor in channel.streams and stream.end and stream.end.error:
            stream = None  # the client heard of the error and reads again: a stream anew, as a recv after an error
        if stream is None:
            owner = channel.principal.name
            if not self.dispatcher.table.is_open(descriptor, owner):
                detail = ErrorDetail(
                    code=ErrorCode.BAD_DESCRIPTOR,
                    message=f"descriptor {descriptor} is not open",
                    method="receive",
                    descriptor=descriptor,
                )
                channel.post(EndFrame(descriptor, frame.taken, _error_fields(detail)))
                return
            entry = self.dispatcher.table.get(descriptor, owner)
            stream = streams[descriptor] = Stream(entry, self.dispatcher.limits.read_ahead, frame.taken)
            stream.task.add_done_callback(lambda _: self._stream_over(key, stream))
        if descriptor not in channel.streams:  # this channel's first grant: what the last one may have missed
            channel.streams.add(descriptor)
            stream.emit = channel.post
            stream.replay(frame.taken)
        stream.grant(frame.taken, frame.limit)

    def _stream_over(self, key: SessionKey, stream: Stream) -> None:
        """A stream that ended because its socket closed is forgotten; one at EOF stays, to tell a relinked client."""
        entry = stream.entry
        streams = self._streams.get(key, {})
        if streams.get(entry.descriptor) is stream and not self.dispatcher.table.is_open(entry.descriptor, entry.owner):
            del streams[entry.descriptor]
            if not streams:
                self._streams.pop(key, None)

    def _grace(self, principal: Principal) -> float:
        """How long a gone client's sockets are kept: through a gateway, long enough for a link outage."""
        limits = self.dispatcher.limits
        return limits.link_grace if principal.name.startswith(GATEWAY_PREFIX) else limits.channel_grace

    def _release_later(self, key: SessionKey, principal: Principal) -> None:
        grace = self._grace(principal)
        self._releases[key] = asyncio.get_running_loop().call_later(grace, self._release, key, principal)

    def _release(self, key: SessionKey, principal: Principal) -> None:
        self._releases.pop(key, None)
        grace = self._grace(principal)
        self._give_back(key)  # for sockets that stay open
        for descriptor in sorted(self._opened.pop(key, ())):
            if self.dispatcher.table.close(descriptor, principal.name):
                self.dispatcher.audit.record(
                    principal.name, "close", f"closed: its channel's client was gone for {grace:g} s", descriptor
                )


class Channel:
    """One WebSocket of one principal's session: takes frames from its tap, runs calls, writes their outcomes."""

    def __init__(
        self, websocket: WebSocket, tap: Tap, dispatcher: Dispatcher, sessions: Sessions, session: str
    ) -> None:
        self.websocket = websocket
        self.tap = tap
        self.dispatcher = dispatcher
        self.sessions = sessions
        self.principal: Principal = websocket.scope[PRINCIPAL]
        self.session = session
        self.key = (self.principal.name, session)
        self._loop = asyncio.get_running_loop()
        self._lanes: dict[Lane, asyncio.Future[Any]] = {}
        self._calls: dict[int, asyncio.Future[None]] = {}
        self._failed_lanes: dict[Lane, ErrorDetail] = {}
        self._cancelled: set[int] = set()
        self.streams: set[int] = set()
        """The descriptors this channel has granted a stream on."""
        self._waiting: deque[bytes] = deque()
        """Frames that came while the channel had its most calls under way: taken as calls finish."""
        self._outbox: list[list[bytes]] = []
        self._writing_due = False
        self._congested = False
        self._paused = False
        self._closing: asyncio.Future[None] | None = None
        self._gone = False

    async def serve(self) -> None:
        await self.websocket.accept()
        await self.sessions.join(self)
        closed = False
        try:
            self.post(HelloFrame(self.dispatcher.info.model_dump(mode="json")))
            self.tap.attach(self)
            while True:  # the frames go to `received`; here only the end, or a text frame, comes
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    closed = message.get("code") == CLOSE_NORMAL
                    return
                await self.close(CLOSE_UNSUPPORTED, "the channel takes binary frames only")
        except WebSocketDisconnect:
            pass
        finally:
            self._gone = True  # what the client missed waits in the ledger and the streams for its return
            self._outbox.clear()
            for task in self._calls.values():
                task.cancel()  # the outcomes of calls stay in the ledger for the client's return
            self.sessions.leave(self, closed)

    async def close(self, code: int, reason: str) -> None:
        log.info("closing the channel of %s session %s: %s", self.principal.name, self.session, reason)
        try:
            await self.websocket.close(code, reason[:120])
        except (RuntimeError, OSError, WebSocketDisconnect):  # closed already, or the client is gone
            pass

    def received(self, data: bytes) -> None:
        """A frame from the client, handed over by the tap as it came; past the channel's most calls under way it
        waits (and the tap pauses) until one is done."""
        if self._waiting or len(self._calls) >= self.dispatcher.limits.channel_calls:
            self._waiting.append(data)
        else:
            self._frame(data)
        self._throttle()

    def writable(self, ready: bool) -> None:
        self._congested = not ready  # a client that does not read gets no more frames read from it
        self._throttle()

    def _frame(self, data: bytes) -> None:
        if self._closing is not None:
            return  # a protocol error closes the channel: nothing after it runs
        try:
            frame = decode(data)
        except FrameError as exc:
            self._close_soon(CLOSE_PROTOCOL, str(exc))
            return
        if isinstance(frame, GrantFrame):
            self.sessions.grant(self, frame)
        elif not isinstance(frame, CallFrame | CancelFrame):
            self._close_soon(CLOSE_PROTOCOL, "a client sends call, cancel and grant frames only")
        elif refusal := self._take(frame, len(data)):
            self.post(refusal)

    def _close_soon(self, code: int, reason: str) -> None:
        self._closing = asyncio.ensure_future(self.close(code, reason))

    def _throttle(self) -> None:
        """Pause the tap while frames wait or the client does not take what it is sent; resume once neither."""
        paused = bool(self._waiting) or self._congested
        if paused != self._paused:
            self._paused = paused
            if paused:
                self.tap.pause()
            else:
                self.tap.resume()

    def _take(self, frame: CallFrame | CancelFrame, size: int) -> ErrorFrame | None:
        """Start the call `frame` asks for (or cancel one); the error frame when it is refused at once."""
        if isinstance(frame, CancelFrame):
            if frame.seq in self._calls:
                self._cancelled.add(frame.seq)  # it may still wait for its lane: then it never starts
            self.dispatcher.cancel(self.principal, self.session, frame.seq)
            return None
        if frame.seq in self._calls:
            return None  # sent again by a client that relinked: the call under way answers for both
        descriptor = frame.fields.get("descriptor")
        lane = (descriptor, frame.method in _READS) if type(descriptor) is int else None
        if (refusal := self._refusal(frame, lane, size)) is not None:
            return ErrorFrame(frame.seq, _error_fields(refusal))
        before = self._lanes.get(lane) if lane is not None else None
        task = eager(self._run(frame, before))
        if task.done():  # ran at once: its outcome is posted
            if exc := task.exception():
                log.error("call %s of %s failed", frame.seq, self.principal.name, exc_info=exc)
            return None
        self._calls[frame.seq] = task
        task.add_done_callback(lambda _: self._finished(frame.seq))
        if lane is not None:
            self._lanes[lane] = task
            task.add_done_callback(lambda done: self._lanes.pop(lane, None) if self._lanes.get(lane) is done else None)
        return None

    def _refusal(self, frame: CallFrame, lane: Lane | None, size: int) -> ErrorDetail | None:
        """Why the channel refuses `frame` without running it. A refused send on a TCP socket fails its later
        sends too, as a socket's error does: a pipelined stream must not go on with a hole in it."""
        if lane is not None and frame.method == "send" and (failed := self._failed_lanes.get(lane)) is not None:
            return failed
        limit = self.dispatcher.limits.max_body
        if size <= limit:
            return None
        refusal = ErrorDetail(
            code=ErrorCode.PAYLOAD_TOO_LARGE,
            message=f"a frame of {size} bytes is over the agent's limit max_body = {limit} bytes",
            method=frame.method,
        )
        if lane is not None and frame.method == "send" and self._streams(lane[0]):
            self._failed_lanes[lane] = refusal.model_copy(
                update={"message": f"an earlier send on this socket was refused: {refusal.message}"}
            )
        return refusal

    def _streams(self, descriptor: int) -> bool:
        """Whether `descriptor` is this principal's open TCP socket (a datagram socket has no stream to hole)."""
        owner = self.principal.name
        return self.dispatcher.table.is_open(descriptor, owner) and self.dispatcher.table.get(descriptor, owner).stream

    def _finished(self, seq: int) -> None:
        self._calls.pop(seq, None)
        self._cancelled.discard(seq)
        limit = self.dispatcher.limits.channel_calls
        while self._waiting and len(self._calls) < limit and not self._gone:
            self._frame(self._waiting.popleft())
        self._throttle()

    async def _run(self, frame: CallFrame, before: asyncio.Future[Any] | None) -> None:
        if before is not None:
            await asyncio.wait([before])  # the call sent before it on this descriptor completes first
        if frame.seq in self._cancelled:
            self._cancelled.discard(frame.seq)
            return
        outcome: Outcome | None
        if isinstance(asked := self._asked(frame), ErrorDetail):
            outcome = asked
        elif frame.method in _OPENS:  # what it opens is the session's even if this channel is cut meanwhile
            opening = asyncio.ensure_future(self._dispatch(frame, *asked))
            opening.add_done_callback(self._opened)
            outcome = await asyncio.shield(opening)
        else:
            outcome = await self._dispatch(frame, *asked)
        if outcome is None:
            return  # cancelled by the client: nobody waits for it
        if isinstance(outcome, ErrorDetail):
            self.post(ErrorFrame(frame.seq, _error_fields(outcome)))
            return
        self.post(ResultFrame(frame.seq, outcome.model_dump()))

    def _opened(self, opening: asyncio.Future[Outcome | None]) -> None:
        if opening.cancelled() or opening.exception() is not None:
            return
        if (descriptor := getattr(opening.result(), "descriptor", None)) is not None:
            self.sessions.opened(self.key, descriptor, self.principal)

    def _asked(self, frame: CallFrame) -> tuple[AnyMethod, Request] | ErrorDetail:
        """The method and request `frame` names, or the error naming what is wrong with them."""
        method = METHODS.get(frame.method)
        if method is None:
            return _bad(f"{frame.method!r} is not a method of the agent", frame.method)
        try:
            return method, method.request.model_validate(frame.fields)
        except ValidationError as exc:
            return error_detail(exc, method.name, None)

    def _dispatch(self, frame: CallFrame, method: AnyMethod, request: Request) -> Coroutine[Any, Any, Outcome | None]:
        call_id = CallId(self.session, frame.seq, frame.done)
        return self.dispatcher.dispatch(self.principal, method, request, call_id, frame.boot)

    @property
    def busy(self) -> bool:
        """Calls under way, or frames not yet sent to a client that is still there."""
        return bool(self._calls) or (bool(self._outbox) and not self._gone)

    def post(self, frame: Frame) -> None:
        """Queue `frame` for the client; frames leave in the order posted. Once the client is gone, nothing.

        They leave two turns of the event loop later, back to back in one message: so what the same turn's
        I/O brings (the datagram a send just looped back, its stream's data) goes along in one write."""
        if self._gone:
            return
        self._outbox.append(encode_parts(frame))
        if not self._writing_due:
            self._writing_due = True
            self._loop.call_soon(self._loop.call_soon, self._write)

    def _write(self) -> None:
        self._writing_due = False
        outbox, self._outbox = self._outbox, []
        if self._gone:
            return
        message: list[bytes] = []
        size = 0
        for parts in outbox:
            length = sum(map(len, parts))
            if message and size + length > MAX_FRAME:
                self.tap.write(*message)
                message, size = [], 0
            message += parts
            size += length
        if message:
            self.tap.write(*message)
        self.tap.linger(self.dispatcher.limits.channel_spin)


def _bad(message: str, method: str | None = None) -> ErrorDetail:
    return ErrorDetail(code=ErrorCode.BAD_REQUEST, message=message, method=method)


def _error_fields(detail: ErrorDetail) -> dict[str, Any]:
    return detail.model_dump(mode="json", exclude_none=True)


def session_of(websocket: WebSocket) -> str | None:
    """The session the client names in the upgrade URL, when it is a valid one."""
    session = websocket.query_params.get(SESSION_PARAMETER, "")
    return session if valid_session(session) else None


def add_channel_route(app: FastAPI, dispatcher: Dispatcher) -> Sessions:
    """`/v1/channel` on `app`; returns the sessions it keeps."""
    sessions = Sessions(dispatcher)

    @app.websocket(CHANNEL_PATH)
    async def channel(websocket: WebSocket) -> None:
        session = session_of(websocket)
        if session is None:
            await websocket.close(CLOSE_PROTOCOL, f"name the session: {CHANNEL_PATH}?{SESSION_PARAMETER}=<id>")
            return
        tap = websocket.scope.get(TAP)
        if tap is None:
            await websocket.close(CLOSE_UNSUPPORTED, "this server gives the channel no tap")
            return
        await Channel(websocket, tap, dispatcher, sessions, session).serve()

    return sessions
