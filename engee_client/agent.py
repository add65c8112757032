"""`Agent`: one agent reached over HTTP, offering the seed's `Socket(...)` and function-style methods, blocking."""

from __future__ import annotations

import os
from typing import Any, TypeVar

from protocol import AgentError
from protocol.models import AgentInfo, Response, SocketInfo

from .core import CA_VARIABLE, TOKEN_VARIABLE, URL_VARIABLE, AgentCore, Flow, add_function_style, one_call
from .device import Socket
from .transport import HttpTransport

__all__ = ["CA_VARIABLE", "TOKEN_VARIABLE", "URL_VARIABLE", "Agent", "DefaultAgent"]

T = TypeVar("T")


class Agent(AgentCore):
    """An agent at `url`; `token` defaults to $ENGEE_AGENT_TOKEN.

    `verify` checks an https agent's certificate: True for httpx's default CA bundle (certifi, or
    $SSL_CERT_FILE), or the path of a CA file for a self-signed setup (default $ENGEE_AGENT_CA).
    `retry_for` is how many seconds a call is retried after transport failures before giving up.
    """

    _transport_class = HttpTransport
    _socket_class = Socket
    _transport: HttpTransport

    def Socket(self, family: str = "AF_INET", socket_type: str = "SOCK_STREAM",  # noqa: N802 - the seed's name
               socket_descriptor: int = 0) -> Socket:
        """A new socket on the agent, or (with a descriptor, e.g. from accept) the existing one."""
        return self._run(self._socket_flow(family, socket_type, socket_descriptor))

    def sockets(self, everyone: bool = False) -> list[SocketInfo]:
        """This caller's open sockets on the agent; `everyone=True` lists all principals' (admins only)."""
        return self._run(self._sockets_flow(everyone))

    def info(self) -> AgentInfo:
        """The agent's identity, boot id, version and methods."""
        return AgentInfo.model_validate_json(self._transport.identity())

    def call(self, method: str, *, boot: str | None = None, seq: int | None = None, **fields: Any) -> Response:
        """Run one method of the table; bad arguments raise ValueError/TypeError before any network call.

        `seq` repeats an interrupted call: the agent answers it from its ledger instead of running it again.
        """
        return self._run(one_call(self.url, method, boot, seq, **fields))[0]

    def disconnect(self) -> None:
        """Close the HTTP connections to the agent; the agent's sockets stay as they are."""
        self._transport.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()

    def _run(self, flow: Flow[T]) -> T:
        """Run a flow: each call it yields goes to the agent, and its answer, or its exception, goes back in."""
        call = self._transport.call
        try:
            step = next(flow)
            while True:
                try:
                    answer = call(step[0], step[1], boot=step[2], seq=step[3])
                except BaseException as exc:
                    step = flow.throw(exc)
                else:
                    step = flow.send(answer)
        except StopIteration as done:
            return done.value


add_function_style(Agent, Socket)


class DefaultAgent(Agent):
    """The agent named by $ENGEE_AGENT_URL and $ENGEE_AGENT_TOKEN (and $ENGEE_AGENT_CA), configured on first use."""

    def __init__(self) -> None:  # noqa: D107 - nothing happens until first use
        pass

    def __getattr__(self, name: str) -> Any:
        if name != "_transport":
            raise AttributeError(name)
        url = os.environ.get(URL_VARIABLE)
        if not url:
            raise AgentError(f"no agent configured: set {URL_VARIABLE} and {TOKEN_VARIABLE}, "
                             f"or use Agent(url, token=...)")
        Agent.__init__(self, url)
        return self._transport

    def __repr__(self) -> str:
        return "Sockets (the agent at $ENGEE_AGENT_URL)"
