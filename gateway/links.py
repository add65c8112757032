"""The agents' links a gateway holds, and the streams it has open on each.

A stream is one notebook request (answered by one RESPONSE frame) or one notebook channel (a 101
RESPONSE, then MESSAGE frames both ways until a CLOSE). When a link drops, every request waiting
on it fails with `Offline` and every channel on it closes, so a notebook hears at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from starlette.websockets import WebSocket

from protocol.channel import CLOSE_PROTOCOL
from protocol.link import Close, LinkError, LinkFrame, Message, Open, Response, decode, encode_parts
from tap import Tap

log = logging.getLogger("engee.gateway")

CLOSE_REPLACED = 4001
"""A link closed because the same agent linked again."""
CLOSE_OFFLINE = 1012
"""A notebook's channel closed because its agent's link dropped (the client links again with backoff)."""


class Offline(Exception):
    """The agent is not linked; `in_flight`: its link dropped with the request on it (or as it was written), so
    what became of the request is unknown, and the client may send it again under the same call id."""

    def __init__(self, in_flight: bool = False) -> None:
        super().__init__("in flight" if in_flight else "not linked")
        self.in_flight = in_flight


def quietly(work: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
    """`work` as a task nobody waits for: a close of something that is gone already fails, and that is no news."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


class Sink(Protocol):
    """Where the agent's frames on one channel stream go: the notebook's side of the relay."""

    def message(self, data: bytes) -> None:
        """One message of the agent's, in order."""

    def closed(self, code: int, reason: str) -> None:
        """The stream is over: the agent closed it, or its link dropped (CLOSE_OFFLINE)."""

    def hold(self, held: bool) -> None:
        """The way to the agent is full (True): take no more from the notebook until it drains (False)."""


