"""The gateway's web app: the agents' links, and every agent's endpoints under `/agents/<id>/`.

`/agents/<id>/v1/...` answers exactly what the agent's own port answers (the HTTP endpoints and the
channel), carried over the agent's link, so a client reaches a linked agent with nothing changed
but its URL: `Agent("https://GW/agents/<id>", token=<user token>)`. A user who may not use an agent
cannot tell it from one that does not exist; only an agent a user may use is ever reported offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

from protocol import HEALTH_PATH, PREFIX, RETRY_HEADER, ErrorBody, ErrorCode, ErrorDetail
from protocol.channel import CHANNEL_PATH, CLOSE_TOO_BIG, MAX_FRAME
from protocol.link import AGENT_HEADER, LINK_PATH, MAX_LINK_FRAME
from tap import TAP, Tap

from .links import CLOSE_OFFLINE, LinkedAgent, Links, Offline, quietly
from .replicas import REPLICA_PATH, RemoteAgent, Replicas
from .settings import Settings, User

log = logging.getLogger("engee.gateway")

RELAY_TIMEOUT = 75.0
"""Seconds a relayed request may take: a blocking call's longest wait (60 s) and some."""
OPEN_TIMEOUT = 10.0
"""Seconds an agent has to answer a channel's upgrade."""
PROBE_TIMEOUT = 2.0
"""Seconds the status page waits for an agent's health check."""
MAX_BODY = MAX_LINK_FRAME - 64 * 1024
"""The largest request body relayed: at least the agent's max_body."""
PASSED = frozenset({"content-type", "accept", "x-engee-call", "x-engee-boot", "x-engee-meta"})
"""Request headers that go on to the agent; the user's credentials stay here."""
DROPPED = frozenset({"content-length", "transfer-encoding", "connection"})


STATUS_PATH = f"{PREFIX}/status"


class AgentRow(BaseModel):
    agent_id: str
    online: bool
    since: float | None = None
    """When its link came up (seconds since the epoch)."""
    calls: int = 0
    """Requests and channels the gateway opened on its link."""
    rtt_ms: float | None = None
    """The round trip of a health check over its link, measured for this page; None when it is offline."""
    here: bool = False
    """Whether this replica holds its link; an online agent that is not here is linked to another replica."""


class GatewayStatus(BaseModel):
    user: str
    agents: list[AgentRow]


class Refusal(Exception):
    def __init__(self, code: ErrorCode, message: str, headers: dict[str, str] | None = None) -> None:
        self.code, self.message = code, message
        self.headers = headers or {}
        if code is ErrorCode.UNAUTHORIZED:
            self.headers["WWW-Authenticate"] = 'Bearer realm="engee-gateway"'

    def response(self, status: int | None = None) -> Response:
        body = ErrorBody(error=ErrorDetail(code=self.code, message=self.message)).to_json()
        return Response(
            body, status_code=status or self.code.status, media_type="application/json", headers=self.headers
        )


