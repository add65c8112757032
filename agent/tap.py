"""A tap: how a channel takes its client's messages and writes its own without a turn of ASGI per message.

ASGI's `receive()`/`send()` cost a task wakeup, a queue and a stack of middleware per message; a
channel carries thousands of small messages a second. So whatever serves the channel's WebSocket
(uvicorn's protocol in websocket.py, a stream of the gateway link in link.py) puts a `Tap` in the
connection's scope: once the channel has shaken hands through ASGI (the gate checked the token
there), it attaches itself, and from then on each binary message is handed to it as it is parsed
and each of its writes goes straight to the transport. Closing, and hearing that the client left,
stay on ASGI.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

TAP = "engee.tap"
"""The scope key of a WebSocket's tap."""


class Listener(Protocol):
    """What a tap hands messages to: the channel."""

    def received(self, data: bytes) -> None:
        """One binary message from the client, in order."""

    def writable(self, ready: bool) -> None:
        """The transport's buffer went over its mark (False), or drained below it again (True)."""


class Tap(Protocol):
    def attach(self, listener: Listener) -> None:
        """Hand every binary message to `listener` from now on, starting with those that wait already."""

    def write(self, data: bytes) -> None:
        """Send one binary message now; nothing when the connection is closing or gone."""

    def pause(self) -> None:
        """Hand over no more messages until `resume`: the listener has no room."""

    def resume(self) -> None: ...


def hand_over(queue: asyncio.Queue[Any], listener: Listener) -> int:
    """Give `listener` the binary messages waiting in an ASGI receive queue; the rest (a text message, a
    disconnect) stays there, in order, for the app's `receive()`. Returns the bytes handed over."""
    waiting = []
    while not queue.empty():
        waiting.append(queue.get_nowait())
    handed = 0
    for message in waiting:
        data = message.get("bytes") if message["type"] == "websocket.receive" else None
        if data is None:
            queue.put_nowait(message)
        else:
            handed += len(data)
            listener.received(data)
    return handed
