"""The table of live sockets, keyed by descriptors that are never reused while the agent runs."""

import asyncio
import errno
import itertools
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from protocol import ErrorCode
from protocol.models import Address, Family, Response, SocketInfo, SocketType

from .faults import CallerGone, Fault

T = TypeVar("T")

Gone = Callable[[], Awaitable[None]]
"""Waits until the HTTP caller has disconnected."""

FAMILIES: dict[str, socket.AddressFamily] = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}
TYPES: dict[str, socket.SocketKind] = {"SOCK_STREAM": socket.SOCK_STREAM, "SOCK_DGRAM": socket.SOCK_DGRAM}


SocketAddress = tuple[Any, ...]
"""An address as the socket module gives and takes it: (host, port) or (host, port, flowinfo, scope_id)."""


def _address(get: Callable[[], SocketAddress]) -> Address | None:
    try:
        host, port = get()[:2]
    except OSError:
        return None
    return Address(host=host, port=port)


class Entry:
    """One live socket: the OS socket, its locks, and the readiness waits pending on it.

    Data is only ever taken from the OS after a wait has ended, so a wait that times out or is
    cancelled never loses bytes; closing the socket wakes every pending wait with EBADF.
    """

    def __init__(self, descriptor: int, sock: socket.socket, owner: str) -> None:
        self.descriptor = descriptor
        self.sock = sock
        self.owner = owner
        self.last_call = time.monotonic()
        self.family: Family = "AF_INET6" if sock.family == socket.AF_INET6 else "AF_INET"
        self.socket_type: SocketType = "SOCK_STREAM" if sock.type == socket.SOCK_STREAM else "SOCK_DGRAM"
        self.reader = asyncio.Lock()
        self.writer = asyncio.Lock()
        self.listening = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.connecting: asyncio.Task[None] | None = None
        self.sends_waiting = 0
        """Datagram sends waiting for the socket to take them: a new one goes after them, not at once."""
        self.connect_target: SocketAddress | None = None
        self._waits: dict[asyncio.Future[None], Callable[[], object]] = {}
        self.reading_ahead = False
        """A channel's stream reads it (agent/streams.py)."""
        self.closing: list[Callable[[str], None]] = []
        """Called with the reason when the socket closes: what reads it without a wait (a stream) ends."""
        self.streamed: int | None = None
        """The offset a channel's stream has read it up to, while one does."""
        self.dropped = 0
        """Datagrams a stream read and dropped because its window was full, as a full kernel buffer does."""
        self.held: deque[Response] = deque()
        """Answers of cancelled calls, given back: the next receive or accept takes them first."""

    @property
    def stream(self) -> bool:
        return self.socket_type == "SOCK_STREAM"

    @property
    def busy(self) -> bool:
        """A call is in progress on it, so it is not idle however long that call waits. A channel's stream
        reading it ahead is no call: it keeps the socket alive only while data or its client's grants come."""
        if self.reading_ahead:
            return self.writer.locked() or self.connecting is not None
        return bool(self._waits) or self.reader.locked() or self.writer.locked() or self.connecting is not None

    def info(self) -> SocketInfo:
        return SocketInfo(
            descriptor=self.descriptor,
            family=self.family,
            socket_type=self.socket_type,
            local=_address(self.sock.getsockname),
            peer=_address(self.sock.getpeername),
            listening=self.listening,
            owner=self.owner,
            dropped=self.dropped,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )

    async def wait_ready(self, *, write: bool, timeout: float | None, gone: Gone | None = None) -> bool:
        """Wait until the socket is readable (or writable); False when `timeout` passed first.

        `gone` completes when the caller disconnects: then the wait ends with CallerGone.
        """
        loop = asyncio.get_running_loop()
        fd = self.sock.fileno()
        ready: asyncio.Future[None] = loop.create_future()
        if write:
            loop.add_writer(fd, _wake, ready)
            self._waits[ready] = lambda: loop.remove_writer(fd)
        else:
            loop.add_reader(fd, _wake, ready)
            self._waits[ready] = lambda: loop.remove_reader(fd)
        watcher = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            done, _ = await asyncio.wait(futures(ready, watcher), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop = self._waits.pop(ready, None)
            if stop is not None:
                stop()
            if watcher is not None:
                watcher.cancel()
            if ready.done() and not ready.cancelled():
                ready.exception()  # consumed here even when this wait was cancelled, so asyncio logs nothing
        if ready in done:
            ready.result()
            return True
        if done:
            raise CallerGone()
        return False

    async def attempt(
        self,
        call: Callable[[], T],
        *,
        write: bool,
        timeout: float | None = None,
        deadline: float | None = None,
        gone: Gone | None = None,
    ) -> T | None:
        """Make the non-blocking system call `call` until it does not raise BlockingIOError, waiting for
        readiness in between; None once `timeout` seconds (or the loop time `deadline`) pass first."""
        loop = asyncio.get_running_loop()
        if timeout is not None:
            deadline = loop.time() + timeout
        while True:
            try:
                return call()
            except BlockingIOError:
                pass
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            if not await self.wait_ready(write=write, timeout=remaining, gone=gone):
                return None

    def pump(self, read_some: Callable[[], bool]) -> asyncio.Future[None]:
        """Call `read_some()` whenever the socket is readable, until it returns False: then the future is done.
        It fails with what `read_some` raised, or with EBADF when the socket closes. For a reader that keeps
        reading (a channel's stream): one registration for all it reads, not one wait each."""
        loop = asyncio.get_running_loop()
        fd = self.sock.fileno()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                more = read_some()
            except Exception as exc:  # noqa: BLE001 - handed to the one awaiting the pump
                self.unpump(done)
                done.set_exception(exc)
                return
            if not more:
                self.unpump(done)
                done.set_result(None)

        loop.add_reader(fd, readable)
        self._waits[done] = lambda: loop.remove_reader(fd)
        return done

    def unpump(self, done: asyncio.Future[None]) -> None:
        """Stop the pump whose future is `done` (when it is still running)."""
        if (stop := self._waits.pop(done, None)) is not None:
            stop()

    def close(self, reason: str = "the socket was closed while waiting") -> None:
        for closing in list(self.closing):  # a copy: each takes itself off the list
            closing(reason)
        for ready, stop in self._waits.items():
            stop()
            if not ready.done():
                ready.set_exception(OSError(errno.EBADF, reason))
        self._waits.clear()
        if self.connecting is not None:
            self.connecting.cancel()
        self.sock.close()


def futures(*futures: asyncio.Future[None] | None) -> set[asyncio.Future[None]]:
    """The futures to wait for, leaving out a watcher that is not there."""
    return {future for future in futures if future is not None}


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class DescriptorTable:
    """Issues descriptors and finds the socket behind one, for its owner only.

    Another principal's descriptor behaves exactly like one that was never issued.
    """

    def __init__(self) -> None:
        self._entries: dict[int, Entry] = {}
        self._numbers = itertools.count(1)
        self._reaped: dict[int, tuple[str, float]] = {}
        self._closed_by = ""

    def add(self, sock: socket.socket, owner: str) -> Entry:
        sock.setblocking(False)
        entry = Entry(next(self._numbers), sock, owner)
        self._entries[entry.descriptor] = entry
        return entry

    def get(self, descriptor: int, owner: str) -> Entry:
        entry = self._entries.get(descriptor)
        if entry is None or entry.owner != owner:
            if self._closed_by and descriptor in self._reaped:
                raise Fault(ErrorCode.BAD_DESCRIPTOR, self._closed_by)
            reaped = self._reaped.get(descriptor)
            if reaped and reaped[0] == owner:
                raise Fault(
                    ErrorCode.BAD_DESCRIPTOR,
                    f"descriptor {descriptor} was closed by the agent after "
                    f"{reaped[1]:.0f} s without a call (limit idle_timeout)",
                )
            raise Fault(ErrorCode.BAD_DESCRIPTOR, f"descriptor {descriptor} is not open")
        entry.last_call = time.monotonic()
        return entry

    def is_open(self, descriptor: int, owner: str) -> bool:
        entry = self._entries.get(descriptor)
        return entry is not None and entry.owner == owner

    def entries(self, owner: str | None = None) -> list[Entry]:
        """The open sockets of `owner`, or of everyone."""
        return [entry for entry in self._entries.values() if owner is None or entry.owner == owner]

    def __len__(self) -> int:
        return len(self._entries)

    def close(self, descriptor: int, owner: str) -> bool:
        if not self.is_open(descriptor, owner):
            return False
        self._entries.pop(descriptor).close()
        return True

    def reap(self, idle_timeout: float) -> list[Entry]:
        """Close the sockets no call has touched for `idle_timeout` seconds, and remember them."""
        now = time.monotonic()
        idle = [entry for entry in self._entries.values() if now - entry.last_call > idle_timeout and not entry.busy]
        for entry in idle:
            self._entries.pop(entry.descriptor).close()
            if len(self._reaped) >= REAPED_REMEMBERED:
                self._reaped.pop(next(iter(self._reaped)))
            self._reaped[entry.descriptor] = (entry.owner, now - entry.last_call)
        return idle

    def close_all(self, reason: str = "the agent is shutting down; its sockets are closed") -> None:
        """Close every socket; waiting calls end with `reason`, later calls on them hear it too."""
        for entry in self._entries.values():
            entry.close(reason)
            self._reaped[entry.descriptor] = (entry.owner, 0.0)
        self._entries.clear()
        self._closed_by = reason


REAPED_REMEMBERED = 100_000
"""Reaped descriptors remembered, so a later call can say why the socket is gone."""
