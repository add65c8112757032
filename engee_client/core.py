"""What the blocking and the asyncio client share, free of I/O: every operation, written once.

Each operation of a socket or an agent is a generator, a *flow*: it checks its arguments, yields
each call it needs as `(method, request, boot, seq)`, is sent back that call's `(response, boot)`
(or has the call's exception thrown in where it yielded), and returns the operation's result. The
blocking `Agent` runs flows with `transport.call(...)`, `AsyncAgent` with `await transport.call(...)`;
nothing else differs between the two. (httpx runs its auth flows the same way.)

Since a flow runs up to its first call before anything is sent, bad arguments raise
TypeError/ValueError before any network call, in both clients.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Generator
from typing import Any, TypeVar

from pydantic import ValidationError

from protocol import METHODS, AgentError, AgentRestartedError, Method, to_bytes
from protocol.errors import describe_validation, is_type_error, where
from protocol.models import LONG_POLL, Address, Request, Response, SocketInfo

from .result import ResultUIntList
from .wire import RETRY_FOR

URL_VARIABLE = "ENGEE_AGENT_URL"
TOKEN_VARIABLE = "ENGEE_AGENT_TOKEN"
CA_VARIABLE = "ENGEE_AGENT_CA"

CHUNK = 4 * 1024 * 1024
"""A TCP send larger than this goes out in several calls; a stream keeps them in order."""

T = TypeVar("T")
Call = tuple[Method, Request, "str | None", "int | None"]
"""What a flow yields: a method of the table, its request, the boot id to send, the call's seq (None: a new one)."""
Answer = tuple[Response, "str | None"]
"""What a flow is sent back: the call's response and the agent's boot id."""
Flow = Generator[Call, Answer, T]


def request_for(name: str, fields: dict[str, Any], url: str) -> tuple[Method, Request]:
    """Method `name` of the table and its request; bad fields raise TypeError or ValueError naming the call."""
    method = METHODS[name]
    try:
        return method, method.request(**fields)
    except ValidationError as exc:
        error = TypeError if is_type_error(exc) else ValueError
        raise error(f"{where(name, fields.get('descriptor'), url)}: {describe_validation(exc)}") from None


def one_call(url: str, name: str, boot: str | None = None, seq: int | None = None, /, **fields: Any) -> Flow[Answer]:
    """The flow of one call of the table to the agent at `url`: its response and the agent's boot id."""
    method, request = request_for(name, fields, url)
    return (yield method, request, boot, seq)


