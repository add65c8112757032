"""Read-ahead streams: a socket read as data comes, and sent to its channel's client ahead of the receives.

A client that grants a window on a socket (a GRANT frame) gets what arrives on it in DATA frames
while the stream is below the granted limit; its `receive` answers from what already arrived, so
a loop of receives over a long link pays no round trip each. The agent reads no further than the
window, so memory stays bounded on both sides and TCP's flow control still slows the peer. A stream
keeps what it sent until a later grant says the client's receives took it: it sends that again when
the session's next channel grants after a cut, and gives it back to the socket when the session ends,
so nothing read from the OS is lost or delivered twice.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections import deque
from collections.abc import Callable

from protocol import models as m
from protocol.channel import DATAGRAMS_AHEAD, STREAM_CHUNK, DataFrame, EndFrame, Frame
from protocol.errors import detail_from_os_error

from .descriptors import Entry
from .operations import read_now

DATAGRAM = 65535
"""What a datagram socket's stream reads at once: any datagram whole."""


def nowhere(frame: Frame) -> None:
    """Where a stream's frames go while its session has no channel: they are kept, and sent again later."""


class Stream:
    """One socket's read-ahead for one channel session."""

    def __init__(self, entry: Entry, read_ahead: int, start: int = 0) -> None:
        self.entry = entry
        self.cap = read_ahead if entry.stream else DATAGRAMS_AHEAD
        """The most it holds unacknowledged: bytes on TCP, datagrams on UDP."""
        self.emit: Callable[[Frame], None] = nowhere
        self.taken = self.sent = self.limit = start
        self.end: EndFrame | None = None
        self._kept: deque[DataFrame] = deque()
        self._room = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())
        entry.closing.append(self._socket_closed)

    def grant(self, taken: int, limit: int) -> None:
        """The client's receives took everything before `taken`, and it may take data up to `limit`. A grant is
        a call: the socket is in use."""
        self.entry.last_call = time.monotonic()
        if taken > self.taken:
            self.taken = min(taken, self.sent)
            while self._kept and self._kept[0].offset + self._length(self._kept[0]) <= self.taken:
                self._kept.popleft()
        self.limit = max(self.limit, min(limit, self.taken + self.cap))
        if self.sent < self.limit:
            self._room.set()

    def replay(self, taken: int) -> None:
        """Send again what a client whose receives took everything before `taken` may not have, then the end."""
        for frame in self._kept:
            if frame.offset + self._length(frame) > taken:
                self.emit(frame)
        if self.end is not None:
            self.emit(self.end)

    def stop(self) -> list[m.ReceiveResponse]:
        """Stop reading; what was read and no receive took, as answers to give back to the socket."""
        self.task.cancel()
        self._unhook()
        kept, self._kept = self._kept, deque()
        given = []
        for frame in kept:
            data = frame.data[max(0, self.taken - frame.offset) :] if self.entry.stream else frame.data
            peer = m.Address(host=frame.peer[0], port=frame.peer[1]) if frame.peer else None
            given.append(m.ReceiveResponse(data=data, peer=peer))
        return given

    async def _run(self) -> None:
        entry = self.entry
        async with entry.reader:  # its one reader for as long as the stream lives, so reads stay in order
            entry.reading_ahead = True
            try:
                while self.end is None:
                    while self.sent >= self.limit and entry.stream:  # a datagram stream reads on, and drops
                        self._room.clear()
                        await self._room.wait()
                    await self._pump()
            finally:
                entry.reading_ahead = False
                entry.streamed = None

    async def _pump(self) -> None:
        entry = self.entry
        pump = None
        try:
            if self._read_some():
                pump = entry.pump(self._read_some)
                await pump
        except OSError as exc:
            self._fail(exc)
        finally:
            if pump is not None:
                entry.unpump(pump)

    def _fail(self, exc: OSError) -> None:
        detail = detail_from_os_error(exc, "receive", self.entry.descriptor)
        self._finish(EndFrame(self.entry.descriptor, self.sent, detail.model_dump(mode="json", exclude_none=True)))

    def _socket_closed(self, reason: str) -> None:
        """The socket was closed (by a call, the reaper, or at shutdown): the stream ends with EBADF."""
        self._fail(OSError(errno.EBADF, reason))
        self.task.cancel()

    def _read_some(self) -> bool:
        """Read what is there (what a cancelled call gave back first) within the window; whether to read on."""
        entry = self.entry
        if self.sent >= self.limit:
            if entry.stream:
                return False
            return self._drop()
        if entry.held and isinstance(entry.held[0], m.ReceiveResponse):
            got = entry.held.popleft()
            assert isinstance(got, m.ReceiveResponse)
        else:
            try:
                got = read_now(entry, min(self.limit - self.sent, STREAM_CHUNK) if entry.stream else DATAGRAM)
            except BlockingIOError:
                return True
        entry.last_call = time.monotonic()
        if entry.stream and not got.data:
            self._finish(EndFrame(entry.descriptor, self.sent, None))
            return False
        peer = [got.peer.host, got.peer.port] if got.peer else None
        frame = DataFrame(entry.descriptor, self.sent, got.data, peer)
        self.sent += self._length(frame)
        entry.streamed = self.sent
        self._kept.append(frame)
        self.emit(frame)
        return self.sent < self.limit or not entry.stream

    def _drop(self) -> bool:
        """A datagram past a full window is read and counted as dropped, as a full kernel buffer drops it."""
        try:
            self.entry.sock.recv(DATAGRAM)
        except BlockingIOError:
            return True
        self.entry.dropped += 1
        self.entry.last_call = time.monotonic()  # data comes: the socket is in use, though its client lags
        return True

    def _length(self, frame: DataFrame) -> int:
        """How far a frame moves the stream's offset: its bytes, or one datagram."""
        return len(frame.data) if self.entry.stream else 1

    def _finish(self, end: EndFrame) -> None:
        if self.end is None:
            self.end = end
            self.emit(end)
        self._unhook()  # an ended stream needs no word of the socket's close (one started anew has its own)

    def _unhook(self) -> None:
        if self._socket_closed in self.entry.closing:
            self.entry.closing.remove(self._socket_closed)
