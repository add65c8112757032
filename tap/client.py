"""A websockets client connection that hands each data frame over as it is parsed.

websockets' asyncio connection queues every message for `recv()`, so each costs a task wakeup; a link
or a splice between replicas carries thousands of small messages a second. Made with
`websockets.connect(..., create_connection=TapConnection)`, a connection hands each data frame to
its `on_frame` from `data_received`, with no queue and no task in between; pings, pongs and the close
stay websockets' own. Frames that come before `on_frame` is set (with the handshake's answer, say)
wait, and are handed to it, in order, when it is set; `recv()` gets none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import DATA_OPCODES, Frame
from websockets.protocol import Event

from .spin import arrived


class TapConnection(ClientConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_frame: Callable[[Frame], None] | None = None
        self._early: list[Frame] = []

    @property
    def on_frame(self) -> Callable[[Frame], None] | None:
        return self._on_frame

    @on_frame.setter
    def on_frame(self, take: Callable[[Frame], None] | None) -> None:
        self._on_frame = take
        while take is not None and self._early and self._on_frame is take:
            take(self._early.pop(0))

    def data_received(self, data: bytes) -> None:
        arrived()
        super().data_received(data)

    def process_event(self, event: Event) -> None:
        if self.response is None or not isinstance(event, Frame) or event.opcode not in DATA_OPCODES:
            super().process_event(event)  # the handshake's answer, a ping, a pong, a close
        elif self._on_frame is not None:
            self._on_frame(event)
        else:
            self._early.append(event)
