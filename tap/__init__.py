"""A tap: how a WebSocket endpoint takes its peer's messages and writes its own without a turn of ASGI per message.

ASGI's `receive()`/`send()` cost a task wakeup, a queue and a stack of middleware per message; a
channel carries thousands of small messages a second, and a gateway relays each of them twice. So
whatever serves the WebSocket (uvicorn's protocol in `tap.uvicorn`, a stream of the agent's
gateway link in agent/link.py) puts a `Tap` in the connection's scope: once the endpoint has
shaken hands through ASGI (where the token was checked), it attaches itself, and from then on each
binary message is handed to it as it is parsed and each of its writes goes straight to the
transport. Closing, and hearing that the peer left, stay on ASGI.

The agent and the gateway both serve WebSockets this way; this package is the server-side glue
they share, and it knows nothing of either.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

TAP = "engee.tap"
"""The scope key of a WebSocket's tap."""


class Listener(Protocol):
    """What a tap hands messages to: an agent's channel, or one side of a gateway's relay."""

    def received(self, data: bytes) -> None:
        """One binary message from the client, in order."""

    def writable(self, ready: bool) -> None:
        """The transport's buffer went over its mark (False), or drained below it again (True)."""


class Tap(Protocol):
    def attach(self, listener: Listener) -> None:
        """Hand every binary message to `listener` from now on, starting with those that wait already."""

    def write(self, *parts: bytes) -> bool:
        """Send one binary message made of `parts`, back to back (a bulk payload among them is not copied);
        False, and nothing sent, when the connection is closing or gone."""

    def linger(self, seconds: float) -> None:
        """The listener wrote: keep the event loop awake for up to `seconds` for what comes next (tap/spin.py)."""

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
