"""The client's side of a session channel, without I/O: the frames to send, what each frame received means.

`ChannelState.exchange(call)` is a call's whole course on the channel, written once for both
transports as a generator, the way core.py writes operations: it yields the frames to send and the
`Wait`s it needs (for an answer, for room in a send window, for a stream's data) and returns the
call's `Reply`. The asyncio transport (aio/channel.py) and the blocking one (sync/channel.py) drive
it with their own I/O, and feed every frame they read to `received`.

`ChannelState` keeps every call that has no answer yet (to send again under its seq after a lost
link), and the pipelined sends: a `send` is answered at once, as a kernel's send buffer does, within
a window of bytes and calls per socket; a failure of one is kept and raised by the next call on that
socket, or by `flush` or `close`. And the read-ahead streams: the first `receive` on a socket grants
the agent a window to read it ahead; later receives answer from what arrived, and the window is
granted again as it is used.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol import METHODS, AgentUnreachableError, ErrorBody, ErrorCode, ErrorDetail, exception_for
from protocol import models as m
from protocol.calls import MAX_CANCEL
from protocol.channel import (
    CHANNEL_PATH,
    DATAGRAMS_AHEAD,
    READ_AHEAD,
    CallFrame,
    CancelFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameError,
    GrantFrame,
    HelloFrame,
    ResultFrame,
    decode_all,
    encode,
)
from protocol.errors import RESTARTED, over_max_bufsize
from protocol.framing import Framing
from protocol.models import LONG_POLL

from .transport import Call, Reply, answer_due

if TYPE_CHECKING:  # the HTTP wire's retry rule is only named here, as the transports hand it in
    from .wire import Backoff

WINDOW_BYTES = 64 << 20
"""Bytes of pipelined sends a socket may have unacknowledged, like a kernel send buffer."""
WINDOW_CALLS = 256
"""Pipelined sends a socket may have unacknowledged."""


@dataclass
class _Posted:
    """The pipelined sends of one socket that have no answer yet."""

    calls: dict[int, int] = field(default_factory=dict)
    """seq -> bytes."""
    bytes: int = 0
    failure: ErrorDetail | None = None
    excused: set[int] = field(default_factory=set)
    """Sends in flight when a failure was raised: theirs are the same failure, not raised again."""


@dataclass
class _Stream:
    """What the agent streamed of one socket and no receive has taken yet."""

    descriptor: int
    window: int
    received: int = 0
    """Offset after the last byte (or datagram) that arrived."""
    consumed: int = 0
    granted: int = 0
    """The limit last granted."""
    granted_at: int = 0
    """`consumed` when it was granted."""
    datagrams: bool = False
    chunks: deque[tuple[bytes, list[Any] | None]] = field(default_factory=deque)
    """(data, sender); the first chunk may be partly taken already (`cut` bytes of it)."""
    cut: int = 0
    end: EndFrame | None = None
    taken: tuple[bytes, list[Any] | None] = (b"", None)
    """What the last take took, to put back if its call is interrupted before it returns."""
    seen: int = -1
    """`received` when a framed read last looked and found no whole frame: it waits for more than that."""

    def arrived(self) -> bool:
        return bool(self.chunks) and self.received != self.seen

    def buffered(self) -> int:
        """Bytes (or datagrams) here that no receive has taken."""
        return self.received - self.consumed

    def take(self, size: int) -> bytes:
        """Up to `size` bytes from the front; a whole chunk that fits is handed over as it is, not copied."""
        if not self.cut and len(self.chunks[0][0]) <= size and len(self.chunks) == 1:
            data = self.chunks.popleft()[0]
            self.consumed += len(data)
            self.taken = (data, None)
            return data
        taken = bytearray()
        while self.chunks and len(taken) < size:
            data = self.chunks[0][0]
            piece = data[self.cut : self.cut + size - len(taken)]
            taken += piece
            self.cut += len(piece)
            if self.cut == len(data):
                self.chunks.popleft()
                self.cut = 0
        self.consumed += len(taken)
        self.taken = (bytes(taken), None)
        return self.taken[0]

    def put_back(self, granted: tuple[int, int]) -> None:
        """Undo the last take (and the grant made of it): its bytes or datagram are first in line again."""
        data, peer = self.taken
        if self.cut and not self.datagrams:  # the take ended inside a chunk: its rest is still the front
            front = self.chunks.popleft()[0]
            data, self.cut = data + front[self.cut :], 0
        self.chunks.appendleft((data, peer))
        self.consumed -= 1 if self.datagrams else len(self.taken[0])
        self.granted, self.granted_at = granted

    def grant(self) -> bytes:
        """Open the window again from what receives took; the agent may forget what they took."""
        self.granted, self.granted_at = self.consumed + self.window, self.consumed
        return self.again()

    def again(self) -> bytes:
        """The last grant once more: what receives took, and the limit. The agent keeps the rest, to send it again
        after a cut (the client drops what it has by its offset) or to give back to the socket when the session
        ends."""
        return encode(GrantFrame(self.descriptor, self.consumed, self.granted))


@dataclass(frozen=True, slots=True)
class Wait:
    """What a flow waits for: until `ready()`, at most `timeout` seconds (None: as long as it takes). The
    transport sends back whether it became ready, and raises instead when the link is given up."""

    ready: Callable[[], bool]
    timeout: float | None = None


Step = bytes | Wait
"""What a flow yields: a frame to send, or a wait."""
Flow = Generator[Step, bool, Any]


def channel_url(url: str) -> str:
    """The WebSocket URL of the channel of the agent at `url`: ws:// for http://, wss:// for https://."""
    scheme, _, rest = url.rstrip("/").partition("://")
    return {"http": "ws", "https": "wss"}.get(scheme, scheme) + "://" + rest + CHANNEL_PATH


