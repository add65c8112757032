"""Gateway replicas on NATS: any replica answers for any agent, whichever replica holds its link.

The replica holding an agent's link subscribes to `engee.agent.<id>`. Another replica carries a
notebook's HTTP request there as a NATS request (its link frames as they are: an OPEN, answered by
a RESPONSE); "no responders" means no replica holds the link, so the agent is offline. A channel
opens the same way, with two subjects of its own named in the OPEN for its MESSAGE and CLOSE
frames, one each way. So replicas share nothing but NATS, and a notebook needs no sticky session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from protocol import RETRY_HEADER, ErrorBody, ErrorCode, ErrorDetail
from protocol.link import Close, LinkError, LinkFrame, Message, Open, Response, decode, encode

from .links import CLOSE_OFFLINE, LinkedAgent, Offline, Sink

log = logging.getLogger("engee.gateway")

SUBJECT = "engee.agent.{}"
LINK_STATUS = "link-status"
"""The kind of an OPEN over NATS that asks the replica holding a link for its status, not the agent."""
PENDING_BYTES = 256 << 20
"""What a subscription may hold before NATS calls it slow: more than a channel's windows put in flight."""


BEAT = 102
"""A RESPONSE frame with this status on a relayed channel's subject: "still here", sent every ping interval."""
MISSED = 3
"""Beats a relayed channel may miss before its other end counts as gone (a replica that died)."""


class _Beat:
    """The liveness of one channel relayed across replicas: a beat to the other end every `every` seconds;
    when none came back for MISSED of them, `gone()` is called once and the beating stops."""

    def __init__(self, client: Client, subject: str, stream: int, every: float, gone: Callable[[], None]) -> None:
        self.client, self.subject, self.stream, self.every, self.gone = client, subject, stream, every, gone
        self._heard = asyncio.get_running_loop().time()
        self._task = asyncio.ensure_future(self._run())

    def heard(self) -> None:
        self._heard = asyncio.get_running_loop().time()

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.every)
            if loop.time() - self._heard > MISSED * self.every:
                self.gone()
                return
            await self.client.publish(self.subject, encode(Response(self.stream, BEAT, [], b"")))


class Replicas:
    """This replica's side of NATS: the agents it answers for, and the way to the others'."""

    def __init__(
        self,
        url: str,
        relay_timeout: float,
        open_timeout: float,
        grants: Callable[[str, str], bool],
        beat: float = 10.0,
    ) -> None:
        self.url = url
        self.beat = beat
        """Seconds between the beats of a channel relayed across replicas (the gateway's link_ping)."""
        self.grants = grants
        """Whether a user may use an agent: checked again here, for NATS carries no token."""
        self.relay_timeout, self.open_timeout = relay_timeout, open_timeout
        self._client: Client | None = None
        self._served: dict[str, Subscription] = {}
        self._remote: dict[str, RemoteAgent] = {}
        self._answering: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._client = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.drain()

    def remote(self, agent_id: str) -> RemoteAgent:
        """The agent as another replica holds it (or none: then it is offline)."""
        assert self._client is not None
        if agent_id not in self._remote:
            self._remote[agent_id] = RemoteAgent(self._client, agent_id, self.beat)
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
        request = dict(opened.request)
        up, down = request.pop("up", None), request.pop("down", None)
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
        await msg.respond(encode(answer))
        if answer.status == 101 and isinstance(up, str) and isinstance(down, str):
            asyncio.ensure_future(self._carry(linked, stream, up, down))

    async def _carry(self, linked: LinkedAgent, stream: int, up: str, down: str) -> None:
        """Carry one relayed channel between the link and the replica the notebook is on."""
        assert self._client is not None
        carrier = _Carrier(self._client, down, stream)

        def notebook_gone() -> None:  # the notebook's replica died: the agent's side of the channel ends
            asyncio.ensure_future(linked.close_channel(stream, 1001))
            carrier.closed(1001, "the notebook's replica is gone")

        beat = _Beat(self._client, down, stream, self.beat, notebook_gone)

        async def from_notebook(msg: Msg) -> None:
            beat.heard()
            try:
                frame = decode(msg.data)
                if isinstance(frame, Message):
                    linked.to_agent(stream, frame.data)
                elif isinstance(frame, Close):
                    await linked.close_channel(stream, frame.code)
                    carrier.closed(frame.code, "")
            except (LinkError, Offline):
                pass

        subscription = await self._client.subscribe(up, cb=from_notebook, pending_bytes_limit=PENDING_BYTES)
        linked.attach(stream, carrier)
        try:
            await carrier.over
        finally:
            beat.stop()
            await subscription.unsubscribe()


class _Publisher:
    """Publishes a relayed channel's frames on one subject, in order, without waiting. nats-py's publish is a
    coroutine that only queues a frame for its flusher, so it runs here at once, and only when it has to wait
    (a full buffer) as a task that goes on with it; later frames wait for that task, so the order holds."""

    def __init__(self, client: Client, subject: str) -> None:
        self.client, self.subject = client, subject
        self._waiting: asyncio.Task[None] | None = None

    def __call__(self, frame: Message | Close) -> None:
        data = encode(frame)
        if self._waiting is not None and not self._waiting.done():
            self._waiting = asyncio.ensure_future(self._after(self._waiting, data))
            return
        publishing = self._publish(data)
        try:
            waited = publishing.send(None)
        except StopIteration:
            return
        self._waiting = asyncio.ensure_future(_go_on(publishing, waited))

    async def _after(self, before: asyncio.Task[None], data: bytes) -> None:
        await before
        await self._publish(data)

    async def _publish(self, data: bytes) -> None:
        with contextlib.suppress(nats.errors.Error):  # a connection that is gone: the beats tell the other end
            await self.client.publish(self.subject, data)


