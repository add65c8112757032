"""`Agent`: one agent, offering the seed's `Socket(...)` and function-style methods, blocking."""

from __future__ import annotations

import os
import time
from typing import Any, Self, TypeVar

from protocol import TOKEN_VARIABLE, URL_VARIABLE, AgentError, AnyMethod
from protocol.models import AgentInfo, Response, SocketInfo

from ..core import AgentCore, Exchange, Flow, add_function_style, credentials, raise_failures
from ..display import Card
from ..transport import Transport, transport_kind
from ..wire import RETRY_FOR
from .callbacks import Callback, Callbacks
from .channel import ChannelTransport
from .http import HttpTransport
from .socket import Socket
from .socket import Socket as SyncSocket

T = TypeVar("T")


class Agent(AgentCore):
    """An agent at `url`; `token` defaults to $ENGEE_AGENT_TOKEN.

    `verify` checks an https agent's certificate: True for httpx's default CA bundle (certifi, or
    $SSL_CERT_FILE), or the path of a CA file for a self-signed setup (default $ENGEE_AGENT_CA).
    `retry_for` is how many seconds a call is retried after transport failures before giving up.
    `transport` replaces the HTTP transport those three configure (an in-process one in tests).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        verify: bool | str | None = None,
        retry_for: float = RETRY_FOR,
        transport: Transport | str | None = None,
    ) -> None:
        super().__init__(url)
        if transport is None or isinstance(transport, str):
            kind = transport_kind(transport)
            token, verify = credentials(url, token, verify)
            if kind == "http":
                transport = HttpTransport(url, token, verify=verify, retry_for=retry_for)
            else:
                transport = ChannelTransport(url, token, verify=verify, retry_for=retry_for, fallback=kind == "auto")
        self.transport = transport

    def Socket(self, family: str = "AF_INET", socket_type: str = "SOCK_STREAM", socket_descriptor: int = 0) -> Socket:
        """A new socket on the agent, or (with a descriptor, e.g. from accept) the existing one."""
        return Socket(self, *self._run(self._socket_flow(family, socket_type, socket_descriptor)))

    def sockets(self, everyone: bool = False) -> list[SocketInfo]:
        """This caller's open sockets on the agent; `everyone=True` lists all principals' (admins only)."""
        return self._run(self._sockets_flow(everyone))

    def info(self) -> AgentInfo:
        """The agent's identity, boot id, version and methods."""
        return self.transport.identity()

    def call(
        self, method: AnyMethod | str, *, boot: str | None = None, seq: int | None = None, **fields: Any
    ) -> Response:
        """Run one method of the table (`METHODS.bind`, or its name); bad arguments raise ValueError/TypeError
        before any network call. `seq` repeats an interrupted call: the agent answers it from its ledger."""
        response: Response = self._run(self._call_flow(method, boot, seq, fields))
        return response

    def flush(self) -> None:
        """Wait until every pipelined send has its answer; raises the first that failed."""
        raise_failures(self.transport.flush(None), self.url)

    def _flush(self, descriptor: int) -> None:
        raise_failures(self.transport.flush(descriptor), self.url)

    def _watch(self, sock: SyncSocket, callback: Callback | None, options: dict[str, Any]) -> None:
        if "_callbacks" not in self.__dict__:
            if callback is None:
                return
            self._callbacks = Callbacks()
        self._callbacks.watch(sock, callback, options)

    def disconnect(self) -> None:
        """Close the connections to the agent. Sockets opened over HTTP stay open; those opened over the channel
        are closed by the agent after its channel_grace (180 s), as for a client that is gone."""
        self.transport.close()

    def _repr_html_(self) -> str:
        return self._live_card().html()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else self._live_card().text())

    def _live_card(self) -> Card:
        """The agent as it is now: its identity, the round trip of one call, and this caller's sockets."""
        transport = getattr(self.transport, "kind", type(self.transport).__name__)
        try:
            info = self.info()
            start = time.perf_counter()
            sockets = self.sockets()
            rtt = time.perf_counter() - start
        except (AgentError, OSError) as exc:
            card = self._card(None, transport, None, None)
            return Card(card.title, [*card.facts, ("unreachable", str(exc))])
        return self._card(info, transport, rtt, sockets)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()

    def _run(self, flow: Flow[T]) -> T:
        """Run a flow: each call it makes goes to the agent, and the reply, or the exception, goes back in."""
        exchange = Exchange(self.calls, self.url, flow)
        call = exchange.start()
        while call is not None:
            try:
                reply = self.transport.call(call)
            except BaseException as exc:  # noqa: BLE001 - handed to the flow, which raises what it does not handle
                call = exchange.fail(exc)
            else:
                call = exchange.reply(reply)
        return exchange.result


add_function_style(Agent, Socket)


class DefaultAgent(Agent):
    """The agent named by $ENGEE_AGENT_URL and $ENGEE_AGENT_TOKEN (and $ENGEE_AGENT_CA), configured on first use."""

    def __init__(self) -> None:  # nothing happens until first use
        pass

    def __getattr__(self, name: str) -> Any:
        if name not in ("url", "calls", "transport"):
            raise AttributeError(name)
        url = os.environ.get(URL_VARIABLE)
        if not url:
            raise AgentError(
                f"no agent configured: set {URL_VARIABLE} and {TOKEN_VARIABLE}, or use Agent(url, token=...)"
            )
        Agent.__init__(self, url)
        return getattr(self, name)

    def __repr__(self) -> str:
        return f"Sockets (the agent at ${URL_VARIABLE})"
