"""`Agent`: one agent reached over HTTP, offering the seed's `Socket(...)` and function-style methods."""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from protocol import METHODS, AgentError
from protocol.errors import describe_validation, is_type_error, where
from protocol.models import AgentInfo, Response, SocketInfo

from .device import Socket
from .transport import RETRY_FOR, HttpTransport

URL_VARIABLE = "ENGEE_AGENT_URL"
TOKEN_VARIABLE = "ENGEE_AGENT_TOKEN"
CA_VARIABLE = "ENGEE_AGENT_CA"


class Agent:
    """An agent at `url`; `token` defaults to $ENGEE_AGENT_TOKEN.

    `verify` checks an https agent's certificate: True for httpx's default CA bundle (certifi, or
    $SSL_CERT_FILE), or the path of a CA file for a self-signed setup (default $ENGEE_AGENT_CA).
    """

    def __init__(self, url: str, token: str | None = None, *, verify: bool | str | None = None,
                 retry_for: float = RETRY_FOR) -> None:
        token = token or os.environ.get(TOKEN_VARIABLE)
        if verify is None:
            verify = os.environ.get(CA_VARIABLE) or True
        if not token:
            raise AgentError(f"no token for the agent at {url}: pass token=... or set {TOKEN_VARIABLE}")
        self._transport = HttpTransport(url, token, verify=verify, retry_for=retry_for)

    @property
    def url(self) -> str:
        return self._transport.url

    def Socket(self, family: str = "AF_INET", socket_type: str = "SOCK_STREAM",  # noqa: N802 - the seed's name
               socket_descriptor: int = 0) -> Socket:
        """A new socket on the agent, or (with a descriptor, e.g. from accept) the existing one."""
        if socket_descriptor == 0:
            info, boot = self._call_with_boot("socket", family=family, socket_type=socket_type)
            return Socket(self, info, boot)
        info, boot = self._call_with_boot("describe", descriptor=socket_descriptor)
        if (info.family, info.socket_type) != (family, socket_type):
            raise ValueError(f"descriptor {socket_descriptor} on agent {self.url} is "
                             f"{info.family}/{info.socket_type}, not {family}/{socket_type}")
        return Socket(self, info, boot)

    def sockets(self, everyone: bool = False) -> list[SocketInfo]:
        """This caller's open sockets on the agent; `everyone=True` lists all principals' (admins only)."""
        return self.call("sockets", everyone=everyone).sockets

    def info(self) -> AgentInfo:
        """The agent's identity, boot id, version and methods."""
        return AgentInfo.model_validate_json(self._transport.identity())

    def call(self, method: str, *, boot: str | None = None, seq: int | None = None, **fields: Any) -> Response:
        """Run one method of the table; bad arguments raise ValueError/TypeError before any network call.

        `seq` repeats an interrupted call: the agent answers it from its ledger instead of running it again.
        """
        return self._call_with_boot(method, boot=boot, seq=seq, **fields)[0]

    def new_call(self) -> int:
        """A fresh call number, for a caller that wants to be able to repeat the call."""
        return self._transport.calls.begin()

    def forget_call(self, seq: int) -> None:
        """Call `seq` will not be repeated: the agent may drop its answer."""
        self._transport.calls.end(seq)

    def disconnect(self) -> None:
        """Close the HTTP connections to the agent; the agent's sockets stay as they are."""
        self._transport.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        return f"Agent({self.url!r})"

    def _call_with_boot(self, name: str, boot: str | None = None, seq: int | None = None,
                        **fields: Any) -> tuple[Any, str | None]:
        method = METHODS[name]
        try:
            request = method.request(**fields)
        except ValidationError as exc:
            error = TypeError if is_type_error(exc) else ValueError
            raise error(f"{where(name, fields.get('descriptor'), self.url)}: {describe_validation(exc)}") from None
        return self._transport.call(method, request, boot=boot, seq=seq)


def _function_style(name: str):
    def method(self: Agent, device: Socket, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(device, Socket):
            raise TypeError(f"{name}: the first argument must be a Socket, not {type(device).__name__}")
        return getattr(device, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"`{name}(device, ...)`, the same as `device.{name}(...)`: {getattr(Socket, name).__doc__}"
    return method


for _name in METHODS:
    if hasattr(Socket, _name) and _name not in ("socket", "describe"):
        setattr(Agent, _name, _function_style(_name))


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
