"""`AsyncAgent`: one agent, offering the seed's `Socket(...)` and function-style methods, awaited."""

from __future__ import annotations

from typing import Any, Self, TypeVar

from protocol import AnyMethod
from protocol.models import AgentInfo, Response, SocketInfo

from ..core import AgentCore, Exchange, Flow, add_function_style, credentials, raise_failures
from ..display import Card
from ..transport import AsyncTransport, transport_kind
from ..wire import RETRY_FOR
from .channel import AsyncChannelTransport
from .http import AsyncHttpTransport
from .socket import AsyncSocket

T = TypeVar("T")


class AsyncAgent(AgentCore):
    """An agent at `url`, awaited; the same arguments as `Agent` (`token`, `verify`, `retry_for`, `transport`).

    Use it within one event loop (`async with AsyncAgent(...) as lab:`); its connections belong to that loop.
    """

    display_name = "AsyncAgent"

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        verify: bool | str | None = None,
        retry_for: float = RETRY_FOR,
        transport: AsyncTransport | str | None = None,
    ) -> None:
        super().__init__(url)
        if transport is None or isinstance(transport, str):
            kind = transport_kind(transport)
            token, verify = credentials(url, token, verify)
            http = AsyncHttpTransport(url, token, verify=verify, retry_for=retry_for)
            transport = (
                http
                if kind == "http"
                else AsyncChannelTransport(
                    url, token, verify=verify, retry_for=retry_for, fallback=http if kind == "auto" else None
                )
            )
        self.transport = transport

    async def Socket(
        self, family: str = "AF_INET", socket_type: str = "SOCK_STREAM", socket_descriptor: int = 0
    ) -> AsyncSocket:
        """A new socket on the agent, or (with a descriptor, e.g. from accept) the existing one."""
        return AsyncSocket(self, *await self._run(self._socket_flow(family, socket_type, socket_descriptor)))

    async def sockets(self, everyone: bool = False) -> list[SocketInfo]:
        """This caller's open sockets on the agent; `everyone=True` lists all principals' (admins only)."""
        return await self._run(self._sockets_flow(everyone))

    async def info(self) -> AgentInfo:
        """The agent's identity, boot id, version and methods."""
        return await self.transport.identity()

    async def call(
        self, method: AnyMethod | str, *, boot: str | None = None, seq: int | None = None, **fields: Any
    ) -> Response:
        """Run one method of the table (`METHODS.bind`, or its name); bad arguments raise ValueError/TypeError
        before any network call. `seq` repeats an interrupted call: the agent answers it from its ledger."""
        response: Response = await self._run(self._call_flow(method, boot, seq, fields))
        return response

    async def flush(self) -> None:
        """Wait until every pipelined send has its answer; raises the first that failed."""
        raise_failures(await self.transport.flush(None), self.url)

    async def _flush(self, descriptor: int) -> None:
        raise_failures(await self.transport.flush(descriptor), self.url)

    async def disconnect(self) -> None:
        """Close the connections to the agent. Sockets opened over HTTP stay open; those opened over the channel
        are closed by the agent after its channel_grace (180 s), as for a client that is gone."""
        await self.transport.aclose()

    aclose = disconnect

    def _repr_html_(self) -> str:
        return self._known_card().html()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else self._known_card().text())

    def _known_card(self) -> Card:
        """What this client knows without a call (a display cannot await in a running loop): the agent's hello
        on the channel, if it came."""
        state = getattr(self.transport, "state", None)
        transport = getattr(self.transport, "kind", type(self.transport).__name__)
        return self._card(getattr(state, "info", None), transport, None, None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    async def _run(self, flow: Flow[T]) -> T:
        """Run a flow: each call it makes goes to the agent, and the reply, or the exception, goes back in."""
        exchange = Exchange(self.calls, self.url, flow)
        call = exchange.start()
        while call is not None:
            try:
                reply = await self.transport.call(call)
            except BaseException as exc:  # noqa: BLE001 - handed to the flow, which raises what it does not handle
                call = exchange.fail(exc)
            else:
                call = exchange.reply(reply)
        return exchange.result


add_function_style(AsyncAgent, AsyncSocket)
