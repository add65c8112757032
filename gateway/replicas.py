"""Gateway replicas on NATS: any replica answers for any agent, whichever replica holds its link.

The replica holding an agent's link subscribes to `engee.agent.<id>`. Another replica carries a
notebook's HTTP request there as a NATS request (its link frames as they are: an OPEN, answered by
a RESPONSE); "no responders" means no replica holds the link, so the agent is offline. A channel
opens the same way, and the holder answers its 101 with a one-time ticket: the notebook's replica
then dials the holder's `REPLICA_PATH/<ticket>` (at the URL the holder advertises) and the two
splice the channel over that WebSocket, message by message as each is parsed. So a channel's
frames cross one more WebSocket, not NATS and two more processes, and replicas share nothing but
NATS and each other's URLs; a notebook needs no sticky session.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

import nats
import websockets
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from protocol import PREFIX, RETRY_HEADER, ErrorBody, ErrorCode, ErrorDetail
from protocol.link import MAX_LINK_FRAME, LinkError, Open, Response, decode, encode
from tap.client import TapConnection
from tap.spin import Spin

from .links import CLOSE_OFFLINE, LinkedAgent, Offline, Sink, quietly

log = logging.getLogger("engee.gateway")

SUBJECT = "engee.agent.{}"
LINK_STATUS = "link-status"
"""The kind of an OPEN over NATS that asks the replica holding a link for its status, not the agent."""
PENDING_BYTES = 256 << 20
"""What a subscription may hold before NATS calls it slow: many requests with the largest bodies a link carries."""


REPLICA_PATH = f"{PREFIX}/replica"
"""Where the replica holding a link takes a channel another replica relays to it: `REPLICA_PATH/<ticket>`."""
TICKET_HEADER = "x-engee-ticket"
"""On a channel's 101 over NATS: the URL, with its one-time ticket, the notebook's replica dials."""
TICKET_TIME = 10.0
"""Seconds a ticket stays good; the channel opened for it on the link closes if nobody came."""


class Replicas:
    """This replica's side of NATS: the agents it answers for, and the way to the others'."""

    def __init__(
        self,
        url: str,
        advertise: str,
        relay_timeout: float,
        open_timeout: float,
        grants: Callable[[str, str], bool],
        ping: float = 10.0,
        spin: float = 0.0,
    ) -> None:
        self.url = url
        self.spin = spin
        """Seconds a channel relayed to another replica polls for its answer after a write (tap/spin.py)."""
        self.advertise = advertise.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        """Where the other replicas reach this one (ws:// or wss://), for the channels they relay here."""
        self.ping = ping
        """Seconds between pings on a channel relayed between replicas (the gateway's link_ping)."""
        self.grants = grants
        """Whether a user may use an agent: checked again here, for NATS carries no token."""
        self.relay_timeout, self.open_timeout = relay_timeout, open_timeout
        self._client: Client | None = None
        self._served: dict[str, Subscription] = {}
        self._remote: dict[str, RemoteAgent] = {}
        self._answering: set[asyncio.Task[None]] = set()
        self._tickets: dict[str, tuple[LinkedAgent, int, asyncio.TimerHandle]] = {}

    async def start(self) -> None:
        self._client = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.drain()

    def remote(self, agent_id: str) -> RemoteAgent:
        """The agent as another replica holds it (or none: then it is offline)."""
        assert self._client is not None
        if agent_id not in self._remote:
            self._remote[agent_id] = RemoteAgent(self._client, agent_id, self.ping, self.spin)
        return self._remote[agent_id]

    async def serve(self, linked: LinkedAgent) -> None:
        """This replica holds `linked` now: answer for it, and end the channels this replica had relayed to
        its old link on another replica (their clients link again, and come here)."""
        assert self._client is not None
        if (old := self._served.pop(linked.agent_id, None)) is not None:
            await old.unsubscribe()

        async def answer(msg: Msg) -> None:  # each in a task of its own: a long wait never holds up the next
            task = asyncio.ensure_future(self._answer(linked, msg))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

        self._served[linked.agent_id] = await self._client.subscribe(
            SUBJECT.format(linked.agent_id), cb=answer, pending_bytes_limit=PENDING_BYTES
        )
        if (remote := self._remote.get(linked.agent_id)) is not None:
            remote.lost()

    async def unserve(self, agent_id: str) -> None:
        """This replica holds the agent's link no more."""
        if (served := self._served.pop(agent_id, None)) is not None:
            await served.unsubscribe()

    async def _answer(self, linked: LinkedAgent, msg: Msg) -> None:
        try:
            opened = decode(msg.data)
        except LinkError as exc:
            log.warning("a bad frame from a replica for %s: %s", linked.agent_id, exc)
            return
        if not isinstance(opened, Open):
            return
        if not self.grants(opened.user, linked.agent_id):
            log.warning("a replica asked for %s as %s, who may not use it", linked.agent_id, opened.user)
            return  # as if nobody answered: the asking replica reports it offline
        request = opened.request
        if request.get("kind") == LINK_STATUS:  # another replica's status page asks about the link held here
            held = json.dumps({"since": linked.since, "calls": linked.calls}).encode()
            await msg.respond(encode(Response(opened.stream, 200, [], held)))
            return
        if request.get("kind") != "channel":
            try:
                answer = await linked.request(opened.user, request, self.relay_timeout)
            except (Offline, TimeoutError) as exc:
                answer = _offline(opened.stream, linked.agent_id, not isinstance(exc, Offline) or exc.in_flight)
            await msg.respond(encode(answer))
            return
        try:
            stream, answer = await linked.open_channel(opened.user, request, self.open_timeout)
        except (Offline, TimeoutError):
            await msg.respond(encode(_offline(opened.stream, linked.agent_id)))
            return
        if answer.status == 101:
            ticket = secrets.token_urlsafe(24)
            expire = asyncio.get_running_loop().call_later(TICKET_TIME, self._expire, ticket)
            self._tickets[ticket] = (linked, stream, expire)
            headers = [*answer.headers, [TICKET_HEADER, f"{self.advertise}{REPLICA_PATH}/{ticket}"]]
            answer = Response(opened.stream, 101, headers, answer.body)
        await msg.respond(encode(answer))

    def claim(self, ticket: str) -> tuple[LinkedAgent, int] | None:
        """The channel a ticket opened, once: the replica that asked for it has come to carry it."""
        claimed = self._tickets.pop(ticket, None)
        if claimed is None:
            return None
        linked, stream, expire = claimed
        expire.cancel()
        return linked, stream

    def _expire(self, ticket: str) -> None:
        if (claimed := self._tickets.pop(ticket, None)) is not None:
            quietly(claimed[0].close_channel(claimed[1], 1001))


class RemoteAgent:
    """An agent whose link another replica holds, with `LinkedAgent`'s interface."""

    def __init__(self, client: Client, agent_id: str, ping: float = 10.0, spin: float = 0.0) -> None:
        self.client = client
        self.agent_id = agent_id
        self.ping = ping
        self.spin = spin
        self.calls = 0
        self._numbers = itertools.count(1)
        self._channels: dict[int, _Spliced] = {}

    async def request(self, user: str, request: dict[str, Any], timeout: float) -> Response:
        answer = await self._ask(Open(0, user, request), timeout)
        self.calls += 1
        return answer

    async def link_status(self, user: str, timeout: float) -> tuple[float, int] | None:
        """When the agent linked to the replica that holds its link, and how many calls went to it there; None
        when no replica holds it."""
        try:
            answer = await self._ask(Open(0, user, {"kind": LINK_STATUS}), timeout)
            held = json.loads(answer.body)
            return float(held["since"]), int(held["calls"])
        except Exception:  # noqa: BLE001 - offline, an answer no replica gives, NATS gone: not known to be online
            return None

    async def open_channel(self, user: str, request: dict[str, Any], timeout: float) -> tuple[int, Response]:
        """Open the channel on the agent by way of the replica holding its link, and dial that replica for it."""
        stream = next(self._numbers)
        answer = await self._ask(Open(stream, user, request), timeout)
        self.calls += 1
        if answer.status != 101:
            return stream, answer
        ticket = next((value for name, value in answer.headers if name == TICKET_HEADER), None)
        if ticket is None:
            raise Offline()
        try:
            connection = await websockets.connect(
                ticket,
                create_connection=TapConnection,
                max_size=MAX_LINK_FRAME,
                compression=None,
                open_timeout=timeout,
                ping_interval=self.ping,
                ping_timeout=self.ping,
                close_timeout=1,
                user_agent_header=None,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:  # InvalidURI: a bad --advertise
            log.warning("cannot reach the replica holding %s's link: %s", self.agent_id, exc)
            raise Offline() from exc
        self._channels[stream] = _Spliced(connection, lambda: self._forget(stream), self.spin)
        return stream, Response(
            stream, 101, [name_value for name_value in answer.headers if name_value[0] != TICKET_HEADER], answer.body
        )

    def attach(self, stream: int, sink: Sink) -> None:
        if (channel := self._channels.get(stream)) is None:
            sink.closed(CLOSE_OFFLINE, "the agent went offline")
        else:
            channel.attach(sink)

    def to_agent(self, stream: int, data: bytes) -> None:
        if (channel := self._channels.get(stream)) is None or not channel.write(data):
            raise Offline(in_flight=True)

    async def close_channel(self, stream: int, code: int) -> None:
        if (channel := self._channels.pop(stream, None)) is not None:
            await channel.close(code)

    def lost(self) -> None:
        """The agent linked to this replica: the channels relayed to its old link end (their clients relink)."""
        for stream in list(self._channels):
            quietly(self.close_channel(stream, CLOSE_OFFLINE))

    def _forget(self, stream: int) -> None:
        self._channels.pop(stream, None)

    async def _ask(self, opened: Open, timeout: float) -> Response:
        try:
            msg = await self.client.request(SUBJECT.format(self.agent_id), encode(opened), timeout=timeout)
        except NoRespondersError:
            raise Offline() from None
        except NatsTimeout:  # the replica holding the link died with the request: reported offline
            raise Offline(in_flight=True) from None
        answer = decode(msg.data)
        if not isinstance(answer, Response):
            raise Offline()
        return answer


class _Spliced:
    """One channel relayed to the replica that holds the agent's link, over a WebSocket to it: what comes from
    there goes to the sink; what the notebook sends is written to it at once."""

    def __init__(self, connection: ClientConnection, forget: Callable[[], None], spin: float) -> None:
        self.connection, self._forget = connection, forget
        self._reading: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._spin, self._spin_for = Spin(), spin

    def attach(self, sink: Sink) -> None:
        assert isinstance(self.connection, TapConnection)

        def on_frame(frame: Frame) -> None:  # the holder's relay writes whole binary frames, as the agent does
            if self._closing is not None:
                return  # closing after a frame no replica sends: nothing after it is taken
            if frame.opcode is Opcode.BINARY and frame.fin:
                sink.message(bytes(frame.data))
            else:
                log.warning("a relayed channel got a frame no replica sends (a fragment, or text): closed")
                self._closing = asyncio.ensure_future(self.close(1002))

        self.connection.on_frame = on_frame
        self._reading = asyncio.ensure_future(self._read(sink))

    def write(self, data: bytes) -> bool:
        protocol = self.connection.protocol
        if protocol.state is not State.OPEN:
            return False
        protocol.send_binary(data)
        self.connection.send_data()
        self._spin.soon(self._spin_for)
        return True

    async def close(self, code: int) -> None:
        try:
            await self.connection.close(code)
        except Exception:  # noqa: BLE001 - a code it may not send, a connection already gone: it ends all the same
            self.connection.transport.abort()
        if self._reading is not None:
            self._reading.cancel()

    async def _read(self, sink: Sink) -> None:
        """Until the connection ends (its messages go to the sink as they are parsed), then what its end means."""
        try:
            await self.connection.wait_closed()
        finally:
            self._forget()
            close = self.connection.protocol.close_rcvd
            if close is not None and close.code != 1000:  # the holder closed it: as the agent (or the link) said
                sink.closed(close.code, close.reason)
            else:  # the holder went away, or closed it because the link did
                sink.closed(CLOSE_OFFLINE, "the agent went offline")


def _offline(stream: int, agent_id: str, in_flight: bool = False) -> Response:
    body = ErrorBody(
        error=ErrorDetail(code=ErrorCode.AGENT_OFFLINE, message=f"agent {agent_id!r} went offline: its link dropped")
    ).to_json()
    headers = [["content-type", "application/json"], *([[RETRY_HEADER, "1"]] if in_flight else [])]
    return Response(stream, ErrorCode.AGENT_OFFLINE.status, headers, body.encode())