class SocketCore:
    """A socket that lives on an agent, without I/O: its state, and each of its methods as a flow.

    `Socket` and `AsyncSocket` add the public methods, each running one of these flows on its agent.
    """

    def __init__(self, agent: AgentCore, info: SocketInfo, boot: str | None) -> None:
        self.agent = agent
        self.descriptor = info.descriptor
        self.family = info.family
        self.socket_type = info.socket_type
        self._boot = boot
        self._closed = False
        self._interrupted: dict[str, list[int]] = {}
        """Seqs of blocking calls cut by an interrupt (KeyboardInterrupt, or cancellation in asyncio), oldest
        first: the agent's wait went on, and the next calls of that method collect what it took."""
        self._update(info.local, info.peer)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"local={self.local_address} peer={self.peer_address}"
        return f"<{type(self).__name__} {self.descriptor} {self.family}/{self.socket_type} {state} at {self.agent.url}>"

    def _bind_flow(self, host: str, port: int) -> Flow[None]:
        info = yield from self._call("bind", host=host, port=port)
        self._update(info.local, info.peer)

    def _listen_flow(self, backlog: int) -> Flow[None]:
        info = yield from self._call("listen", backlog=backlog)
        self._update(info.local, info.peer)

    def _accept_flow(self, timeout: float | None) -> Flow[int]:
        return (yield from self._wait("accept", timeout)).descriptor

    def _connect_flow(self, host: str, port: int, timeout: float | None) -> Flow[int]:
        result = yield from self._wait("connect", timeout, host=host, port=port)
        self._update(result.local, result.peer)
        return 0

    def _send_flow(self, message: Any) -> Flow[int]:
        data = to_bytes(message)
        if self.socket_type == "SOCK_DGRAM" or len(data) <= CHUNK:
            return (yield from self._call("send", data=data)).sent
        sent = 0
        for start in range(0, len(data), CHUNK):
            sent += (yield from self._call("send", data=data[start:start + CHUNK])).sent
        return sent

    def _receive_flow(self, bufsize: int, timeout: float | None) -> Flow[ResultUIntList | None]:
        try:
            result = yield from self._wait("receive", timeout, bufsize=bufsize)
        except _WaitExpired:
            return None
        if result.eof:
            return None
        return ResultUIntList(result.data, result.peer.as_tuple() if result.peer else None)

    def _is_open_flow(self, socket_descriptor: int | None) -> Flow[bool]:
        if socket_descriptor is None:
            if self._closed:
                return False
            socket_descriptor = self.descriptor
        try:
            return (yield from self._call("is_open", descriptor=socket_descriptor)).open
        except AgentRestartedError:
            return False  # the restart closed every socket of before

    def _close_flow(self) -> Flow[None]:
        if self._closed:
            return
        for seqs in self._interrupted.values():
            for seq in seqs:
                self.agent.forget_call(seq)
        self._interrupted.clear()
        try:
            yield from self._call("close")
        except AgentRestartedError:
            pass  # the restart already closed it
        self._closed = True

    def _update(self, local: Address | None, peer: Address | None) -> None:
        self.local_address = local.as_tuple() if local else None
        self.peer_address = peer.as_tuple() if peer else None

    def _call(self, name: str, **fields: Any) -> Flow[Any]:
        fields.setdefault("descriptor", self.descriptor)
        return (yield from one_call(self.agent.url, name, self._boot, None, **fields))[0]

    def _wait(self, name: str, timeout: float | None, **fields: Any) -> Flow[Any]:
        """A blocking call as a series of bounded waits, so no HTTP timeout ever cuts it.

        Interrupted (KeyboardInterrupt, or cancelled in asyncio), the call stays open on the agent,
        whose wait goes on; the next call of this method on this socket collects its answer.
        """
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"{self._where(name)}: timeout must be None or a number of seconds, "
                                f"not {type(timeout).__name__}")
            if not 0 <= timeout < math.inf:
                raise ValueError(f"{self._where(name)}: timeout must be a finite number of seconds >= 0, "
                                 f"not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        fields["descriptor"] = self.descriptor
        url, boot, interrupted = self.agent.url, self._boot, self._interrupted
        while True:
            fields["wait"] = LONG_POLL if deadline is None else min(LONG_POLL, max(0.0, deadline - time.monotonic()))
            method, request = request_for(name, fields, url)
            seq = self._resume(name)
            try:
                result = (yield method, request, boot, seq)[0]
            except BaseException as exc:
                if not isinstance(exc, Exception):  # an interrupt: what the agent takes waits for the next call
                    interrupted.setdefault(name, []).append(seq)
                raise
            if not result.pending:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise _WaitExpired(f"{self._where(name)}: timed out after {timeout} s")

    def _resume(self, name: str) -> int:
        """The oldest interrupted call of method `name`, to collect its answer; else a new call."""
        waiting = self._interrupted.get(name)
        if waiting:
            try:
                return waiting.pop(0)
            except IndexError:  # another thread took the last one
                pass
        return self.agent.new_call()

    def _where(self, method: str) -> str:
        return where(method, self.descriptor, self.agent.url)


class _WaitExpired(TimeoutError):
    """The caller's own timeout passed; unlike an OS ETIMEDOUT from the agent, receive answers None."""


class AgentCore:
    """An agent at `url`, without I/O: configuration, call numbers, and the agent's own operations as flows.

    `Agent` and `AsyncAgent` add the public methods, running these flows over their transport.
    """

    _transport_class: type
    _socket_class: type[SocketCore]

    def __init__(self, url: str, token: str | None = None, *, verify: bool | str | None = None,
                 retry_for: float = RETRY_FOR) -> None:
        token = token or os.environ.get(TOKEN_VARIABLE)
        if verify is None:
            verify = os.environ.get(CA_VARIABLE) or True
        if not token:
            raise AgentError(f"no token for the agent at {url}: pass token=... or set {TOKEN_VARIABLE}")
        self._transport = self._transport_class(url, token, verify=verify, retry_for=retry_for)

    @property
    def url(self) -> str:
        return self._transport.url

    def new_call(self) -> int:
        """A fresh call number, for a caller that wants to be able to repeat the call."""
        return self._transport.calls.begin()

    def forget_call(self, seq: int) -> None:
        """Call `seq` will not be repeated: the agent may drop its answer."""
        self._transport.calls.end(seq)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _socket_flow(self, family: str, socket_type: str, socket_descriptor: int) -> Flow[SocketCore]:
        if socket_descriptor == 0:
            info, boot = yield from one_call(self.url, "socket", family=family, socket_type=socket_type)
        else:
            info, boot = yield from one_call(self.url, "describe", descriptor=socket_descriptor)
            if (info.family, info.socket_type) != (family, socket_type):
                raise ValueError(f"descriptor {socket_descriptor} on agent {self.url} is "
                                 f"{info.family}/{info.socket_type}, not {family}/{socket_type}")
        return self._socket_class(self, info, boot)

    def _sockets_flow(self, everyone: bool) -> Flow[list[SocketInfo]]:
        return (yield from one_call(self.url, "sockets", everyone=everyone))[0].sockets


def add_function_style(agent_type: type[AgentCore], socket_type: type[SocketCore]) -> None:
    """Give `agent_type` the seed's function style, `agent.bind(device, ...)`, for each method `socket_type` has.

    The functions are coroutine functions where the socket's methods are.
    """
    for name in METHODS:
        if hasattr(socket_type, name) and name not in ("socket", "describe"):
            setattr(agent_type, name, _function_style(name, socket_type))


def _function_style(name: str, socket_type: type[SocketCore]):
    kind = socket_type.__name__
    wrong = f"{name}: the first argument must be {'an' if kind[0] in 'AEIOU' else 'a'} {kind}, not "

    if inspect.iscoroutinefunction(getattr(socket_type, name)):
        async def method(self: AgentCore, device: SocketCore, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(device, socket_type):
                raise TypeError(wrong + type(device).__name__)
            return await getattr(device, name)(*args, **kwargs)
    else:
        def method(self: AgentCore, device: SocketCore, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(device, socket_type):
                raise TypeError(wrong + type(device).__name__)
            return getattr(device, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"`{name}(device, ...)`, the same as `device.{name}(...)`: {getattr(socket_type, name).__doc__}"
    return method
