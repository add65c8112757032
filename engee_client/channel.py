"""The client's side of a session channel, without I/O: the frames to send, what each frame received means.

`ChannelState` keeps every call that has no answer yet (to send again under its seq after a lost
link), and the pipelined sends: a `send` is answered at once, as a kernel's send buffer does, within
a window of bytes and calls per socket; a failure of one is kept and raised by the next call on that
socket, or by `flush` or `close`. The asyncio transport (aio/channel.py) moves the frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from protocol import ErrorCode, ErrorDetail
from protocol import models as m
from protocol.calls import MAX_CANCEL
from protocol.channel import (
    CallFrame,
    CancelFrame,
    ErrorFrame,
    FrameError,
    HelloFrame,
    ResultFrame,
    decode,
    encode,
)

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


class ChannelState:
    """The calls of one channel session that await an answer, and its pipelined sends per socket."""

    def __init__(self, window_bytes: int = WINDOW_BYTES, window_calls: int = WINDOW_CALLS) -> None:
        self.window_bytes, self.window_calls = window_bytes, window_calls
        self.info: m.AgentInfo | None = None
        self._unanswered: dict[int, tuple[Call, bytes]] = {}
        self._cancels: deque[int] = deque(maxlen=MAX_CANCEL)
        self._posted: dict[int, _Posted] = {}
        self._posted_seqs: dict[int, int] = {}
        """seq of a pipelined send -> its descriptor."""

    def frame(self, call: Call) -> bytes:
        """The frame of `call`, kept until its answer arrives."""
        call_id = call.call_id
        fields = call.request.model_dump(exclude_defaults=True)
        done = call_id.done
        if self._unanswered and done is not None:  # a pipelined send the caller is done with still needs its answer
            done = min(done, min(self._unanswered) - 1)
        data = encode(CallFrame(call_id.seq, call.method.name, fields, call.boot, done))
        self._unanswered[call_id.seq] = (call, data)
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
        """What a new link sends again: the latest cancels, then every call still without an answer, oldest first."""
        return [encode(CancelFrame(seq)) for seq in self._cancels] + [
            self._unanswered[seq][1] for seq in sorted(self._unanswered)
        ]

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
        hello or the answer of a pipelined send; FrameError for a frame no agent sends."""
        frame = decode(data)
        if isinstance(frame, HelloFrame):
            self.info = m.AgentInfo.model_validate(frame.info)
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