class ChannelUnavailable(Exception):
    """The agent has no channel: its upgrade was answered 404."""


def refused_upgrade(status: int, body: bytes, where: str, due: float | None = None) -> None:
    """Raise what an upgrade the agent refused with HTTP `status` means: no channel, a bad token, a refused
    origin or host, an agent that is offline (through a gateway). Returns when trying again may help: a proxy's
    5xx without an error body of ours, or an offline agent while calls the dropped link carried may still get
    their answers (until `due`, a monotonic time)."""
    if status == 404:
        raise ChannelUnavailable()
    try:
        detail = ErrorBody.model_validate_json(body or b"").error
    except ValueError:
        if status >= 500:
            return
        detail = ErrorDetail(code=ErrorCode.BAD_REQUEST, message=f"the upgrade was refused with HTTP {status}")
    if detail.code is ErrorCode.AGENT_OFFLINE and due is not None and time.monotonic() < due:
        return
    raise exception_for(detail, where)


def upgrade_refusal(exc: BaseException) -> tuple[int, bytes] | None:
    """The status and body the agent answered an upgrade with, when it was not a 101 (websockets' InvalidStatus)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return None if not isinstance(status, int) else (status, bytes(getattr(response, "body", None) or b""))


def relink_pause(backoff: Backoff, exc: BaseException, where: str, refusal: tuple[int, bytes] | None) -> float:
    """Seconds to wait before linking again after `exc`. Once the backoff's time is up, an upgrade the agent
    refused (`refusal`: its status and body) raises what it meant, an offline agent as AgentOfflineError."""
    try:
        return backoff.pause(exc, where)
    except AgentUnreachableError:
        if refusal is not None:
            refused_upgrade(*refusal, where)
        raise


class ChannelState:
    """The calls of one channel session that await an answer, its pipelined sends and its streams per socket."""

    def __init__(
        self,
        window_bytes: int = WINDOW_BYTES,
        window_calls: int = WINDOW_CALLS,
        read_ahead: int = READ_AHEAD,
        pipeline: bool = True,
    ) -> None:
        self.window_bytes, self.window_calls = window_bytes, window_calls
        self.read_ahead = read_ahead
        """The window a stream grants, in bytes; 0 reads no socket ahead (every receive is a call)."""
        self.pipeline = pipeline
        """Whether a send is answered at once (False: each waits for the agent's answer)."""
        self.info: m.AgentInfo | None = None
        self._unanswered: dict[int, tuple[Call, bytes, float]] = {}
        """seq -> the call, its frame, and when it was first sent."""
        self._replies: dict[int, Reply] = {}
        self._cancels: deque[int] = deque(maxlen=MAX_CANCEL)
        self._posted: dict[int, _Posted] = {}
        self._posted_seqs: dict[int, int] = {}
        """seq of a pipelined send -> its descriptor."""
        self._streams: dict[int, _Stream] = {}

    @property
    def boot(self) -> str | None:
        return self.info.boot_id if self.info else None

    def exchange(self, call: Call) -> Flow:
        """The course of one call: cancels it carries go first; a socket from before a restart, or one whose
        pipelined send failed, is answered here; a close waits for the socket's sends' answers too; a send
        is pipelined, a receive served from the socket's stream, anything else sent and its answer awaited."""
        for seq in call.call_id.cancel:
            yield self.cancel(seq)
        descriptor = getattr(call.request, "descriptor", None)
        if descriptor is None:
            return (yield from self._request(call))
        if call.boot and self.info and call.boot != self.info.boot_id:
            return Reply(_restarted(call.method.name), self.boot)  # what the agent would answer, known here already
        if call.method is METHODS.close:  # sent at once: the agent runs it after the socket's sends, in order
            reply = yield from self._request(call, lambda: not self.in_flight(descriptor))
            failure = self.failure(descriptor)
            return Reply(failure, reply.boot) if failure else reply  # closed, and the send that failed is raised
        if (failure := self.failure(descriptor)) is not None:
            return Reply(failure, self.boot)
        if self.pipeline and call.method in (METHODS.send, METHODS.send_to):
            return (yield from self._post(call, descriptor))
        if self.read_ahead and (self.info is None or self.info.read_ahead != 0):
            if call.method is METHODS.receive:
                return (yield from self._receive(call))
            if call.method in (METHODS.read_line, METHODS.receive_exactly, METHODS.query):
                return (yield from self._framed(call))
            if call.method is METHODS.bytes_available and descriptor in self._streams:
                return (yield from self._available(call, self._streams[descriptor]))
        return (yield from self._request(call))

    def flushing(self, descriptor: int | None = None) -> Flow:
        """Until every pipelined send (of one socket, or all) has its answer; returns the failures among them."""
        yield Wait(lambda: not self.in_flight(descriptor))
        if descriptor is not None:
            failure = self.failure(descriptor)
            return [failure] if failure else []
        return self.failures()

    def _request(self, call: Call, also: Callable[[], bool] = lambda: True) -> Flow:
        """Send `call` and wait for its answer (and until `also()`)."""
        seq = call.call_id.seq
        try:
            yield self.frame(call)
            yield Wait(lambda: seq in self._replies and also())
        except BaseException:
            self.forget(seq)  # interrupted, or the link was given up: not sent again after a new link
            raise
        return self._replies.pop(seq)

    def _post(self, call: Call, descriptor: int) -> Flow:
        size = len(getattr(call.request, "data", b""))
        if not self.room(descriptor, size):
            yield Wait(lambda: self.room(descriptor, size))
        if (failure := self.failure(descriptor)) is not None:  # answered while this send waited for room
            return Reply(failure, self.boot)
        reply = self.post(call, descriptor)
        yield self.frame(call)
        return reply

    def _receive(self, call: Call) -> Flow:
        """A receive answered from its socket's stream."""
        request = call.request
        assert isinstance(request, m.ReceiveRequest)
        if (refusal := self._over_max_bufsize(request.bufsize, "receive")) is not None:
            return Reply(refusal, self.boot)
        stream = yield from self._stream(request.descriptor)
        return (yield from self._serve(call, stream, lambda: self._take(stream, request.bufsize)))

    def _framed(self, call: Call) -> Flow:
        """A line or an exact read answered from its socket's stream, framed here as the agent frames it; a query
        sends its question as a pipelined send under its own seq first. The frame must fit in the stream's
        window, which is all the agent reads ahead."""
        request = call.request
        assert isinstance(request, m.ReadLineRequest | m.ReceiveExactlyRequest)
        method = call.method.name
        nbytes = request.nbytes if isinstance(request, m.ReceiveExactlyRequest) else 0
        if (refusal := self._over_max_bufsize(nbytes, method)) is not None:
            return Reply(refusal, self.boot)
        stream = yield from self._stream(request.descriptor)
        if nbytes > stream.window:
            message = f"receive_exactly of {nbytes} bytes is over the channel's read-ahead window of {stream.window}"
            return Reply(ErrorDetail(code=ErrorCode.PAYLOAD_TOO_LARGE, message=message, method=method), self.boot)
        if stream.granted < stream.consumed + nbytes:  # room for the whole frame to come
            yield stream.grant()
        if isinstance(request, m.QueryRequest):
            question = m.SendRequest(descriptor=request.descriptor, data=request.data)
            yield from self._post(Call(METHODS.send, question, call.call_id, call.boot), request.descriptor)
        return (yield from self._serve(call, stream, lambda: self._take_framed(stream, request.framing(), method)))

    def _available(self, call: Call, stream: _Stream) -> Flow:
        """What the agent can give now, and what its stream read that no receive here has taken yet."""
        reply = yield from self._request(call)
        answer = reply.outcome
        if not isinstance(answer, m.AvailableResponse):
            return reply
        here = sum(len(data) for data, _ in stream.chunks) - stream.cut
        on_the_way = 0 if answer.streamed is None or stream.datagrams else max(0, answer.streamed - stream.received)
        total = answer.available + here + on_the_way
        return Reply(m.AvailableResponse(available=total, streamed=answer.streamed), reply.boot)

    def _stream(self, descriptor: int) -> Generator[Step, bool, _Stream]:
        """The socket's stream; granted its first window when there is none yet."""
        stream = self._streams.get(descriptor)
        if stream is None:
            window = min(self.read_ahead, (self.info.read_ahead if self.info else None) or self.read_ahead)
            stream = self._streams[descriptor] = _Stream(descriptor, window)
            yield stream.grant()
        return stream

    def _serve(self, call: Call, stream: _Stream, take: Callable[[], m.ReceiveResponse | ErrorDetail | None]) -> Flow:
        """The answer `take()` finds in the stream, waiting at most the call's `wait` for data. While it waits it
        grants again every `touch_every()` seconds: a socket waited on is no idle socket."""
        left = getattr(call.request, "wait", LONG_POLL)
        while (outcome := self.failure(stream.descriptor) or take()) is None:  # a send that failed meanwhile first
            if left <= 0:
                return Reply(m.ReceiveResponse(pending=True, buffered=stream.buffered()), self.boot)
            if stream.received >= stream.granted and stream.granted < stream.consumed + stream.window:
                yield stream.grant()  # the agent may send no more and no whole frame is here: the window again
            touch = min(left, self.touch_every())
            if not (yield Wait(lambda: self._readable(stream), touch)):
                left -= touch
                if self._streams.get(stream.descriptor) is stream:
                    yield stream.again()
            if self._streams.get(stream.descriptor) is not stream:  # closed meanwhile, or the agent restarted
                return Reply(self._stream_gone(call), self.boot)
        if stream.consumed - stream.granted_at >= max(1, stream.window // 8):
            granted = stream.granted, stream.granted_at
            try:
                yield stream.grant()
            except BaseException:  # interrupted while granting: what was taken stays for the next read
                stream.put_back(granted)
                raise
        return Reply(outcome, self.boot)

    def _over_max_bufsize(self, size: int, method: str) -> ErrorDetail | None:
        if self.info and self.info.max_bufsize is not None and size > self.info.max_bufsize:
            message = over_max_bufsize(size, self.info.max_bufsize)
            return ErrorDetail(code=ErrorCode.PAYLOAD_TOO_LARGE, message=message, method=method)
        return None

    def _stream_gone(self, call: Call) -> ErrorDetail:
        if call.boot and call.boot != self.boot:
            return _restarted("receive")
        descriptor = getattr(call.request, "descriptor", None)
        return ErrorDetail(
            code=ErrorCode.BAD_DESCRIPTOR,
            message=f"descriptor {descriptor} was closed while waiting",
            method="receive",
            descriptor=descriptor,
        )

    def _readable(self, stream: _Stream) -> bool:
        """Whether something arrived since the wait began (new data, the end), or the stream went."""
        posted = self._posted.get(stream.descriptor)
        return (
            stream.arrived()
            or stream.end is not None
            or self._streams.get(stream.descriptor) is not stream
            or (posted is not None and posted.failure is not None)
        )

    def touch_every(self) -> float:
        """Seconds between a waiting receive's grants: well within the agent's idle_timeout."""
        idle = self.info.idle_timeout if self.info else None
        return min(LONG_POLL, idle / 3) if idle else LONG_POLL

    def frame(self, call: Call) -> bytes:
        """The frame of `call`, kept until its answer arrives."""
        call_id = call.call_id
        fields = call.request.model_dump(exclude_defaults=True)
        done = call_id.done
        if self._unanswered and done is not None:  # a pipelined send the caller is done with still needs its answer
            done = min(done, min(self._unanswered) - 1)
        data = encode(CallFrame(call_id.seq, call.method.name, fields, call.boot, done))
        self._unanswered[call_id.seq] = (call, data, time.monotonic())
        if call.method is METHODS.close:
            self._streams.pop(fields["descriptor"], None)  # what was read ahead goes with the socket
        return data

    def cancel(self, seq: int) -> bytes:
        """The frame that cancels call `seq`; its answer is no longer awaited. Kept, to go again on a new link:
        a cancel lost in a cut would leave what the call took from its socket in the agent's ledger."""
        self._unanswered.pop(seq, None)
        if seq in self._posted_seqs:  # an interrupted query's question: no answer comes, and none is awaited
            self._answer_posted(seq, None)
        self._cancels.append(seq)
        return encode(CancelFrame(seq))

    def forget(self, seq: int) -> None:
        """Nobody waits for call `seq` any more (its caller was interrupted): not sent again."""
        self._unanswered.pop(seq, None)
        self._replies.pop(seq, None)

    def farewell(self) -> list[bytes]:
        """What a client that closes sends last: each stream's grant, so what its receives did not take goes back
        to the socket when the session ends."""
        return [stream.again() for stream in self._streams.values()]

    def answer_due(self, retry_for: float) -> float | None:
        """Until when (a monotonic time) the calls still without an answer may get one through a new link, as
        `transport.answer_due` says for each; None when none waits."""
        return max((answer_due(call, sent, retry_for) for call, _, sent in self._unanswered.values()), default=None)

    def answer(self, seq: int) -> Reply | None:
        """The answer that arrived for call `seq`, taken."""
        return self._replies.pop(seq, None)

    def unanswered(self) -> list[bytes]:
        """What a new link sends again: the latest cancels, every call still without an answer, oldest first,
        and each stream's grant."""
        return (
            [encode(CancelFrame(seq)) for seq in self._cancels]
            + [self._unanswered[seq][1] for seq in sorted(self._unanswered)]
            + [stream.again() for stream in self._streams.values()]
        )

    def _take(self, stream: _Stream, bufsize: int) -> m.ReceiveResponse | ErrorDetail | None:
        if stream.chunks and stream.datagrams:
            data, peer = stream.taken = stream.chunks.popleft()
            stream.consumed += 1
            sender = m.Address(host=peer[0], port=peer[1]) if peer else None
            return m.ReceiveResponse(data=data[:bufsize], peer=sender, truncated=len(data) > bufsize)
        if stream.chunks:
            return m.ReceiveResponse(data=stream.take(bufsize))
        if stream.end is None:
            return None
        if stream.end.error is None:
            return m.ReceiveResponse(eof=True)  # and so is every later receive, as on a local socket
        del self._streams[stream.descriptor]  # told once; a later receive starts afresh
        return ErrorDetail.model_validate(stream.end.error)

    def _take_framed(self, stream: _Stream, framing: Framing, method: str) -> m.ReceiveResponse | ErrorDetail | None:
        """The frame the stream holds whole, taken; None while it is not there yet. Nothing is taken otherwise:
        a line over its limit, or the end of the stream before the frame, leaves every byte readable."""
        if stream.datagrams:
            message = f"{method} reads a stream: on a datagram socket, receive each datagram"
            return ErrorDetail(code=ErrorCode.OS_ERROR, message=message, errno_name="EOPNOTSUPP", method=method)
        if framing.size is not None and stream.end is None:  # counted, not scanned: a big read stays linear
            if stream.buffered() < framing.size:
                stream.seen = stream.received
                return None
            return m.ReceiveResponse(data=stream.take(framing.size))
        try:
            for index, (data, _) in enumerate(stream.chunks):
                if framing.feed(data, stream.cut if index == 0 else 0):
                    assert framing.frame is not None
                    stream.take(framing.used)
                    return m.ReceiveResponse(data=framing.frame)
        except ValueError as exc:
            return ErrorDetail(code=ErrorCode.BAD_REQUEST, message=str(exc), method=method)
        if stream.end is None:
            if stream.buffered() >= stream.window:  # a whole window and no terminator: it can never come
                message = f"no terminator in the {stream.window} bytes of the channel's read-ahead window"
                return ErrorDetail(code=ErrorCode.PAYLOAD_TOO_LARGE, message=message, method=method)
            stream.seen = stream.received
            return None
        if stream.end.error is None or stream.chunks:
            return ErrorDetail(code=ErrorCode.END_OF_STREAM, message=framing.incomplete(), method=method)
        del self._streams[stream.descriptor]  # told once; a later read starts afresh
        return ErrorDetail.model_validate(stream.end.error)

    def _streamed(self, frame: DataFrame | EndFrame) -> None:
        stream = self._streams.get(frame.descriptor)
        if stream is None:
            return  # the socket was closed here: what was on its way goes with it
        if isinstance(frame, EndFrame):
            stream.end = frame
            return
        stream.datagrams = frame.peer is not None
        if stream.datagrams:
            stream.window = min(stream.window, DATAGRAMS_AHEAD)
        data = frame.data
        length = 1 if stream.datagrams else len(data)
        if frame.offset + length <= stream.received:
            return  # sent again after a cut: here already
        if frame.offset > stream.received:
            raise FrameError(f"descriptor {frame.descriptor}'s stream skips from {stream.received} to {frame.offset}")
        if not stream.datagrams:
            data = data[stream.received - frame.offset :]
        stream.chunks.append((data, frame.peer))
        stream.received += 1 if stream.datagrams else len(data)

    def post(self, call: Call, descriptor: int) -> Reply:
        """A pipelined send is on its way: its answer is the bytes it sends, at once."""
        size = len(getattr(call.request, "data", b""))
        posted = self._posted.setdefault(descriptor, _Posted())
        posted.calls[call.call_id.seq] = size
        posted.bytes += size
        self._posted_seqs[call.call_id.seq] = descriptor
        return Reply(m.SendResponse(sent=size), self.boot)

    def room(self, descriptor: int, size: int) -> bool:
        """Whether a send of `size` bytes fits in the socket's window (one send always fits an empty window)."""
        posted = self._posted.get(descriptor)
        if posted is None or not posted.calls:
            return True
        return posted.bytes + size <= self.window_bytes and len(posted.calls) < self.window_calls

    def in_flight(self, descriptor: int | None = None) -> int:
        """Pipelined sends without an answer: of one socket, or of all."""
        if descriptor is not None:
            posted = self._posted.get(descriptor)
            return len(posted.calls) if posted else 0
        return len(self._posted_seqs)

    def failure(self, descriptor: int) -> ErrorDetail | None:
        """The failure of a pipelined send on this socket, once: the next call on it raises it."""
        posted = self._posted.get(descriptor)
        if posted is None or posted.failure is None:
            return None
        failure, posted.failure = posted.failure, None
        posted.excused = set(posted.calls)
        if not posted.calls:
            del self._posted[descriptor]
        return failure

    def abandon_posted(self, reason: str) -> None:
        """The link is gone for good: every pipelined send without an answer becomes its socket's failure."""
        for descriptor, posted in self._posted.items():
            if posted.calls and posted.failure is None:
                posted.failure = ErrorDetail(
                    code=ErrorCode.INTERNAL,
                    message=f"{len(posted.calls)} sends may not have arrived: {reason}",
                    method="send",
                    descriptor=descriptor,
                )
            posted.calls.clear()
            posted.bytes = 0
        self._posted_seqs.clear()

    def failures(self) -> list[ErrorDetail]:
        """Every kept failure, once: what `flush` raises."""
        return [failure for descriptor in list(self._posted) if (failure := self.failure(descriptor))]

    def received(self, data: bytes) -> None:
        """Take in a frame from the agent: a hello, a call's answer (kept for its caller), the answer of a
        pipelined send, a stream's data or end; FrameError for a frame no agent sends."""
        for frame in decode_all(data):
            self._take_in(frame)

    def _take_in(self, frame: Frame) -> None:
        if isinstance(frame, HelloFrame):
            info = m.AgentInfo.model_validate(frame.info)
            if self.info is not None and info.boot_id != self.info.boot_id:
                self._streams.clear()  # a restarted agent has none of them
            self.info = info
            return
        if isinstance(frame, DataFrame | EndFrame):
            self._streamed(frame)
            return
        if not isinstance(frame, ResultFrame | ErrorFrame):
            raise FrameError(f"an agent does not send {type(frame).__name__}")
        if frame.seq is None:
            assert isinstance(frame, ErrorFrame)
            raise FrameError(f"the agent refused a frame: {frame.error.get('message')}")
        known = self._unanswered.pop(frame.seq, None)
        if known is None:
            return  # a cancelled call's, or an answer sent again: nobody waits for it
        call = known[0]
        if frame.seq in self._posted_seqs and isinstance(frame, ResultFrame):
            self._answer_posted(frame.seq, None)  # a pipelined send's answer matters only when it is an error
            return
        try:
            outcome: m.Response | ErrorDetail = (
                ErrorDetail.model_validate(frame.error)
                if isinstance(frame, ErrorFrame)
                else call.method.response.model_validate(frame.fields)
            )
        except ValueError as exc:
            outcome = ErrorDetail(code=ErrorCode.INTERNAL, message=f"unreadable answer: {exc}", method=call.method.name)
        if frame.seq in self._posted_seqs:
            self._answer_posted(frame.seq, outcome)
        else:
            self._replies[frame.seq] = Reply(outcome, self.boot)

    def _answer_posted(self, seq: int, outcome: m.Response | ErrorDetail | None) -> None:
        descriptor = self._posted_seqs.pop(seq)
        posted = self._posted[descriptor]
        size = posted.calls.pop(seq)
        posted.bytes -= size
        excused = seq in posted.excused
        posted.excused.discard(seq)
        if isinstance(outcome, ErrorDetail) and posted.failure is None and not excused:
            posted.failure = outcome.model_copy(
                update={"message": f"an earlier send of {size} bytes (call {seq}) failed: {outcome.message}"}
            )
        if not posted.calls and posted.failure is None:
            del self._posted[descriptor]


def _restarted(method: str) -> ErrorDetail:
    return ErrorDetail(code=ErrorCode.AGENT_RESTARTED, message=RESTARTED, method=method)
