"""uvicorn's sans-I/O WebSocket protocol, reading on while a few messages wait for the app.

uvicorn's own pauses reading after every message until the app has taken it: two system calls and a
turn of the event loop per frame, which caps a channel's pipelined calls and bulk sends. This one
pauses only once `QUEUE` messages wait, as uvicorn's older WebSocket implementation did
(its `ws_max_queue`), so memory stays bounded by QUEUE frames.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

QUEUE = 32
"""Messages that may wait for the app before reading pauses."""


class ChannelProtocol(WebSocketsSansIOProtocol):
    def send_receive_event_to_app(self) -> None:
        paused = self.read_paused
        self.read_paused = True  # so uvicorn's method does not pause reading for this message
        super().send_receive_event_to_app()
        self.read_paused = paused
        if not paused and self.queue.qsize() >= QUEUE:
            self.read_paused = True
            self.transport.pause_reading()
