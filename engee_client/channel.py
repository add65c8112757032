"""The client's side of a session channel, without I/O: the frames to send, what each frame received means.

`ChannelState` keeps every call that has no answer yet (to send again under its seq after a lost
link), and the pipelined sends: a `send` is answered at once, as a kernel's send buffer does, within
a window of bytes and calls per socket; a failure of one is kept and raised by the next call on that
socket, or by `flush` or `close`. And the read-ahead streams: the first `receive` on a socket grants
the agent a window to read it ahead; later receives answer from what arrived, and the window is
granted again as it is used. The transports (aio/channel.py, sync/channel.py) move the frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from protocol import METHODS, ErrorCode, ErrorDetail
from protocol import models as m
from protocol.calls import MAX_CANCEL
from protocol.channel import (
    DATAGRAMS_AHEAD,
    READ_AHEAD,
    CallFrame,
    CancelFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    FrameError,
    GrantFrame,
    HelloFrame,
    ResultFrame,
    decode,
    encode,
)
from protocol.errors import RESTARTED, over_max_bufsize
from protocol.models import LONG_POLL

from .transport import Call, Reply

WINDOW_BYTES = 32 << 20
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

    def grant(self) -> bytes:
        self.granted, self.granted_at = self.consumed + self.window, self.consumed
        return encode(GrantFrame(self.descriptor, self.received, self.granted))


class ChannelState:
    """The calls of one channel session that await an answer, its pipelined sends and its streams per socket."""

    def __init__(
        self, window_bytes: int = WINDOW_BYTES, window_calls: int = WINDOW_CALLS, read_ahead: int = READ_AHEAD
    ) -> None:
        self.window_bytes, self.window_calls = window_bytes, window_calls
        self.read_ahead = read_ahead
        """The window a stream grants, in bytes; 0 reads no socket ahead (every receive is a call)."""
        self.info: m.AgentInfo | None = None
        self._unanswered: dict[int, tuple[Call, bytes]] = {}
        self._cancels: deque[int] = deque(maxlen=MAX_CANCEL)
        self._posted: dict[int, _Posted] = {}
        self._posted_seqs: dict[int, int] = {}
        """seq of a pipelined send -> its descriptor."""
        self._streams: dict[int, _Stream] = {}

    def frame(self, call: Call) -> bytes:
        """The frame of `call`, kept until its answer arrives."""
        call_id = call.call_id
        fields = call.request.model_dump(exclude_defaults=True)
        done = call_id.done
        if self._unanswered and done is not None:  # a pipelined send the caller is done with still needs its answer
            done = min(done, min(self._unanswered) - 1)
        data = encode(CallFrame(call_id.seq, call.method.name, fields, call.boot, done))
        self._unanswered[call_id.seq] = (call, data)
        if call.method is METHODS.close:
            self._streams.pop(fields["descriptor"], None)  # what was read ahead goes with the socket
        return data

    def cancel(self, seq: int) -> bytes:
        """The frame that cancels call `seq`; its answer is no longer awaited. Kept, to go again on a new link:
        a cancel lost in a cut would leave what the call took from its socket in the agent's ledger."""
        self._unanswered.pop(seq, None)
        self._cancels.append(seq)
        return encode(CancelFrame(seq))

    def forget(self, seq: int) -> None:
        """Nobody waits for call `seq` any more (its caller was interrupted): not sent again."""
        self._unanswered.pop(seq, None)

    def unanswered(self) -> list[bytes]:
        """What a new link sends again: the latest cancels, every call still without an answer, oldest first,
        and each stream's grant, saying what arrived of it."""
        return (
            [encode(CancelFrame(seq)) for seq in self._cancels]
            + [self._unanswered[seq][1] for seq in sorted(self._unanswered)]
            + [encode(GrantFrame(d, stream.received, stream.granted)) for d, stream in self._streams.items()]
        )

    def streams(self, call: Call) -> bool:
        """Whether `call` is a receive that the socket's stream answers, rather than a call to the agent."""
        return bool(self.read_ahead) and call.method is METHODS.receive

    def receive(self, call: Call) -> tuple[Reply | None, list[bytes]]:
        """What a receive gets from its socket's stream now (None: nothing yet), and the frames to send for it:
        the grant that starts the stream, or one that widens it again as receives use it."""
        request = call.request
        assert isinstance(request, m.ReceiveRequest)
        boot = self.info.boot_id if self.info else None
        if call.boot and boot and call.boot != boot:
            return Reply(ErrorDetail(code=ErrorCode.AGENT_RESTARTED, message=RESTARTED, method="receive"), boot), []
        limit = self.info.max_bufsize if self.info else None
        if limit is not None and request.bufsize > limit:
            detail = ErrorDetail(
                code=ErrorCode.PAYLOAD_TOO_LARGE, message=over_max_bufsize(request.bufsize, limit), method="receive"
            )
            return Reply(detail, boot), []
        stream = self._streams.get(request.descriptor)
        if stream is None:
            window = min(self.read_ahead, self.info.read_ahead or self.read_ahead) if self.info else self.read_ahead
            stream = self._streams[request.descriptor] = _Stream(request.descriptor, window)
            return None, [stream.grant()]
        outcome = self._take(stream, request.bufsize)
        if outcome is None:
            return None, []
        frames = [stream.grant()] if stream.consumed - stream.granted_at >= max(1, stream.window // 2) else []
        return Reply(outcome, boot), frames

    def grant_again(self, call: Call) -> bytes | None:
        """The grant a receive waiting for its stream sends every `touch_every()` seconds: a socket waited on is
        in use, and the agent closes no socket in use as idle."""
        stream = self._streams.get(getattr(call.request, "descriptor", 0))
        return encode(GrantFrame(stream.descriptor, stream.received, stream.granted)) if stream else None

    def touch_every(self) -> float:
        """Seconds between a waiting receive's grants: well within the agent's idle_timeout."""
        idle = self.info.idle_timeout if self.info else None
        return min(LONG_POLL, idle / 3) if idle else LONG_POLL

    def _take(self, stream: _Stream, bufsize: int) -> m.ReceiveResponse | ErrorDetail | None:
        if stream.chunks and stream.datagrams:
            data, peer = stream.chunks.popleft()
            stream.consumed += 1
            sender = m.Address(host=peer[0], port=peer[1]) if peer else None
            return m.ReceiveResponse(data=data[:bufsize], peer=sender, truncated=len(data) > bufsize)
        if stream.chunks:
            taken = bytearray()
            while stream.chunks and len(taken) < bufsize:
                data = stream.chunks[0][0]
                piece = data[stream.cut : stream.cut + bufsize - len(taken)]
                taken += piece
                stream.cut += len(piece)
                if stream.cut == len(data):
                    stream.chunks.popleft()
                    stream.cut = 0
            stream.consumed += len(taken)
            return m.ReceiveResponse(data=bytes(taken))
        if stream.end is None:
            return None
        if stream.end.error is None:
            return m.ReceiveResponse(eof=True)  # and so is every later receive, as on a local socket
        del self._streams[stream.descriptor]  # told once; a later receive starts afresh
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
        return Reply(m.SendResponse(sent=size), self.info.boot_id if self.info else None)

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

    def received(self, data: bytes) -> tuple[int | None, Reply | None]:
        """What a frame from the agent means: (seq, reply) for the caller waiting on seq, (None, None) for a
        hello, the answer of a pipelined send or a stream's data; FrameError for a frame no agent sends."""
        frame = decode(data)
        if isinstance(frame, HelloFrame):
            info = m.AgentInfo.model_validate(frame.info)
            if self.info is not None and info.boot_id != self.info.boot_id:
                self._streams.clear()  # a restarted agent has none of them
            self.info = info
            return None, None
        if isinstance(frame, DataFrame | EndFrame):
            self._streamed(frame)
            return None, None
        if not isinstance(frame, ResultFrame | ErrorFrame):
            raise FrameError(f"an agent does not send {type(frame).__name__}")
        if frame.seq is None:
            assert isinstance(frame, ErrorFrame)
            raise FrameError(f"the agent refused a frame: {frame.error.get('message')}")
        known = self._unanswered.pop(frame.seq, None)
        if known is None:
            return None, None  # a cancelled call's, or an answer sent again: nobody waits for it
        call = known[0]
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
            return None, None
        return frame.seq, Reply(outcome, self.info.boot_id if self.info else None)

    def _answer_posted(self, seq: int, outcome: m.Response | ErrorDetail) -> None:
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
