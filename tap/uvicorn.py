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
from websockets.protocol import State

from . import TAP, Listener, hand_over

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

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if getattr(self, "scope", None) is not None:  # an upgrade to be answered by the app
            self.scope[TAP] = self  # type: ignore[literal-required]

    def attach(self, listener: Listener) -> None:
        self.queued_bytes -= hand_over(self.queue, listener)
        self.listener = listener
        self._read_as_wanted()

    def write(self, *parts: bytes) -> bool:
        """One final binary frame, its header written here (a server's frames are not masked, and a frame without
        RSV1 is plain whatever extension was negotiated), so a message costs no frame object and no copy."""
        if self.disconnected or self.close_sent or self.conn.state is not State.OPEN:
            return False
        self.transport.writelines([_binary_header(sum(map(len, parts))), *parts])
        return True

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


def _binary_header(length: int) -> bytes:
    """A final, unmasked binary frame's header (RFC 6455 section 5.2), as a server sends it."""
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return struct.pack("!BBH", 0x82, 126, length)
    return struct.pack("!BBQ", 0x82, 127, length)
