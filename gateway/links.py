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
from typing import Any, Protocol

from protocol.link import Close, LinkFrame, Message, Open, Response, encode

log = logging.getLogger("engee.gateway")

CLOSE_REPLACED = 4001
"""A link closed because the same agent linked again."""
CLOSE_OFFLINE = 1012
"""A notebook's channel closed because its agent's link dropped (the client links again with backoff)."""


class Offline(Exception):
    """The agent's link dropped while a stream waited on it."""


class Carrier(Protocol):
    """What a link rides on: the gateway's WebSocket to the agent."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class LinkedAgent:
    """One agent's link and the streams open on it."""

    def __init__(self, agent_id: str, carrier: Carrier) -> None:
        self.agent_id = agent_id
        self.carrier = carrier
        self.since = time.time()
        self.calls = 0
        self._numbers = itertools.count(1)
        self._answers: dict[int, asyncio.Future[Response]] = {}
        self._channels: dict[int, asyncio.Queue[Message | Close | None]] = {}
        self._writing = asyncio.Lock()

    async def request(self, user: str, request: dict[str, Any], timeout: float) -> Response:
        """Send one HTTP request of `user` over the link; its response, or Offline, or TimeoutError."""
        stream, answer = self._open()
        try:
            await self._send(Open(stream, user, request))
            return await asyncio.wait_for(answer, timeout)
        finally:
            self._answers.pop(stream, None)

    async def open_channel(self, user: str, request: dict[str, Any], timeout: float) -> tuple[int, Response]:
        """Open a channel of `user` on the agent: its stream and the agent's answer to the upgrade (101: open)."""
        stream, answer = self._open()
        self._channels[stream] = asyncio.Queue()
        try:
            await self._send(Open(stream, user, request))
            response = await asyncio.wait_for(answer, timeout)
        except BaseException:
            self._channels.pop(stream, None)
            raise
        finally:
            self._answers.pop(stream, None)
        if response.status != 101:
            self._channels.pop(stream, None)
        return stream, response

    async def from_agent(self, stream: int) -> Message | Close | None:
        """The next frame the agent sends on a channel stream; None when the link dropped."""
        queue = self._channels.get(stream)
        return await queue.get() if queue is not None else None

    async def to_agent(self, stream: int, data: bytes) -> None:
        await self._send(Message(stream, data))

    async def close_channel(self, stream: int, code: int) -> None:
        """End a channel stream: on the agent, and for whoever waits for its next frame here."""
        if (queue := self._channels.pop(stream, None)) is not None:
            queue.put_nowait(None)
            await self._send(Close(stream, code, ""))

    def take(self, frame: LinkFrame) -> None:
        """A frame from the agent."""
        if isinstance(frame, Response):
            if (answer := self._answers.get(frame.stream)) is not None and not answer.done():
                answer.set_result(frame)
        elif isinstance(frame, Message | Close) and (queue := self._channels.get(frame.stream)) is not None:
            queue.put_nowait(frame)
            if isinstance(frame, Close):
                del self._channels[frame.stream]

    def lost(self) -> None:
        """The link dropped: every stream on it ends."""
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(Offline())
        for queue in self._channels.values():
            queue.put_nowait(None)
        self._answers.clear()
        self._channels.clear()

    def _open(self) -> tuple[int, asyncio.Future[Response]]:
        stream = next(self._numbers)
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._answers[stream] = answer
        self.calls += 1
        return stream, answer

    async def _send(self, frame: LinkFrame) -> None:
        try:
            async with self._writing:
                await self.carrier.send_bytes(encode(frame))
        except (OSError, RuntimeError) as exc:  # the link is gone as we write
            raise Offline() from exc


class Links:
    """The agents linked to this gateway, by id."""

    def __init__(self) -> None:
        self._linked: dict[str, LinkedAgent] = {}

    def get(self, agent_id: str) -> LinkedAgent | None:
        return self._linked.get(agent_id)

    async def link(self, agent_id: str, carrier: Carrier) -> LinkedAgent:
        """`carrier` is the agent's link from now on; an earlier one (a link that died silently) gives way."""
        earlier = self._linked.get(agent_id)
        linked = self._linked[agent_id] = LinkedAgent(agent_id, carrier)
        if earlier is not None:
            earlier.lost()
            with contextlib.suppress(Exception):  # a link that is gone already (a disconnect, a closed socket)
                await earlier.carrier.close(CLOSE_REPLACED, "the agent linked again")
        log.warning("agent %s linked", agent_id)
        return linked

    def unlink(self, linked: LinkedAgent) -> None:
        linked.lost()
        if self._linked.get(linked.agent_id) is linked:
            del self._linked[linked.agent_id]
            log.warning("agent %s is offline", linked.agent_id)