def create_app(settings: Settings) -> FastAPI:
    """The gateway's app; with NATS, `settings.advertise` names where the other replicas reach it (the CLI fills it
    in from the address it listens on)."""
    links = Links(settings.spin)
    replicas = None
    if settings.nats:
        if not settings.advertise:
            raise ValueError("a replica on NATS needs settings.advertise: the URL the other replicas reach it at")
        replicas = Replicas(
            settings.nats,
            settings.advertise,
            RELAY_TIMEOUT,
            OPEN_TIMEOUT,
            settings.grants,
            settings.link_ping,
            settings.spin,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if replicas is not None:
            await replicas.start()
        yield
        if replicas is not None:
            await replicas.stop()

    app = FastAPI(title="engee-sockets gateway", description="Agents that link out, reached by id.", lifespan=lifespan)
    app.state.links = links

    def user_of(headers: Any) -> User:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        user = settings.user(token) if scheme.lower() == "bearer" and token else None
        if user is None:
            problem = "wrong" if authorization else "missing"
            raise Refusal(
                ErrorCode.UNAUTHORIZED, f"{problem} token: pass your gateway token as 'Authorization: Bearer <token>'"
            )
        return user

    def reach(user: User, agent_id: str) -> LinkedAgent | RemoteAgent:
        """The agent's link here, or the way to the replica that holds it."""
        if agent_id not in user.agents or agent_id not in settings.agents:
            raise Refusal(ErrorCode.NOT_FOUND, f"no agent {agent_id!r} for {user.name} at this gateway")
        linked = links.get(agent_id)
        if linked is not None:
            return linked
        if replicas is not None:
            return replicas.remote(agent_id)
        raise Refusal(ErrorCode.AGENT_OFFLINE, f"agent {agent_id!r} is offline: it is not linked to the gateway")

    async def agent_row(agent_id: str, user: str) -> AgentRow:
        """What the status page says of one agent: its link here, or the one another replica holds."""
        if (linked := links.get(agent_id)) is not None:
            since, calls, here = linked.since, linked.calls, True
            way: LinkedAgent | RemoteAgent = linked
        elif replicas is not None and (held := await replicas.remote(agent_id).link_status(user, PROBE_TIMEOUT)):
            (since, calls), here = held, False
            way = replicas.remote(agent_id)
        else:
            return AgentRow(agent_id=agent_id, online=False)
        rtt = await _round_trip(way, user)
        return AgentRow(agent_id=agent_id, online=True, here=here, since=since, calls=calls, rtt_ms=rtt)

    @app.get(HEALTH_PATH)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(STATUS_PATH, response_model=GatewayStatus)
    async def status(request: Request) -> GatewayStatus | Response:
        """The agents the caller may use: online or not, since when, and how many calls went to each."""
        try:
            user = user_of(request.headers)
        except Refusal as refusal:
            return refusal.response()
        agent_ids = sorted(user.agents & set(settings.agents))
        rows = await asyncio.gather(*(agent_row(agent_id, user.name) for agent_id in agent_ids))
        return GatewayStatus(user=user.name, agents=rows)

    @app.websocket(LINK_PATH)
    async def link(websocket: WebSocket) -> None:
        agent_id = websocket.headers.get(AGENT_HEADER, "")
        scheme, _, key = websocket.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not settings.agent_key_matches(agent_id, key):
            await websocket.send_denial_response(
                Refusal(ErrorCode.UNAUTHORIZED, "this agent id and key do not link here").response()
            )
            return
        await websocket.accept()
        linked = await links.link(agent_id, websocket, websocket.scope[TAP])
        if replicas is not None:
            await replicas.serve(linked)
        try:
            linked.tap.attach(linked)
            while True:  # the frames go to the tap's listener; here only the end, or a text frame, comes
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                linked.received(b"")  # a text frame: no frame of the link's, closed as one
        except WebSocketDisconnect:
            pass
        finally:
            links.unlink(linked)
            if replicas is not None and links.get(agent_id) is None:
                await replicas.unserve(agent_id)

    @app.websocket("/agents/{agent_id}" + CHANNEL_PATH)
    async def channel(websocket: WebSocket, agent_id: str) -> None:
        try:
            user = user_of(websocket.headers)
            if "origin" in websocket.headers:
                raise Refusal(ErrorCode.PERMISSION_DENIED, "no web page may open a channel through the gateway")
            linked = reach(user, agent_id)
            request = {"kind": "channel", "path": CHANNEL_PATH, "query": websocket.url.query, "headers": []}
            stream, answer = await linked.open_channel(user.name, request, OPEN_TIMEOUT)
        except Refusal as refusal:
            await websocket.send_denial_response(refusal.response())
            return
        except (Offline, TimeoutError):
            await websocket.send_denial_response(_offline(agent_id).response())
            return
        if answer.status != 101:
            await websocket.send_denial_response(_response(answer.status, answer.headers, answer.body))
            return
        await _Relay(websocket, linked, stream, settings.spin).run()

    @app.websocket(REPLICA_PATH + "/{ticket}")
    async def replica(websocket: WebSocket, ticket: str) -> None:
        """A channel another replica relays to an agent whose link is held here, by the ticket this one gave."""
        claimed = replicas.claim(ticket) if replicas is not None else None
        if claimed is None:
            await websocket.send_denial_response(Refusal(ErrorCode.NOT_FOUND, "no such relayed channel").response())
            return
        await _Relay(websocket, *claimed, settings.spin).run()

    @app.api_route("/agents/{agent_id}/{path:path}", methods=["GET", "POST"])
    async def relay(agent_id: str, path: str, request: Request) -> Response:
        try:
            user = user_of(request.headers)
            linked = reach(user, agent_id)
        except Refusal as refusal:
            return refusal.response()
        body = await _body(request, MAX_BODY)
        if body is None:
            return Refusal(ErrorCode.PAYLOAD_TOO_LARGE, f"a body over {MAX_BODY} bytes is over the limit").response()
        headers = [[name, value] for name, value in request.headers.items() if name.lower() in PASSED]
        relayed = {
            "kind": "http",
            "method": request.method,
            "path": "/" + path,
            "query": request.url.query,
            "headers": headers,
            "body": body,
        }
        try:
            answer = await linked.request(user.name, relayed, RELAY_TIMEOUT)
        except (Offline, TimeoutError) as exc:  # a request the link lost on its way may be sent again
            return _offline(agent_id, not isinstance(exc, Offline) or exc.in_flight).response()
        return _response(answer.status, answer.headers, answer.body)

    return app


async def _round_trip(linked: LinkedAgent | RemoteAgent, user: str) -> float | None:
    """Milliseconds a health check takes over the agent's link, there and back (at most PROBE_TIMEOUT); from a
    replica that does not hold the link, by way of the one that does."""
    probe = {"kind": "http", "method": "GET", "path": HEALTH_PATH, "query": "", "headers": [], "body": b""}
    start = time.perf_counter()
    try:
        await linked.request(user, probe, PROBE_TIMEOUT)
    except (Offline, TimeoutError):
        return None
    return round((time.perf_counter() - start) * 1000, 2)


def _offline(agent_id: str, in_flight: bool = False) -> Refusal:
    message = f"agent {agent_id!r} went offline: its link to the gateway dropped"
    return Refusal(ErrorCode.AGENT_OFFLINE, message, {RETRY_HEADER: "1"} if in_flight else None)


def _response(status: int, headers: list[list[str]], body: bytes) -> Response:
    """The agent's answer as the notebook gets it; one no agent gives (a bad status or header) is a 502."""
    if not 100 <= status <= 599 or status == 101 or not all(_header(pair) for pair in headers):
        return Refusal(
            ErrorCode.INTERNAL, f"the agent answered with something no agent sends (HTTP {status})"
        ).response(502)
    response = Response(body, status_code=status)
    response.raw_headers.extend(
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
        if name.lower() not in DROPPED
    )  # a list, so a header given twice stays twice
    return response


def _header(pair: object) -> bool:
    return (
        isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(part, str) and "\r" not in part and "\n" not in part for part in pair)
    )


