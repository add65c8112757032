"""uvicorn's sans-I/O WebSocket protocol with a tap, reading on while a few messages wait for the app.

uvicorn's own pauses reading after every message until the app has taken it: two system calls and a
turn of the event loop per frame. This one pauses only once `QUEUE` messages or `QUEUE_BYTES` bytes
wait, as uvicorn's older WebSocket implementation did (its `ws_max_queue`), so memory stays bounded
all the same; and once an endpoint has attached to its tap, it hands each binary message over as it
is parsed, pausing only while it says it has no room. Run uvicorn with `ws=TapProtocol`.
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.speedups import apply_mask

from . import TAP, Listener, hand_over
from .spin import Spin, arrived

QUEUE = 32
"""Messages that may wait for the app before reading pauses."""
QUEUE_BYTES = 32 << 20
"""Bytes that may wait for the app before reading pauses."""


class TapProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queued_bytes = 0
        self.listener: Listener | None = None
        self._held = False
        """Paused by the listener."""
        self._upgraded = False
        self._fed = False
        """Whether websockets was given bytes after the upgrade request: then it parses this connection to the end."""
        self._own: list[bytes] | None = None
        """Once the listener is attached (and websockets holds no frame bytes), the frames not parsed yet: from then
        on binary messages, pings and pongs are parsed here, each message handed over as it completes."""
        self._own_size = 0
        self._own_at = 0
        """Where in the first of `_own` the bytes not taken yet begin."""
        self._fragments: list[bytes] | None = None
        self._spin = Spin()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if getattr(self, "scope", None) is not None:  # an upgrade to be answered by the app
            self.scope[TAP] = self  # type: ignore[literal-required]

    def attach(self, listener: Listener) -> None:
        self.queued_bytes -= hand_over(self.queue, listener)
        self.listener = listener
        if not self._fed and not self.close_sent:
            self._own, self._own_size, self._own_at = [], 0, 0
        self._read_as_wanted()

    def data_received(self, data: bytes) -> None:
        arrived()
        if self._own is not None:
            self._own.append(data)
            self._own_size += len(data)
            self._parse()
            return
        self._fed = self._upgraded
        super().data_received(data)
        self._upgraded = self._upgraded or getattr(self, "scope", None) is not None
        self._fed = self._fed or bool(self.conn.reader.buffer)

    def _parse(self) -> None:
        """Take the whole frames `_own` holds (RFC 6455 section 5): a binary message goes to the listener, a ping
        is answered, a pong goes to uvicorn's keepalive. Anything else (a close, a text or fragmented text frame,
        a frame over the size limit, one with extension bits) is handed to websockets from that frame on, for
        uvicorn to answer as it does, and this connection is parsed there to the end."""
        limit = self.config.ws_max_size
        while self._own is not None and self._own_size >= 6:
            head = self._peek(14)
            first, second = head[0], head[1]
            opcode, length, at = first & 0x0F, second & 0x7F, 2
            if length == 126:
                length, at = int.from_bytes(head[2:4]), 4
            elif length == 127:
                if len(head) < 14:
                    return
                length, at = int.from_bytes(head[2:10]), 10
            control = opcode >= 8
            usual = opcode in _OURS and not first & 0x70 and second & 0x80 and length <= limit
            if not usual or (control and (not first & 0x80 or length > 125)):
                self._give_to_websockets()  # which refuses or answers it as uvicorn does
                return
            if (opcode == 0) == (self._fragments is None) and not control:
                self._own = None  # a continuation of nothing, or a message begun inside another
                self.conn.fail(1002, "a fragmented message out of order")
                self.handle_parser_exception()
                return
            if self._own_size < at + 4 + length:
                return
            frame = self._take(at + 4 + length)
            self._frame(first & 0x80 != 0, opcode, apply_mask(frame[at + 4 :], bytes(frame[at : at + 4])))

    def _peek(self, size: int) -> bytes:
        """Up to `size` bytes from the front of what came, the chunks they span joined into the first."""
        chunks, at = self._own, self._own_at
        assert chunks is not None
        if len(chunks[0]) - at < size and len(chunks) > 1:
            count, have = 1, len(chunks[0]) - at
            while have < size and count < len(chunks):
                have += len(chunks[count])
                count += 1
            chunks[:count] = [b"".join([chunks[0][at:], *chunks[1:count]])]
            self._own_at = at = 0
        return chunks[0][at : at + size]

    def _take(self, size: int) -> memoryview:
        """The first `size` bytes of what came, taken: a view of the chunk that holds them, or one join of the
        chunks they span; the rest is not copied (a burst of small frames in one chunk costs no copy each)."""
        chunks, at = self._own, self._own_at
        assert chunks is not None
        self._own_size -= size
        first = chunks[0]
        if len(first) - at >= size:
            self._own_at = at + size
            if self._own_at == len(first):
                del chunks[0]
                self._own_at = 0
            return memoryview(first)[at : at + size]
        taken, count = len(first) - at, 1
        while taken < size:
            taken += len(chunks[count])
            count += 1
        data = b"".join([first[at:], *chunks[1:count]])
        del chunks[:count]
        if taken > size:
            chunks.insert(0, data)
            self._own_at = size
        else:
            self._own_at = 0
        return memoryview(data)[:size]

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == _PING:
            if not self.close_sent:
                self.transport.write(bytes((0x8A, len(payload))) + payload)
        elif opcode == _PONG:
            self.handle_pong(Frame(Opcode.PONG, payload))
        elif fin and self._fragments is None:
            self.frames, self.curr_msg_data_type = [payload], "bytes"
            self.send_receive_event_to_app()
        else:
            self._fragments = (self._fragments or []) + [payload]
            if fin:
                self.frames, self.curr_msg_data_type, self._fragments = self._fragments, "bytes", None
                self.send_receive_event_to_app()

    def _give_to_websockets(self) -> None:
        rest = b"".join(self._own or [])[self._own_at :]
        self._own = self._fragments = None  # a message begun here and not ended goes with the connection's end
        super().data_received(rest)

    def write(self, *parts: bytes) -> bool:
        """One final binary frame, its header written here (a server's frames are not masked, and a frame without
        RSV1 is plain whatever extension was negotiated), so a message costs no frame object and no copy."""
        if self.disconnected or self.close_sent or self.conn.state is not State.OPEN:
            return False
        self.transport.writelines([_binary_header(sum(map(len, parts))), *parts])
        return True

    def linger(self, seconds: float) -> None:
        self._spin.soon(seconds)

    def pause(self) -> None:
        self._held = True
        self._read_as_wanted()

    def resume(self) -> None:
        self._held = False
        self._read_as_wanted()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.listener is not None:
            self.listener.writable(False)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.listener is not None:
            self.listener.writable(True)

    def send_receive_event_to_app(self) -> None:
        if self.listener is not None and self.curr_msg_data_type == "bytes" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            self.frames = []
            self.listener.received(data)
            return
        self.queued_bytes += sum(len(frame) for frame in self.frames)
        paused = self.read_paused
        self.read_paused = True  # so uvicorn's method does not pause reading for this message
        super().send_receive_event_to_app()
        self.read_paused = paused
        self._read_as_wanted()

    async def receive(self) -> Any:
        message = await super().receive()
        data = message.get("bytes") or message.get("text") or b""
        self.queued_bytes -= len(data) if isinstance(data, bytes | str) else 0
        self._read_as_wanted()
        return message

    def _read_as_wanted(self) -> None:
        """Pause or resume reading the socket, as the app's queue and the listener have room."""
        full = self._held or self.queue.qsize() >= QUEUE or self.queued_bytes >= QUEUE_BYTES
        if full != self.read_paused and not self.close_sent:
            self.read_paused = full
            if full:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()


_PING, _PONG = Opcode.PING.value, Opcode.PONG.value
_OURS = frozenset({Opcode.CONT.value, Opcode.BINARY.value, _PING, _PONG})
"""What a channel's client sends in the course of things: binary messages (in fragments or not) and pings."""


def _binary_header(length: int) -> bytes:
    """A final, unmasked binary frame's header (RFC 6455 section 5.2), as a server sends it."""
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return struct.pack("!BBH", 0x82, 126, length)
    return struct.pack("!BBQ", 0x82, 127, length)
