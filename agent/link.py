"""The agent's link out to a gateway: it dials, and serves what comes over the link with its own app.

An agent behind NAT has no port the cloud can reach, so it opens a WebSocket to the gateway
(`protocol/link.py`) and keeps it: heartbeats both ways, relinking with capped, jittered backoff
when it drops, trying each gateway URL in turn. Each stream the gateway opens is served by the
agent's own ASGI app, as a request on its own port would be, with the gateway's user as the
caller (the gate names it `gateway:<user>`): one dispatcher, one ledger and one policy for every
way in. The link is a tiny ASGI server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import deque
from typing import Any

import websockets
from starlette.types import ASGIApp, Message
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from protocol.channel import PING_INTERVAL
from protocol.link import (
    AGENT_HEADER,
    LINK_PATH,
    MAX_LINK_FRAME,
    Close,
    LinkError,
    LinkFrame,
    Open,
    Response,
    decode,
    encode,
)
from protocol.link import (
    Message as LinkMessage,
)
from tap import TAP, Listener, hand_over
from tap.client import TapConnection
from tap.spin import Spin

from .gate import LINK_USER

log = logging.getLogger("engee.agent")

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
"""Seconds between attempts to link: from half a second, doubling, jittered, at most this."""
LINK_PING = PING_INTERVAL
"""Seconds between pings on the link; a ping unanswered for as long marks it dead."""


class AgentLink:
    """Keeps this agent linked to one of `gateways` as `agent_id`, serving `app` over the link."""

    def __init__(
        self,
        app: ASGIApp,
        gateways: tuple[str, ...],
        agent_id: str,
        key: str,
        *,
        verify: ssl.SSLContext | None = None,
        ping_interval: float = LINK_PING,
    ) -> None:
        self.app = app
        self.gateways = gateways
        self.agent_id = agent_id
        self._headers = {"Authorization": f"Bearer {key}", AGENT_HEADER: agent_id}
        self._ssl = verify
        self.ping_interval = ping_interval
        self.state = "starting"
        """What the status page shows: linking, linked to URL, or waiting to link again."""

    async def run(self) -> None:
        """Link, serve, and link again when the link drops, until cancelled."""
        attempt = 0
        while True:
            for url in self.gateways:
                self.state = f"linking to {url}"
                try:
                    async with await self._connect(url) as link:
                        attempt = 0
                        self.state = f"linked to {url}"
                        log.warning("linked to the gateway %s as agent %s", url, self.agent_id)
                        await self._serve(link)
                except InvalidStatus as refused:
                    log.error("the gateway %s refused the link: HTTP %s", url, refused.response.status_code)
                except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
                    log.warning("the link to %s is down: %s", url, exc or type(exc).__name__)
                except Exception:
                    log.exception("the link to %s failed", url)
            pause = min(BACKOFF_CAP, BACKOFF_FIRST * 2**attempt) * random.uniform(0.5, 1.0)
            attempt = min(attempt + 1, 16)
            self.state = f"linking again in {pause:.1f} s"
            await asyncio.sleep(pause)

    async def _connect(self, gateway: str) -> ClientConnection:
        url = gateway.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1) + LINK_PATH
        return await websockets.connect(
            url,
            create_connection=TapConnection,
            additional_headers=self._headers,
            ssl=(self._ssl or True) if url.startswith("wss:") else None,  # True: the system's trusted CAs
            max_size=MAX_LINK_FRAME,
            compression=None,
            open_timeout=10,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            close_timeout=1,
            user_agent_header=None,
        )

    async def _serve(self, link: ClientConnection) -> None:
        """Serve one link until it ends. Its streams are its own: a new link numbers them afresh."""
        streams: dict[int, _Stream] = {}
        spin = Spin()
        bad: asyncio.Future[None] | None = None

        def on_frame(message: Frame) -> None:
            nonlocal bad
            if bad is not None:
                return  # closing: nothing after a bad frame is taken
            try:
                if message.opcode is not Opcode.BINARY or not message.fin:
                    raise LinkError("the gateway sends whole binary frames only")
                self._take(decode(bytes(message.data)), link, spin, streams)
            except LinkError as exc:
                log.error("a bad frame from the gateway: %s", exc)
                bad = asyncio.ensure_future(link.close(4000, str(exc)[:120]))

        assert isinstance(link, TapConnection)
        try:
            link.on_frame = on_frame  # which takes the frames that came already, first
            await link.wait_closed()
        finally:
            link.on_frame = None
            for stream in streams.values():
                stream.end()

    def _take(self, frame: LinkFrame, link: ClientConnection, spin: Spin, streams: dict[int, _Stream]) -> None:
        if isinstance(frame, Open):
            if frame.stream not in streams:
                stream = streams[frame.stream] = _Stream(frame, link, spin)
                task = asyncio.ensure_future(stream.serve(self.app))
                task.add_done_callback(lambda _: streams.pop(frame.stream, None))
        elif (known := streams.get(frame.stream)) is not None:
            known.take(frame)


class _Stream:
    """One request, or one channel, of a gateway user, served by the agent's app; a channel's tap (tap.py)."""

    def __init__(self, opened: Open, link: ClientConnection, spin: Spin) -> None:
        self.opened = opened
        self.link = link
        self._spin = spin
        """The link's: what the gateway sends next comes on it, for whichever stream."""
        self.number = opened.stream
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._status = 0
        self._headers: list[list[str]] = []
        self._body = bytearray()
        self._answered = False
        self._listener: Listener | None = None
        self._held: deque[bytes] | None = None
        """While paused: the messages that came meanwhile."""

    async def serve(self, app: ASGIApp) -> None:
        request = self.opened.request
        kind = "websocket" if request.get("kind") == "channel" else "http"
        scope = _scope(kind, self.opened.user, request)
        scope[TAP] = self
        if kind == "http":
            self._incoming.put_nowait({"type": "http.request", "body": request.get("body", b""), "more_body": False})
        else:
            self._incoming.put_nowait({"type": "websocket.connect"})
        try:
            await app(scope, self._incoming.get, self._send)
        except Exception:
            log.exception("serving stream %d of %s over the link", self.number, self.opened.user)
            await self._reply(Response(self.number, 500, [], b""))
        if kind == "http" and not self._answered:
            await self._reply(Response(self.number, self._status or 500, self._headers, bytes(self._body)))

    def take(self, frame: LinkFrame) -> None:
        """A frame of this stream from the gateway: a channel message, or its end."""
        if isinstance(frame, LinkMessage):
            if self._held is not None:
                self._held.append(frame.data)
            elif self._listener is not None:
                self._listener.received(frame.data)
            else:
                self._incoming.put_nowait({"type": "websocket.receive", "bytes": frame.data})
        elif isinstance(frame, Close):
            self.end(frame.code)

    def end(self, code: int = 1006) -> None:
        """The notebook went away, or the link did."""
        kind = "websocket.disconnect" if self.opened.request.get("kind") == "channel" else "http.disconnect"
        self._incoming.put_nowait({"type": kind, "code": code})
        self._answered = True  # nobody is there to hear it

    def attach(self, listener: Listener) -> None:
        hand_over(self._incoming, listener)
        self._listener = listener

    def write(self, *parts: bytes) -> bool:
        """The link is shared by every stream, so this writes whole link frames, as `send` does, without waiting
        for the buffer to drain: what a channel writes is bounded by its calls and its client's grants."""
        if self.link.protocol.state is not State.OPEN or self._answered:
            return False
        data = parts[0] if len(parts) == 1 else b"".join(parts)  # masked on the way out: a copy either way
        self.link.protocol.send_binary(encode(LinkMessage(self.number, data)))
        self.link.send_data()
        return True

    def linger(self, seconds: float) -> None:
        self._spin.soon(seconds)

    def pause(self) -> None:
        if self._held is None:
            self._held = deque()

    def resume(self) -> None:
        held, self._held = self._held, None
        while held and self._listener is not None:
            self._listener.received(held.popleft())
            if self._held is not None:  # paused again by that message: the rest waits on
                self._held.extendleft(reversed(held))
                return

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("http.response.start", "websocket.http.response.start"):
            self._status = message["status"]
            self._headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in message.get("headers", [])]
        elif kind in ("http.response.body", "websocket.http.response.body"):
            self._body += message.get("body", b"")
            if not message.get("more_body", False):
                await self._reply(Response(self.number, self._status, self._headers, bytes(self._body)))
        elif kind == "websocket.accept":
            headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in message.get("headers", [])]
            await self._reply(Response(self.number, 101, headers, b""))
        elif kind == "websocket.send":
            await self._write(LinkMessage(self.number, message.get("bytes") or b""))
        elif kind == "websocket.close":
            await self._write(Close(self.number, message.get("code", 1000), message.get("reason") or ""))
            self._answered = True
            self._incoming.put_nowait({"type": "websocket.disconnect", "code": message.get("code", 1000)})

    async def _reply(self, response: Response) -> None:
        if not self._answered:
            self._answered = response.status != 101
            await self._write(response)

    async def _write(self, frame: LinkFrame) -> None:
        try:
            await self.link.send(encode(frame))
        except ConnectionClosed:
            raise OSError("the link to the gateway is down") from None


def _scope(kind: str, user: str, request: dict[str, Any]) -> dict[str, Any]:
    """The ASGI scope of a request that came over the link, as the agent's port would have made it."""
    path = str(request.get("path", "/"))
    headers = [(str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in request.get("headers", [])]
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws" if kind == "websocket" else "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": str(request.get("query", "")).encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": ("gateway", 0),
        "server": ("link", 0),
        "state": {},
        LINK_USER: user,
    }
    if kind == "http":
        scope["method"] = str(request.get("method", "GET")).upper()
    else:
        scope["subprotocols"] = []
        scope["extensions"] = {"websocket.http.response": {}}
    return scope
