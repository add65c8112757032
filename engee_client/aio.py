"""The asyncio client: the blocking client's API as awaitables, for notebooks that run an event loop.

    from engee_client import AsyncAgent
    async with AsyncAgent("http://labpc.example:8700", token="...") as lab:
        s = await lab.Socket("AF_INET", "SOCK_DGRAM")
        await s.bind("127.0.0.1", 8888)              # or: await lab.bind(s, "127.0.0.1", 8888)
        result = await s.receive(1000)               # None, or a ResultUIntList

The same methods, arguments, results, exceptions and messages as `Agent` and `Socket`: both run the
same flows (engee_client.core) over the same wire (engee_client.wire); only the transport awaits.
Calls on many sockets run concurrently (`asyncio.gather`), each on a connection of its own, so a
receive waiting on one socket never delays another.

Cancelling a blocking call (`asyncio.wait_for`, `task.cancel()`) is what KeyboardInterrupt is to the
blocking client: the agent's wait goes on, whatever it takes is kept, and the next call of that
method on that socket gets it. Nothing the agent took from the OS is lost.
"""

from __future__ import annotations

from typing import Any, TypeVar

from protocol.models import AgentInfo, Response, SocketInfo

from .core import AgentCore, Flow, SocketCore, add_function_style, one_call
from .result import ResultUIntList
from .transport import AsyncHttpTransport

__all__ = ["AsyncAgent", "AsyncSocket"]

T = TypeVar("T")


class AsyncSocket(SocketCore):
    """A socket that lives on an agent; every method is an awaitable call to that agent."""

    agent: AsyncAgent

    async def bind(self, host: str, port: int) -> None:
        """Bind to a local address on the agent's machine; port 0 picks a free port."""
        return await self.agent._run(self._bind_flow(host, port))

    async def listen(self, backlog: int = 128) -> None:
        """Accept incoming TCP connections from now on (an unbound socket gets a free port)."""
        return await self.agent._run(self._listen_flow(backlog))

    async def accept(self, timeout: float | None = None) -> int:
        """Wait for a client and return the new connection's descriptor; TimeoutError after `timeout`."""
        return await self.agent._run(self._accept_flow(timeout))

    async def connect(self, host: str, port: int, timeout: float | None = None) -> int:
        """Connect to a peer (TCP) or fix the peer (UDP); returns 0, as the seed does."""
        return await self.agent._run(self._connect_flow(host, port, timeout))

    async def send(self, message: bytes | bytearray | memoryview | list[int]) -> int:
        """Send bytes and return how many were sent: all of them on TCP, one datagram on UDP."""
        return await self.agent._run(self._send_flow(message))

    async def receive(self, bufsize: int, timeout: float | None = None) -> ResultUIntList | None:
        """Up to `bufsize` bytes (TCP) or one datagram (UDP); None at end of stream or after `timeout`."""
        return await self.agent._run(self._receive_flow(bufsize, timeout))

    async def is_open(self, socket_descriptor: int | None = None) -> bool:
        """Whether a descriptor (this socket's by default) is open on the agent."""
        return await self.agent._run(self._is_open_flow(socket_descriptor))

    async def close(self) -> None:
        """Close the socket on the agent; closing again does nothing."""
        return await self.agent._run(self._close_flow())

    async def __aenter__(self) -> AsyncSocket:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncAgent(AgentCore):
    """An agent at `url`, awaited; the same arguments as `Agent` (`token`, `verify`, `retry_for`).

    Use it within one event loop (`async with AsyncAgent(...) as lab:`); its connections belong to that loop.
    """

    _transport_class = AsyncHttpTransport
    _socket_class = AsyncSocket
    _transport: AsyncHttpTransport

    async def Socket(self, family: str = "AF_INET", socket_type: str = "SOCK_STREAM",  # noqa: N802 - the seed's name
                     socket_descriptor: int = 0) -> AsyncSocket:
        """A new socket on the agent, or (with a descriptor, e.g. from accept) the existing one."""
        return await self._run(self._socket_flow(family, socket_type, socket_descriptor))

    async def sockets(self, everyone: bool = False) -> list[SocketInfo]:
        """This caller's open sockets on the agent; `everyone=True` lists all principals' (admins only)."""
        return await self._run(self._sockets_flow(everyone))

    async def info(self) -> AgentInfo:
        """The agent's identity, boot id, version and methods."""
        return AgentInfo.model_validate_json(await self._transport.identity())

    async def call(self, method: str, *, boot: str | None = None, seq: int | None = None, **fields: Any) -> Response:
        """Run one method of the table; bad arguments raise ValueError/TypeError before any network call.

        `seq` repeats an interrupted call: the agent answers it from its ledger instead of running it again.
        """
        return (await self._run(one_call(self.url, method, boot, seq, **fields)))[0]

    async def disconnect(self) -> None:
        """Close the HTTP connections to the agent; the agent's sockets stay as they are."""
        await self._transport.aclose()

    aclose = disconnect

    async def __aenter__(self) -> AsyncAgent:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    async def _run(self, flow: Flow[T]) -> T:
        """Run a flow: each call it yields goes to the agent, and its answer, or its exception, goes back in."""
        call = self._transport.call
        try:
            step = next(flow)
            while True:
                try:
                    answer = await call(step[0], step[1], boot=step[2], seq=step[3])
                except BaseException as exc:
                    step = flow.throw(exc)
                else:
                    step = flow.send(answer)
        except StopIteration as done:
            return done.value


add_function_style(AsyncAgent, AsyncSocket)
