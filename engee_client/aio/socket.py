"""A socket on the agent, awaited: the seed's device with its methods as coroutines."""

from __future__ import annotations

from typing import Protocol, Self, TypeVar

from ..core import Flow, Runs, SocketCore
from ..result import ResultUIntList

T = TypeVar("T")


class Runner(Runs, Protocol):
    async def _run(self, flow: Flow[T]) -> T: ...

    async def _flush(self, descriptor: int) -> None: ...


class AsyncSocket(SocketCore):
    """A socket that lives on an agent; every method is an awaitable call to that agent."""

    agent: Runner

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

    async def flush(self) -> None:
        """Wait until this socket's pipelined sends have their answers; raises the first that failed."""
        return await self.agent._flush(self.descriptor)

    async def close(self) -> None:
        """Close the socket on the agent; closing again does nothing."""
        return await self.agent._run(self._close_flow())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
