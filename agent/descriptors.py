"""The table of live sockets, keyed by descriptors that are never reused while the agent runs."""

import asyncio
import errno
import itertools
import socket
from collections.abc import Callable, Iterator

from protocol import ErrorCode
from protocol.models import Address, Family, SocketInfo, SocketType

from .faults import Fault

FAMILIES: dict[str, socket.AddressFamily] = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}
TYPES: dict[str, socket.SocketKind] = {"SOCK_STREAM": socket.SOCK_STREAM, "SOCK_DGRAM": socket.SOCK_DGRAM}


def _address(get: Callable[[], tuple]) -> Address | None:
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

    def __init__(self, descriptor: int, sock: socket.socket) -> None:
        self.descriptor = descriptor
        self.sock = sock
        self.family: Family = "AF_INET6" if sock.family == socket.AF_INET6 else "AF_INET"
        self.socket_type: SocketType = "SOCK_STREAM" if sock.type == socket.SOCK_STREAM else "SOCK_DGRAM"
        self.reader = asyncio.Lock()
        self.writer = asyncio.Lock()
        self.listening = False
        self.connecting: asyncio.Task | None = None
        self.connect_target: tuple | None = None
        self._waits: dict[asyncio.Future, Callable[[], object]] = {}

    @property
    def stream(self) -> bool:
        return self.socket_type == "SOCK_STREAM"

    def info(self) -> SocketInfo:
        return SocketInfo(
            descriptor=self.descriptor,
            family=self.family,
            socket_type=self.socket_type,
            local=_address(self.sock.getsockname),
            peer=_address(self.sock.getpeername),
            listening=self.listening,
        )

    async def wait_ready(self, *, write: bool, timeout: float | None) -> bool:
        """Wait until the socket is readable (or writable); False when `timeout` passed first."""
        loop = asyncio.get_running_loop()
        fd = self.sock.fileno()
        ready = loop.create_future()
        if write:
            loop.add_writer(fd, _wake, ready)
            self._waits[ready] = lambda: loop.remove_writer(fd)
        else:
            loop.add_reader(fd, _wake, ready)
            self._waits[ready] = lambda: loop.remove_reader(fd)
        try:
            done, _ = await asyncio.wait({ready}, timeout=timeout)
        finally:
            stop = self._waits.pop(ready, None)
            if stop is not None:
                stop()
        if done:
            ready.result()
        return bool(done)

    def close(self) -> None:
        for ready, stop in self._waits.items():
            stop()
            if not ready.done():
                ready.set_exception(OSError(errno.EBADF, "the socket was closed while waiting"))
        self._waits.clear()
        if self.connecting is not None:
            self.connecting.cancel()
        self.sock.close()


def _wake(ready: asyncio.Future) -> None:
    if not ready.done():
        ready.set_result(None)


class DescriptorTable:
    """Issues descriptors and finds the socket behind one."""

    def __init__(self) -> None:
        self._entries: dict[int, Entry] = {}
        self._numbers = itertools.count(1)

    def add(self, sock: socket.socket) -> Entry:
        sock.setblocking(False)
        entry = Entry(next(self._numbers), sock)
        self._entries[entry.descriptor] = entry
        return entry

    def get(self, descriptor: int) -> Entry:
        try:
            return self._entries[descriptor]
        except KeyError:
            raise Fault(ErrorCode.BAD_DESCRIPTOR, f"descriptor {descriptor} is not open") from None

    def __contains__(self, descriptor: int) -> bool:
        return descriptor in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def close(self, descriptor: int) -> bool:
        entry = self._entries.pop(descriptor, None)
        if entry is None:
            return False
        entry.close()
        return True

    def close_all(self) -> None:
        for descriptor in list(self._entries):
            self.close(descriptor)