async def _body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it is over `limit` bytes (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class _Relay:
    """The notebook's side of one relayed channel: the listener of the notebook's tap, and the sink of the agent's
    frames. Each message goes on as it is parsed, with no task in between."""

    def __init__(self, websocket: WebSocket, linked: LinkedAgent | RemoteAgent, stream: int, spin: float) -> None:
        self.websocket, self.linked, self.stream, self.spin = websocket, linked, stream, spin
        self.tap: Tap = websocket.scope[TAP]
        self._closing: asyncio.Future[None] | None = None
        self._ended = False

    async def run(self) -> None:
        """Accept the notebook's WebSocket, then carry the channel until either side closes it, or the link drops.
        However it ends (the notebook gone even before the accept), the channel on the agent is closed too, so
        its session's grace time starts."""
        code = 1001
        try:
            await self.websocket.accept()
            self.linked.attach(self.stream, self)
            self.tap.attach(self)
            while True:  # the frames go to `received`; here only the end, or a text frame, comes
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    code = message.get("code", 1000)
                    return
                self.received(b"")  # a text frame: the agent refuses it as no frame of the channel's
        except WebSocketDisconnect:
            pass
        finally:
            self._ended = True
            if not 1000 <= code <= 1003 and not 3000 <= code <= 4999:  # 1005, 1006: heard, never sent on
                code = 1001
            with contextlib.suppress(Exception):  # the link or the other replica may be gone as well
                await self.linked.close_channel(self.stream, code)

    def received(self, data: bytes) -> None:
        if self._closing is not None:
            return
        if len(data) > MAX_FRAME:  # as the agent's own port would: this channel closes, the link stays
            self._close(CLOSE_TOO_BIG, f"a frame is at most {MAX_FRAME} bytes")
            return
        try:
            self.linked.to_agent(self.stream, data)
        except Offline:
            self._close(CLOSE_OFFLINE, "the agent went offline")

    def writable(self, ready: bool) -> None:
        """The notebook takes its messages slowly: they wait in its transport, bounded by its own grants."""

    def message(self, data: bytes) -> None:
        self.tap.write(data)
        self.tap.linger(self.spin)

    def closed(self, code: int, reason: str) -> None:
        if self._closing is None and not self._ended:
            self._close(code, reason)

    def hold(self, held: bool) -> None:
        if held:
            self.tap.pause()
        else:
            self.tap.resume()

    def _close(self, code: int, reason: str) -> None:
        self._closing = quietly(self.websocket.close(code, reason[:120]))
