"""A socket on the agent, as the notebook sees it: the seed's device with its methods, blocking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, Self, TypeVar

from protocol import AgentError
from protocol.framing import MAX_LINE

from ..core import Flow, Piece, Runs, SocketCore
from ..display import Card
from ..result import ResultUIntList
from .callbacks import Callback

T = TypeVar("T")


class Runner(Runs, Protocol):
    def _run(self, flow: Flow[T]) -> T: ...

    def _flush(self, descriptor: int) -> None: ...

    def _watch(self, sock: Socket, callback: Callback | None, options: dict[str, Any]) -> None: ...


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

    def send(self, message: bytes | bytearray | memoryview | list[int], progress: bool | None = None) -> int:
        """Send bytes and return how many were sent: all of them on TCP, one datagram on UDP. A large send shows
        its progress once it is slow (`progress=True`: always; `False`: never)."""
        return self.agent._run(self._send_flow(message, progress))

    def receive(self, bufsize: int, timeout: float | None = None) -> ResultUIntList | None:
        """Up to `bufsize` bytes (TCP) or one datagram (UDP); None at end of stream or after `timeout`."""
        return self.agent._run(self._receive_flow(bufsize, timeout))

    def send_to(self, message: bytes | bytearray | memoryview | list[int], host: str, port: int) -> int:
        """Send one datagram to `host`:`port` from an unconnected UDP socket (a name is resolved on the agent)."""
        return self.agent._run(self._send_to_flow(message, host, port))

    def write_line(self, text: str, terminator: str | bytes = "\n", encoding: str = "ascii") -> int:
        """Send `text` and the terminator; returns the bytes sent."""
        return self.agent._run(self._write_line_flow(text, terminator, encoding))

    def read_line(
        self,
        terminator: str | bytes = "\n",
        timeout: float | None = None,
        encoding: str = "ascii",
        max_length: int = MAX_LINE,
    ) -> str:
        """One line, without its terminator; what follows it stays for the next read. TimeoutError after
        `timeout`, IncompleteReadError if the peer closes first, ValueError past `max_length` bytes."""
        return self.agent._run(self._read_line_flow(terminator, timeout, encoding, max_length))

    def query(
        self,
        text: str,
        terminator: str | bytes = "\n",
        timeout: float | None = None,
        encoding: str = "ascii",
        max_length: int = MAX_LINE,
    ) -> str:
        """Write `text` as a line and read the answer line, in one round trip: `query("*IDN?")`."""
        return self.agent._run(self._query_flow(text, terminator, timeout, encoding, max_length))

    def receive_exactly(self, nbytes: int, timeout: float | None = None, progress: bool | None = None) -> bytes:
        """Exactly `nbytes` bytes; TimeoutError or IncompleteReadError say how many came (they stay readable, or
        for a large read, shown with its progress, are in the error's `.data`)."""
        return self.agent._run(self._receive_exactly_flow(nbytes, timeout, progress))

    def read_values(
        self,
        count: int,
        datatype: str = "uint8",
        byte_order: str = "little",
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> list[int] | list[float]:
        """`count` numbers of `datatype` (int8..uint64, float32, float64) in `byte_order`, as MATLAB's read."""
        return self.agent._run(self._read_values_flow(count, datatype, byte_order, timeout, progress))

    def write_values(self, values: Sequence[int | float], datatype: str = "uint8", byte_order: str = "little") -> int:
        """Send `values` as `datatype` items in `byte_order`; returns the bytes sent."""
        return self.agent._run(self._write_values_flow(values, datatype, byte_order))

    def bytes_available(self) -> int:
        """Bytes a receive gets now without waiting: on the agent's socket and already on their way here."""
        return self.agent._run(self._bytes_available_flow())

    def set_option(self, name: str, value: bool | int) -> None:
        """Set a socket option by name: SO_REUSEADDR, SO_BROADCAST, SO_RCVBUF, TCP_NODELAY, IP_MULTICAST_TTL, ..."""
        return self.agent._run(self._set_option_flow(name, value))

    def get_option(self, name: str) -> bool | int:
        """A socket option's value, by name (the names set_option takes)."""
        return self.agent._run(self._get_option_flow(name))

    def shutdown(self, how: str | int) -> None:
        """Shut down "SHUT_RD", "SHUT_WR" (a half-close: the peer reads EOF, and may still answer) or "SHUT_RDWR"."""
        return self.agent._run(self._shutdown_flow(how))

    def join_group(self, group: str, interface: str | None = None) -> None:
        """Receive the multicast `group`'s datagrams, on `interface` (its address or name; none: the system's choice)."""
        return self.agent._run(self._group_flow(group, interface, True))

    def leave_group(self, group: str, interface: str | None = None) -> None:
        """Stop receiving the multicast `group`."""
        return self.agent._run(self._group_flow(group, interface, False))

    def is_open(self, socket_descriptor: int | None = None) -> bool:
        """Whether a descriptor (this socket's by default) is open on the agent."""
        return self.agent._run(self._is_open_flow(socket_descriptor))

    def on_data(
        self,
        callback: Callback | None,
        *,
        terminator: str | bytes | None = None,
        min_bytes: int = 1,
        encoding: str = "ascii",
    ) -> None:
        """Call `callback(socket, piece)` whenever data arrives, without polling: a line (str) when `terminator`
        is set (a line that is no text, or over 64 KiB, comes as bytes), else at least `min_bytes` bytes (bytes),
        or each datagram (with `.address`) on UDP. Callbacks
        run on one client thread, in order; a slow one slows the peer (TCP). `on_data(None)` stops it; what was
        already read is still delivered."""
        options = self._on_data_options(callback, terminator, min_bytes, encoding)
        self.agent._watch(self, callback, options)

    def _piece(self, timeout: float, **options: Any) -> Piece | None:
        return self.agent._run(self._piece_flow(timeout=timeout, **options))

    @property
    def dropped(self) -> int:
        """Datagrams the agent dropped on this socket because a stream's window was full (a call to the agent)."""
        return self.agent._run(self._dropped_flow())

    def flush(self) -> None:
        """Wait until this socket's pipelined sends have their answers; raises the first that failed."""
        return self.agent._flush(self.descriptor)

    def close(self) -> None:
        """Close the socket on the agent (and stop its on_data); closing again does nothing."""
        self.agent._watch(self, None, {"closing": True})
        return self.agent._run(self._close_flow())

    def _repr_html_(self) -> str:
        return self._live_card().html()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else self._live_card().text())

    def _live_card(self) -> Card:
        """The socket with the agent's live view of it (addresses, bytes in and out), unless it is closed."""
        if self.closed:
            return self._card()
        try:
            return self._card(self.agent._run(self._describe_flow()))
        except (AgentError, OSError) as exc:
            card = self._card()
            return Card(card.title, [*card.facts, ("unreachable", str(exc))])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