async def _go_on(coroutine: Any, waited: asyncio.Future[Any]) -> None:
    """Go on with `coroutine`, which ran up to its wait for `waited`, as a task would."""
    while True:
        await asyncio.wait([waited])
        try:
            waited = coroutine.send(None)
        except StopIteration:
            return


class _Carrier:
    """The sink of a channel relayed to another replica: the agent's frames go on to it over NATS, in order."""

    def __init__(self, client: Client, subject: str, stream: int) -> None:
        self.stream = stream
        self.over: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._publish = _Publisher(client, subject)

    def message(self, data: bytes) -> None:
        self._publish(Message(self.stream, data))

    def closed(self, code: int, reason: str) -> None:
        if not self.over.done():
            self._publish(Close(self.stream, code, reason))
            self.over.set_result(None)

    def hold(self, held: bool) -> None:
        """NATS takes what comes; its subscriptions' pending limits bound what waits."""


class RemoteAgent:
    """An agent whose link another replica holds, with `LinkedAgent`'s interface."""

    def __init__(self, client: Client, agent_id: str, beat: float = 10.0) -> None:
        self.client = client
        self.agent_id = agent_id
        self.beat = beat
        self.calls = 0
        self._numbers = itertools.count(1)
        self._channels: dict[int, _Remote] = {}

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
        except (Offline, ValueError, KeyError, TypeError):
            return None

    async def open_channel(self, user: str, request: dict[str, Any], timeout: float) -> tuple[int, Response]:
        stream = next(self._numbers)
        inbox = self.client.new_inbox()
        channel = _Remote(self.client, stream, f"{inbox}.up", lambda: self._forget(stream))

        async def from_agent(msg: Msg) -> None:
            try:
                channel.take(decode(msg.data))
            except LinkError:
                return

        down = f"{inbox}.down"
        channel.subscription = await self.client.subscribe(down, cb=from_agent, pending_bytes_limit=PENDING_BYTES)
        try:
            answer = await self._ask(Open(stream, user, {**request, "up": channel.up, "down": down}), timeout)
        except BaseException:
            await channel.subscription.unsubscribe()
            raise
        if answer.status != 101:
            await channel.subscription.unsubscribe()
        else:  # the replica holding the link may die: then no beat comes, and the channel ends as offline
            channel.beat = _Beat(self.client, channel.up, stream, self.beat, channel.offline)
            self._channels[stream] = channel
        self.calls += 1
        return stream, answer

    def attach(self, stream: int, sink: Sink) -> None:
        if (channel := self._channels.get(stream)) is None:
            sink.closed(CLOSE_OFFLINE, "the agent went offline")
        else:
            channel.attach(sink)

    def to_agent(self, stream: int, data: bytes) -> None:
        if (channel := self._channels.get(stream)) is not None:
            channel.publish(Message(stream, data))

    async def close_channel(self, stream: int, code: int) -> None:
        if (channel := self._channels.get(stream)) is not None:
            channel.publish(Close(stream, code, ""))
            self._forget(stream)

    def lost(self) -> None:
        """The agent linked to this replica: the channels relayed to its old link end (their clients relink)."""
        for channel in list(self._channels.values()):
            channel.offline()

    def _forget(self, stream: int) -> None:
        channel = self._channels.pop(stream, None)
        if channel is not None:
            channel.stop()

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


class _Remote:
    """One channel relayed to the replica that holds the agent's link: what comes from there goes to the sink."""

    def __init__(self, client: Client, stream: int, up: str, forget: Callable[[], None]) -> None:
        self.client, self.stream, self.up, self._forget = client, stream, up, forget
        self.subscription: Subscription | None = None
        self.beat: _Beat | None = None
        self._sink: Sink | None = None
        self._early: list[Message | Close] = []
        self.publish = _Publisher(client, up)

    def attach(self, sink: Sink) -> None:
        self._sink = sink
        early, self._early = self._early, []
        for frame in early:
            self.take(frame)

    def take(self, frame: LinkFrame) -> None:
        if self.beat is not None:
            self.beat.heard()
        if not isinstance(frame, Message | Close):
            return
        if self._sink is None:
            self._early.append(frame)
        elif isinstance(frame, Message):
            self._sink.message(frame.data)
        else:
            self._forget()
            self._sink.closed(frame.code, frame.reason)

    def offline(self) -> None:
        self._forget()
        if self._sink is not None:
            self._sink.closed(CLOSE_OFFLINE, "the agent went offline")

    def stop(self) -> None:
        if self.beat is not None:
            self.beat.stop()
        if self.subscription is not None:
            asyncio.ensure_future(self.subscription.unsubscribe())


def _offline(stream: int, agent_id: str, in_flight: bool = False) -> Response:
    body = ErrorBody(
        error=ErrorDetail(code=ErrorCode.AGENT_OFFLINE, message=f"agent {agent_id!r} went offline: its link dropped")
    ).to_json()
    headers = [["content-type", "application/json"], *([[RETRY_HEADER, "1"]] if in_flight else [])]
    return Response(stream, ErrorCode.AGENT_OFFLINE.status, headers, body.encode())
