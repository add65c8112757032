"""uvicorn's sans-I/O WebSocket protocol, reading on while a few messages wait for the app.

uvicorn's own pauses reading after every message until the app has taken it: two system calls and a
turn of the event loop per frame, which caps a channel's pipelined calls and bulk sends. This one
pauses only once `QUEUE` messages or `QUEUE_BYTES` bytes wait, as uvicorn's older WebSocket
implementation did (its `ws_max_queue`), so a channel's memory stays bounded all the same.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

QUEUE = 32
"""Messages that may wait for the app before reading pauses."""
QUEUE_BYTES = 32 << 20
"""Bytes that may wait for the app before reading pauses."""


class ChannelProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queued_bytes = 0

    def send_receive_event_to_app(self) -> None:
        self.queued_bytes += sum(len(frame) for frame in self.frames)
        paused = self.read_paused
        self.read_paused = True  # so uvicorn's method does not pause reading for this message
        super().send_receive_event_to_app()
        self.read_paused = paused
        if not paused and (self.queue.qsize() >= QUEUE or self.queued_bytes >= QUEUE_BYTES):
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> Any:
        message = await super().receive()
        data = message.get("bytes") or message.get("text") or b""
        self.queued_bytes -= len(data) if isinstance(data, bytes | str) else 0
        if self.read_paused and self.queue.qsize() < QUEUE and self.queued_bytes < QUEUE_BYTES:
            self.read_paused = False
            self.transport.resume_reading()
        return message