class LinkedAgent:
    """One agent's link and the streams open on it; the listener of the link's tap.

    Everything on the link is relayed as it is parsed, with no task between the two WebSockets: a
    notebook's message is written to the link at once, and the agent's to the notebook's sink.
    """

    def __init__(self, agent_id: str, websocket: WebSocket, tap: Tap, spin: float) -> None:
        self.agent_id = agent_id
        self.websocket = websocket
        self.tap = tap
        self.spin = spin
        """Seconds to poll for the agent's answer after a write (tap/spin.py)."""
        self.since = time.time()
        self.calls = 0
        self._numbers = itertools.count(1)
        self._answers: dict[int, asyncio.Future[Response]] = {}
        self._sinks: dict[int, Sink | list[Message | Close]] = {}
        """Each channel stream's sink; the frames that came before it was attached."""
        self._full = False
        self._closing: asyncio.Future[None] | None = None

    async def request(self, user: str, request: dict[str, Any], timeout: float) -> Response:
        """Send one HTTP request of `user` over the link; its response, or Offline, or TimeoutError."""
        stream, answer = self._open()
        try:
            self._send(Open(stream, user, request))
            return await asyncio.wait_for(answer, timeout)
        finally:
            self._answers.pop(stream, None)

    async def open_channel(self, user: str, request: dict[str, Any], timeout: float) -> tuple[int, Response]:
        """Open a channel of `user` on the agent: its stream and the agent's answer to the upgrade (101: open).
        Once open, `attach` its sink."""
        stream, answer = self._open()
        self._sinks[stream] = []
        try:
            self._send(Open(stream, user, request))
            response = await asyncio.wait_for(answer, timeout)
        except BaseException:
            self._sinks.pop(stream, None)
            raise
        finally:
            self._answers.pop(stream, None)
        if response.status != 101:
            self._sinks.pop(stream, None)
        return stream, response

    def attach(self, stream: int, sink: Sink) -> None:
        """The agent's frames on `stream` go to `sink` from now on, starting with those that came already."""
        early = self._sinks.get(stream)
        if not isinstance(early, list):
            sink.closed(CLOSE_OFFLINE, "the agent went offline")
            return
        self._sinks[stream] = sink
        for frame in early:
            self._deliver(stream, sink, frame)
        if self._full:
            sink.hold(True)

    def to_agent(self, stream: int, data: bytes) -> None:
        self._send(Message(stream, data))

    async def close_channel(self, stream: int, code: int) -> None:
        """End a channel stream: on the agent, and for its sink here."""
        if self._sinks.pop(stream, None) is not None:
            self._send(Close(stream, code, ""))

    def received(self, data: bytes) -> None:
        """A frame from the agent, as the link's tap parsed it."""
        if self._closing is not None:
            return
        try:
            self.take(decode(data))
        except LinkError as exc:
            log.warning("a bad frame on the link of %s: %s", self.agent_id, exc)
            self._closing = quietly(self.websocket.close(CLOSE_PROTOCOL, str(exc)[:120]))

    def writable(self, ready: bool) -> None:
        """The link's buffer is over its mark (or below it again): its channels' notebooks wait (or go on)."""
        self._full = not ready
        for sink in list(self._sinks.values()):
            if not isinstance(sink, list):
                sink.hold(self._full)

    def take(self, frame: LinkFrame) -> None:
        """A frame from the agent."""
        if isinstance(frame, Response):
            if (answer := self._answers.get(frame.stream)) is not None and not answer.done():
                answer.set_result(frame)
        elif isinstance(frame, Message | Close) and (sink := self._sinks.get(frame.stream)) is not None:
            if isinstance(sink, list):
                sink.append(frame)  # a close among them too: the sink attached gets it, after what came before
            else:
                self._deliver(frame.stream, sink, frame)

    def lost(self) -> None:
        """The link dropped: every stream on it ends."""
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(Offline(in_flight=True))
        sinks = list(self._sinks.values())
        self._answers.clear()
        self._sinks.clear()
        for sink in sinks:
            if not isinstance(sink, list):
                sink.closed(CLOSE_OFFLINE, "the agent went offline")

    def _deliver(self, stream: int, sink: Sink, frame: Message | Close) -> None:
        if isinstance(frame, Message):
            sink.message(frame.data)
        else:
            self._sinks.pop(stream, None)
            sink.closed(frame.code, frame.reason)

    def _open(self) -> tuple[int, asyncio.Future[Response]]:
        stream = next(self._numbers)
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._answers[stream] = answer
        self.calls += 1
        return stream, answer

    def _send(self, frame: LinkFrame) -> None:
        if not self.tap.write(*encode_parts(frame)):  # the link is gone as we write
            raise Offline(in_flight=True)
        self.tap.linger(self.spin)


class Links:
    """The agents linked to this gateway, by id."""

    def __init__(self, spin: float = 0.0) -> None:
        self.spin = spin
        """Seconds each link polls for its agent's answer after a write (tap/spin.py)."""
        self._linked: dict[str, LinkedAgent] = {}

    def get(self, agent_id: str) -> LinkedAgent | None:
        return self._linked.get(agent_id)

    async def link(self, agent_id: str, websocket: WebSocket, tap: Tap) -> LinkedAgent:
        """`websocket` is the agent's link from now on; an earlier one (a link that died silently) gives way."""
        earlier = self._linked.get(agent_id)
        linked = self._linked[agent_id] = LinkedAgent(agent_id, websocket, tap, self.spin)
        if earlier is not None:
            earlier.lost()
            with contextlib.suppress(Exception):  # a link that is gone already (a disconnect, a closed socket)
                await earlier.websocket.close(CLOSE_REPLACED, "the agent linked again")
        log.warning("agent %s linked", agent_id)
        return linked

    def unlink(self, linked: LinkedAgent) -> None:
        linked.lost()
        if self._linked.get(linked.agent_id) is linked:
            del self._linked[linked.agent_id]
            log.warning("agent %s is offline", linked.agent_id)
