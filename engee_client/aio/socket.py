"""A socket on the agent, awaited: the seed's device with its methods as coroutines."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, Self, TypeVar

from protocol import AgentError
from protocol.framing import MAX_LINE

from ..core import Flow, Piece, Runs, SocketCore, report
from ..result import ResultUIntList

T = TypeVar("T")


class Runner(Runs, Protocol):
    async def _run(self, flow: Flow[T]) -> T: ...

    async def _flush(self, descriptor: int) -> None: ...


class AsyncSocket(SocketCore):
    """A socket that lives on an agent; every method is an awaitable call to that agent."""

    agent: Runner
    _watcher: asyncio.Future[None] | None = None

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

    async def send(self, message: bytes | bytearray | memoryview | list[int], progress: bool | None = None) -> int:
        """Send bytes and return how many were sent: all of them on TCP, one datagram on UDP. A large send shows
        its progress once it is slow (`progress=True`: always; `False`: never)."""
        return await self.agent._run(self._send_flow(message, progress))

    async def receive(self, bufsize: int, timeout: float | None = None) -> ResultUIntList | None:
        """Up to `bufsize` bytes (TCP) or one datagram (UDP); None at end of stream or after `timeout`."""
        return await self.agent._run(self._receive_flow(bufsize, timeout))

    async def send_to(self, message: bytes | bytearray | memoryview | list[int], host: str, port: int) -> int:
        """Send one datagram to `host`:`port` from an unconnected UDP socket (a name is resolved on the agent)."""
        return await self.agent._run(self._send_to_flow(message, host, port))

    async def write_line(self, text: str, terminator: str | bytes = "\n", encoding: str = "ascii") -> int:
        """Send `text` and the terminator; returns the bytes sent."""
        return await self.agent._run(self._write_line_flow(text, terminator, encoding))

    async def read_line(
        self,
        terminator: str | bytes = "\n",
        timeout: float | None = None,
        encoding: str = "ascii",
        max_length: int = MAX_LINE,
    ) -> str:
        """One line, without its terminator; what follows it stays for the next read. TimeoutError after
        `timeout`, IncompleteReadError if the peer closes first, ValueError past `max_length` bytes."""
        return await self.agent._run(self._read_line_flow(terminator, timeout, encoding, max_length))

    async def query(
        self,
        text: str,
        terminator: str | bytes = "\n",
        timeout: float | None = None,
        encoding: str = "ascii",
        max_length: int = MAX_LINE,
    ) -> str:
        """Write `text` as a line and read the answer line, in one round trip: `query("*IDN?")`."""
        return await self.agent._run(self._query_flow(text, terminator, timeout, encoding, max_length))

    async def receive_exactly(self, nbytes: int, timeout: float | None = None, progress: bool | None = None) -> bytes:
        """Exactly `nbytes` bytes; TimeoutError or IncompleteReadError say how many came (they stay readable, or
        for a large read, shown with its progress, are in the error's `.data`)."""
        return await self.agent._run(self._receive_exactly_flow(nbytes, timeout, progress))

    async def read_values(
        self,
        count: int,
        datatype: str = "uint8",
        byte_order: str = "little",
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> list[int] | list[float]:
        """`count` numbers of `datatype` (int8..uint64, float32, float64) in `byte_order`, as MATLAB's read."""
        return await self.agent._run(self._read_values_flow(count, datatype, byte_order, timeout, progress))

    async def write_values(
        self, values: Sequence[int | float], datatype: str = "uint8", byte_order: str = "little"
    ) -> int:
        """Send `values` as `datatype` items in `byte_order`; returns the bytes sent."""
        return await self.agent._run(self._write_values_flow(values, datatype, byte_order))

    async def bytes_available(self) -> int:
        """Bytes a receive gets now without waiting: on the agent's socket and already on their way here."""
        return await self.agent._run(self._bytes_available_flow())

    async def set_option(self, name: str, value: bool | int) -> None:
        """Set a socket option by name: SO_REUSEADDR, SO_BROADCAST, SO_RCVBUF, TCP_NODELAY, IP_MULTICAST_TTL, ..."""
        return await self.agent._run(self._set_option_flow(name, value))

    async def get_option(self, name: str) -> bool | int:
        """A socket option's value, by name (the names set_option takes)."""
        return await self.agent._run(self._get_option_flow(name))

    async def shutdown(self, how: str | int) -> None:
        """Shut down "SHUT_RD", "SHUT_WR" (a half-close: the peer reads EOF, and may still answer) or "SHUT_RDWR"."""
        return await self.agent._run(self._shutdown_flow(how))

    async def join_group(self, group: str, interface: str | None = None) -> None:
        """Receive the multicast `group`'s datagrams, on `interface` (its address or name; none: the system's choice)."""
        return await self.agent._run(self._group_flow(group, interface, True))

    async def leave_group(self, group: str, interface: str | None = None) -> None:
        """Stop receiving the multicast `group`."""
        return await self.agent._run(self._group_flow(group, interface, False))

    async def is_open(self, socket_descriptor: int | None = None) -> bool:
        """Whether a descriptor (this socket's by default) is open on the agent."""
        return await self.agent._run(self._is_open_flow(socket_descriptor))

    async def incoming(
        self, *, terminator: str | bytes | None = None, min_bytes: int = 1, encoding: str = "ascii"
    ) -> AsyncIterator[Piece]:
        """`async for piece in s.incoming():` each piece as it arrives, as on_data hands them over, until the
        peer closes the connection."""
        options = self._on_data_options(None, terminator, min_bytes, encoding)
        while True:
            try:
                piece = await self.agent._run(self._piece_flow(timeout=None, **options))
            except EOFError:
                return
            if piece is not None:
                yield piece

    async def on_data(
        self,
        callback: Callable[[AsyncSocket, Any], object] | None,
        *,
        terminator: str | bytes | None = None,
        min_bytes: int = 1,
        encoding: str = "ascii",
    ) -> None:
        """Call `callback(socket, piece)` (or await it, if it is a coroutine function) for each piece that arrives,
        in order, in a task of this loop; `on_data(None)` stops it (what its wait took goes back to the socket)."""
        self._on_data_options(callback, terminator, min_bytes, encoding)
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        if callback is not None:
            pieces = self.incoming(terminator=terminator, min_bytes=min_bytes, encoding=encoding)
            self._watcher = asyncio.ensure_future(self._deliver(callback, pieces))

    async def _deliver(self, callback: Callable[[AsyncSocket, Any], object], pieces: AsyncIterator[Piece]) -> None:
        try:
            async for piece in pieces:
                try:
                    outcome = callback(self, piece)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:  # noqa: BLE001 - reported, and the next piece still comes
                    report(f"the on_data callback of {self!r} raised:", traceback_too=True)
        except (OSError, AgentError) as exc:
            if not self.closed:
                report(f"on_data of {self!r} stopped: {exc}")

    @property
    def dropped(self) -> Awaitable[int]:
        """`await s.dropped`: datagrams the agent dropped on this socket because a stream's window was full."""
        return self.agent._run(self._dropped_flow())

    async def flush(self) -> None:
        """Wait until this socket's pipelined sends have their answers; raises the first that failed."""
        return await self.agent._flush(self.descriptor)

    async def close(self) -> None:
        """Close the socket on the agent (and stop its on_data); closing again does nothing."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        return await self.agent._run(self._close_flow())

    def _repr_html_(self) -> str:
        return self._card().html()  # no call: a display cannot await in a running loop

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else self._card().text())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
