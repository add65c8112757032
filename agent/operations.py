"""The agent side of each Sockets method: one coroutine per entry of the method table.

Every socket is non-blocking; an operation tries the call, and on BlockingIOError waits for
readiness on the event loop, so a call waiting on one socket never delays a call on another.
"""

import asyncio
import errno
import os
import socket

from protocol import models as m

from .descriptors import FAMILIES, TYPES, DescriptorTable, Entry

_GAI_ERRORS = {getattr(socket, name): name for name in dir(socket) if name.startswith("EAI_")}


class Operations:
    """The Sockets methods over a descriptor table; method names match the method table."""

    def __init__(self, table: DescriptorTable) -> None:
        self.table = table

    async def socket(self, request: m.SocketRequest) -> m.SocketInfo:
        sock = socket.socket(FAMILIES[request.family], TYPES[request.socket_type])
        return self.table.add(sock).info()

    async def describe(self, request: m.DescriptorRequest) -> m.SocketInfo:
        return self.table.get(request.descriptor).info()

    async def bind(self, request: m.BindRequest) -> m.SocketInfo:
        entry = self.table.get(request.descriptor)
        entry.sock.bind(await self._resolve(entry, request.host, request.port))
        return entry.info()

    async def listen(self, request: m.ListenRequest) -> m.SocketInfo:
        entry = self.table.get(request.descriptor)
        _require_stream(entry, "listen")
        entry.sock.listen(request.backlog)
        entry.listening = True
        return entry.info()

    async def accept(self, request: m.AcceptRequest) -> m.AcceptResponse:
        entry = self.table.get(request.descriptor)
        _require_stream(entry, "accept")
        if not entry.listening:
            raise OSError(errno.EINVAL, "accept needs a listening socket: call listen first")
        result = await _attempt(entry, entry.reader, request.wait, False, entry.sock.accept)
        if result is None:
            return m.AcceptResponse(pending=True)
        conn, (host, port, *_) = result
        return m.AcceptResponse(descriptor=self.table.add(conn).descriptor, peer=m.Address(host=host, port=port))

    async def connect(self, request: m.ConnectRequest) -> m.ConnectResponse:
        entry = self.table.get(request.descriptor)
        target = await self._resolve(entry, request.host, request.port)
        if not entry.stream:
            entry.sock.connect(target)
            return _connected(entry)
        if entry.connecting is None:
            entry.connect_target = target
            entry.connecting = asyncio.create_task(_connect_stream(entry, target))
        elif entry.connect_target != target:
            raise OSError(errno.EALREADY, "a connect to another address is in progress")
        done, _ = await asyncio.wait({entry.connecting}, timeout=request.wait)
        if not done:
            return m.ConnectResponse(pending=True)
        task, entry.connecting = entry.connecting, None
        task.result()
        return _connected(entry)

    async def send(self, request: m.SendRequest) -> m.SendResponse:
        entry = self.table.get(request.descriptor)
        if not entry.stream:
            await _attempt(entry, entry.writer, None, True, lambda: entry.sock.send(request.data))
            return m.SendResponse(sent=len(request.data))
        view, sent = memoryview(request.data), 0
        async with entry.writer:
            while sent < len(view):
                try:
                    sent += entry.sock.send(view[sent:])
                except BlockingIOError:
                    await entry.wait_ready(write=True, timeout=None)
        return m.SendResponse(sent=sent)

    async def receive(self, request: m.ReceiveRequest) -> m.ReceiveResponse:
        entry = self.table.get(request.descriptor)
        if entry.stream:
            data = await _attempt(entry, entry.reader, request.wait, False, lambda: entry.sock.recv(request.bufsize))
            if data is None:
                return m.ReceiveResponse(pending=True)
            return m.ReceiveResponse(data=data, eof=not data)
        result = await _attempt(entry, entry.reader, request.wait, False, lambda: entry.sock.recvfrom(request.bufsize))
        if result is None:
            return m.ReceiveResponse(pending=True)
        data, (host, port, *_) = result
        return m.ReceiveResponse(data=data, peer=m.Address(host=host, port=port))

    async def is_open(self, request: m.IsOpenRequest) -> m.IsOpenResponse:
        return m.IsOpenResponse(open=request.descriptor in self.table)

    async def close(self, request: m.DescriptorRequest) -> m.CloseResponse:
        return m.CloseResponse(closed=self.table.close(request.descriptor))

    async def _resolve(self, entry: Entry, host: str, port: int) -> tuple:
        """Resolve on the agent: the notebook's DNS is not the lab's."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=entry.sock.family, type=entry.sock.type)
        except socket.gaierror as exc:
            name = _GAI_ERRORS.get(exc.errno, "EAI_FAIL")
            raise OSError(exc.errno, f"cannot resolve {host!r} for {entry.family}: {exc.strerror} ({name})") from None
        return infos[0][4]


async def _attempt(entry: Entry, lock: asyncio.Lock, wait: float | None, write: bool, call):
    """Run a non-blocking `call` under `lock` until it succeeds; None when `wait` seconds pass first."""
    loop = asyncio.get_running_loop()
    deadline = None if wait is None else loop.time() + wait
    if lock.locked():
        try:
            await asyncio.wait_for(lock.acquire(), wait)
        except TimeoutError:
            return None
    else:
        await lock.acquire()
    try:
        while True:
            try:
                return call()
            except BlockingIOError:
                pass
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            if not await entry.wait_ready(write=write, timeout=remaining):
                return None
    finally:
        lock.release()


async def _connect_stream(entry: Entry, target: tuple) -> None:
    async with entry.writer:
        try:
            entry.sock.connect(target)
            return
        except BlockingIOError:
            pass
        await entry.wait_ready(write=True, timeout=None)
        error = entry.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))


def _require_stream(entry: Entry, method: str) -> None:
    if not entry.stream:
        raise OSError(errno.EOPNOTSUPP, f"{method} needs a SOCK_STREAM socket, this one is {entry.socket_type}")


def _connected(entry: Entry) -> m.ConnectResponse:
    info = entry.info()
    return m.ConnectResponse(local=info.local, peer=info.peer)
