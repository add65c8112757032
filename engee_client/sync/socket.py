"""A socket on the agent, as the notebook sees it: the seed's device with its methods, blocking."""

from __future__ import annotations

from typing import Protocol, Self, TypeVar

from ..core import Flow, Runs, SocketCore
from ..result import ResultUIntList

T = TypeVar("T")


class Runner(Runs, Protocol):
    def _run(self, flow: Flow[T]) -> T: ...

    def _flush(self, descriptor: int) -> None: ...


class Socket(SocketCore):
    """A socket that lives on an agent; every method is a call to that agent."""

    agent: Runner

    def bind(self, host: str, port: int) -> None:
        """Bind to a local address on the agent's machine; port 0 picks a free port."""
        return self.agent._run(self._bind_flow(host, port))

    def listen(self, backlog: int = 128) -> None:
        """Accept incoming TCP connections from now on (an unbound socket gets a free port)."""
        return self.agent._run(self._listen_flow(backlog))

    def accept(self, timeout: float | None = None) -> int:
        """Wait for a client and return the new connection's descriptor; TimeoutError after `timeout`."""
        return self.agent._run(self._accept_flow(timeout))

    def connect(self, host: str, port: int, timeout: float | None = None) -> int:
        """Connect to a peer (TCP) or fix the peer (UDP); returns 0, as the seed does."""
        return self.agent._run(self._connect_flow(host, port, timeout))

    def send(self, message: bytes | bytearray | memoryview | list[int]) -> int:
        """Send bytes and return how many were sent: all of them on TCP, one datagram on UDP."""
        return self.agent._run(self._send_flow(message))

    def receive(self, bufsize: int, timeout: float | None = None) -> ResultUIntList | None:
        """Up to `bufsize` bytes (TCP) or one datagram (UDP); None at end of stream or after `timeout`."""
        return self.agent._run(self._receive_flow(bufsize, timeout))

    def is_open(self, socket_descriptor: int | None = None) -> bool:
        """Whether a descriptor (this socket's by default) is open on the agent."""
        return self.agent._run(self._is_open_flow(socket_descriptor))

    def flush(self) -> None:
        """Wait until this socket's pipelined sends have their answers; raises the first that failed."""
        return self.agent._flush(self.descriptor)

    def close(self) -> None:
        """Close the socket on the agent; closing again does nothing."""
        return self.agent._run(self._close_flow())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
