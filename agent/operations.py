"""The agent side of each Sockets method: one coroutine per entry of the method table.

Every socket is non-blocking; an operation tries the call, and on BlockingIOError waits for
readiness on the event loop, so a call waiting on one socket never delays a call on another.
Each operation acts for one principal, within the destination policy and the limits.
"""

import asyncio
import errno
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TypeVar

from protocol import ErrorCode
from protocol import models as m
from protocol.errors import over_max_bufsize
from protocol.framing import Framing

from . import options
from .descriptors import FAMILIES, TYPES, DescriptorTable, Entry, Gone, SocketAddress, futures
from .faults import CallerGone, Fault
from .policy import IPAddress, Policy
from .settings import Limits, Principal

if sys.platform != "win32":
    import fcntl
    import termios

T = TypeVar("T")
_RECVMSG = hasattr(socket.socket, "recvmsg")
"""Windows has no recvmsg, so there a datagram cut to bufsize cannot say so."""
Given = TypeVar("Given", m.ReceiveResponse, m.AcceptResponse)


class Operations:
    """The Sockets methods over a descriptor table; method names match the method table."""

    def __init__(self, table: DescriptorTable, policy: Policy, limits: Limits) -> None:
        self.table = table
        self.policy = policy
        self.limits = limits
        self._waiting = 0
        self._waiting_by: dict[str, int] = {}

    async def socket(self, request: m.SocketRequest, principal: Principal) -> m.SocketInfo:
        self._check_room(principal)
        sock = socket.socket(FAMILIES[request.family], TYPES[request.socket_type])
        return self.table.add(sock, principal.name).info()

    async def describe(self, request: m.DescriptorRequest, principal: Principal) -> m.SocketInfo:
        return self.table.get(request.descriptor, principal.name).info()

    async def bind(self, request: m.BindRequest, principal: Principal) -> m.SocketInfo:
        entry = self.table.get(request.descriptor, principal.name)
        entry.sock.bind(await self._resolve(entry, "bind", request.host, request.port, principal))
        return entry.info()

    async def listen(self, request: m.ListenRequest, principal: Principal) -> m.SocketInfo:
        entry = self.table.get(request.descriptor, principal.name)
        _require_stream(entry, "listen")
        entry.sock.listen(request.backlog)
        entry.listening = True
        return entry.info()

    async def accept(
        self, request: m.AcceptRequest, principal: Principal, gone: Gone | None = None
    ) -> m.AcceptResponse:
        entry = self.table.get(request.descriptor, principal.name)
        _require_stream(entry, "accept")
        if not entry.listening:
            raise OSError(errno.EINVAL, "accept needs a listening socket: call listen first")
        if entry.held:
            return _held(entry, m.AcceptResponse)
        self._check_room(principal)
        async with self._wait_slot(principal):
            result = await _attempt(entry, entry.reader, request.wait, False, entry.sock.accept, gone)
        if result is None:
            return m.AcceptResponse(pending=True)
        conn, (host, port, *_) = result
        accepted = self.table.add(conn, principal.name)
        return m.AcceptResponse(descriptor=accepted.descriptor, peer=m.Address(host=host, port=port))

    async def connect(
        self, request: m.ConnectRequest, principal: Principal, gone: Gone | None = None
    ) -> m.ConnectResponse:
        entry = self.table.get(request.descriptor, principal.name)
        target = await self._resolve(entry, "connect", request.host, request.port, principal)
        if not entry.stream:
            entry.sock.connect(target)
            return _connected(entry)
        task = entry.connecting
        if task is None or (task.done() and entry.connect_target != target):
            entry.connect_target = target
            task = entry.connecting = asyncio.create_task(_connect_stream(entry, target))
            await asyncio.sleep(0)  # let it start: a loopback connect may be done at once
        elif entry.connect_target != target:
            raise OSError(errno.EALREADY, "a connect to another address is in progress")
        watcher = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            async with self._wait_slot(principal):
                done, _ = await asyncio.wait(
                    futures(task, watcher), timeout=request.wait, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            if watcher is not None:
                watcher.cancel()
        if task not in done:
            if done:
                raise CallerGone()  # the connect goes on; a later call with the same address joins it
            return m.ConnectResponse(pending=True)
        if entry.connecting is task:
            entry.connecting = None
        if task.cancelled():
            raise OSError(errno.EBADF, "the socket was closed while connecting")
        task.result()
        return _connected(entry)

    async def send(self, request: m.SendRequest, principal: Principal) -> m.SendResponse:
        entry = self.table.get(request.descriptor, principal.name)
        if not entry.stream:
            return await _send_datagram(entry, partial(entry.sock.send, request.data))
        return m.SendResponse(sent=await _send_all(entry, request.data))

    async def send_to(self, request: m.SendToRequest, principal: Principal) -> m.SendResponse:
        entry = self.table.get(request.descriptor, principal.name)
        if entry.stream:
            raise OSError(errno.EOPNOTSUPP, "send_to needs a SOCK_DGRAM socket; a TCP socket sends to its peer: send")
        target = await self._resolve(entry, "connect", request.host, request.port, principal)
        return await _send_datagram(entry, partial(entry.sock.sendto, request.data, target))

    async def read_line(
        self, request: m.ReadLineRequest, principal: Principal, gone: Gone | None = None
    ) -> m.ReceiveResponse:
        return await self._framed(
            self._framed_entry(request.descriptor, principal, "read_line"), request, principal, gone
        )

    async def query(self, request: m.QueryRequest, principal: Principal, gone: Gone | None = None) -> m.ReceiveResponse:
        entry = self._framed_entry(request.descriptor, principal, "query")
        await _send_all(entry, request.data)
        return await self._framed(entry, request, principal, gone)

    async def receive_exactly(
        self, request: m.ReceiveExactlyRequest, principal: Principal, gone: Gone | None = None
    ) -> m.ReceiveResponse:
        entry = self._framed_entry(request.descriptor, principal, "receive_exactly")
        if request.nbytes > self.limits.max_bufsize:
            raise Fault(ErrorCode.PAYLOAD_TOO_LARGE, over_max_bufsize(request.nbytes, self.limits.max_bufsize))
        return await self._framed(entry, request, principal, gone)

    async def _framed(
        self,
        entry: Entry,
        request: m.ReadLineRequest | m.ReceiveExactlyRequest,
        principal: Principal,
        gone: Gone | None,
    ) -> m.ReceiveResponse:
        async with self._wait_slot(principal):
            return await framed_read(entry, request.framing(), request.wait, gone)

    async def bytes_available(self, request: m.DescriptorRequest, principal: Principal) -> m.AvailableResponse:
        entry = self.table.get(request.descriptor, principal.name)
        held = sum(len(given.data) for given in entry.held if isinstance(given, m.ReceiveResponse))
        return m.AvailableResponse(available=held + _readable_now(entry.sock), streamed=entry.streamed)

    async def set_option(self, request: m.SetOptionRequest, principal: Principal) -> m.OptionResponse:
        entry = self.table.get(request.descriptor, principal.name)
        value = options.set_option(entry.sock, request.name, request.value)
        return m.OptionResponse(name=request.name, value=value)

    async def get_option(self, request: m.OptionRequest, principal: Principal) -> m.OptionResponse:
        entry = self.table.get(request.descriptor, principal.name)
        return m.OptionResponse(name=request.name, value=options.get_option(entry.sock, request.name))

    async def shutdown(self, request: m.ShutdownRequest, principal: Principal) -> m.SocketInfo:
        entry = self.table.get(request.descriptor, principal.name)
        entry.sock.shutdown(getattr(socket, request.how))
        return entry.info()

    async def join_group(self, request: m.GroupRequest, principal: Principal) -> m.GroupResponse:
        return await self._membership(request, principal, join=True)

    async def leave_group(self, request: m.GroupRequest, principal: Principal) -> m.GroupResponse:
        return await self._membership(request, principal, join=False)

    async def _membership(self, request: m.GroupRequest, principal: Principal, join: bool) -> m.GroupResponse:
        """A group is a destination: joining one needs the policy's leave to reach it at the socket's port."""
        entry = self.table.get(request.descriptor, principal.name)
        port = entry.sock.getsockname()[1]
        refusal = join and await self._refusal("connect", request.group, port, principal)
        if refusal:
            raise Fault(ErrorCode.PERMISSION_DENIED, f"joining group {request.group}: {refusal}")
        options.membership(entry.sock, request.group, request.interface, join)
        return m.GroupResponse(group=request.group, interface=request.interface, joined=join)

    def _framed_entry(self, descriptor: int, principal: Principal, method: str) -> Entry:
        entry = self.table.get(descriptor, principal.name)
        _require_stream(entry, method)
        if entry.listening:
            raise OSError(errno.EINVAL, f"{method} reads a connection; this socket is listening: accept first")
        return entry

    async def receive(
        self, request: m.ReceiveRequest, principal: Principal, gone: Gone | None = None
    ) -> m.ReceiveResponse:
        entry = self.table.get(request.descriptor, principal.name)
        if request.bufsize > self.limits.max_bufsize:
            raise Fault(ErrorCode.PAYLOAD_TOO_LARGE, over_max_bufsize(request.bufsize, self.limits.max_bufsize))
        async with self._wait_slot(principal):
            result = await _attempt(
                entry, entry.reader, request.wait, False, partial(_take, entry, request.bufsize), gone
            )
        return m.ReceiveResponse(pending=True) if result is None else result

    def give_back(self, principal: Principal, request: m.Request, outcome: m.Response) -> None:
        """What a cancelled call took goes back to its socket, first in line for the next call of its kind:
        bytes or a datagram for the next receive (a line with its terminator), a connection for the next accept.
        First: it was taken before anything the socket holds now."""
        if isinstance(request, m.ReadLineRequest) and isinstance(outcome, m.ReceiveResponse) and not outcome.pending:
            outcome = m.ReceiveResponse(data=outcome.data + request.terminator.encode("latin-1"))
        kept = (isinstance(outcome, m.ReceiveResponse) and outcome.data) or (
            isinstance(outcome, m.AcceptResponse) and outcome.descriptor is not None
        )
        descriptor = getattr(request, "descriptor", None)
        if not kept or descriptor is None or not self.table.is_open(descriptor, principal.name):
            return
        self.table.get(descriptor, principal.name).held.appendleft(outcome)

    async def is_open(self, request: m.IsOpenRequest, principal: Principal) -> m.IsOpenResponse:
        return m.IsOpenResponse(open=self.table.is_open(request.descriptor, principal.name))

    async def close(self, request: m.DescriptorRequest, principal: Principal) -> m.CloseResponse:
        return m.CloseResponse(closed=self.table.close(request.descriptor, principal.name))

    async def sockets(self, request: m.ListRequest, principal: Principal) -> m.SocketList:
        if request.everyone and not principal.admin:
            raise Fault(
                ErrorCode.PERMISSION_DENIED, f"only an admin may list everyone's sockets; {principal.name} is not one"
            )
        entries = self.table.entries(None if request.everyone else principal.name)
        return m.SocketList(sockets=[entry.info() for entry in entries])

    def _check_room(self, principal: Principal) -> None:
        if len(self.table) >= self.limits.sockets_total:
            raise Fault(
                ErrorCode.LIMIT_EXCEEDED,
                f"the agent has {len(self.table)} sockets open, its limit sockets_total; close some first",
            )
        if len(self.table.entries(principal.name)) >= self.limits.sockets_per_principal:
            raise Fault(
                ErrorCode.LIMIT_EXCEEDED,
                f"{principal.name} has {self.limits.sockets_per_principal} sockets "
                "open, the limit sockets_per_principal; close some first",
            )

    @asynccontextmanager
    async def _wait_slot(self, principal: Principal) -> AsyncIterator[None]:
        own = self._waiting_by.get(principal.name, 0)
        if own >= self.limits.waits_per_principal:
            raise Fault(
                ErrorCode.LIMIT_EXCEEDED,
                f"{principal.name} has {own} blocking calls waiting already, the limit waits_per_principal; "
                "try again later",
            )
        if self._waiting >= self.limits.waits_total:
            raise Fault(
                ErrorCode.LIMIT_EXCEEDED,
                f"{self._waiting} blocking calls are waiting already, the limit waits_total; try again later",
            )
        self._waiting += 1
        self._waiting_by[principal.name] = own + 1
        try:
            yield
        finally:
            self._waiting -= 1
            self._waiting_by[principal.name] -= 1
            if not self._waiting_by[principal.name]:
                del self._waiting_by[principal.name]

    async def _refusal(self, action: str, ip: str, port: int, principal: Principal) -> str | None:
        """Why the agent's policy, or the principal's own rules on top of it, refuse `action` to `ip:port`."""
        refusal = await self.policy.refusal(action, ip, port, self._resolve_rule_name)
        if refusal is None and principal.policy is not None:
            refusal = await principal.policy.refusal(action, ip, port, self._resolve_rule_name)
            refusal = refusal and f"{refusal}, a rule for {principal.name}"
        return refusal

    async def _resolve(self, entry: Entry, action: str, host: str, port: int, principal: Principal) -> SocketAddress:
        """Resolve on the agent (the notebook's DNS is not the lab's), then apply the policy."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=entry.sock.family, type=entry.sock.type)
        except socket.gaierror as exc:  # sent with its EAI_* name; the client raises socket.gaierror
            raise socket.gaierror(exc.errno, f"cannot resolve {host!r} for {entry.family}: {exc.strerror}") from None
        address: SocketAddress = infos[0][4]
        refusal = await self._refusal(action, str(address[0]), int(address[1]), principal)
        if refusal:
            raise Fault(ErrorCode.PERMISSION_DENIED, refusal)
        return address

    async def _resolve_rule_name(self, name: str) -> set[IPAddress]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(name, None)
        except socket.gaierror:
            return set()
        return {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}


async def framed_read(entry: Entry, framing: Framing, wait: float, gone: Gone | None = None) -> m.ReceiveResponse:
    """One frame (a line, or exact bytes) of a stream socket, from what was held back first; pending when `wait`
    seconds pass first. Whatever it read and did not return stays first in line for the next read, so a read
    that times out, fails or is cancelled loses nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    if not await _acquire(entry.reader, wait):
        return m.ReceiveResponse(pending=True)
    try:
        while True:
            if entry.held:
                given = entry.held.popleft()
                assert isinstance(given, m.ReceiveResponse)  # a connection's socket holds only what receives gave back
                piece = given.data
            else:
                read = partial(entry.sock.recv, min(framing.wants(), 1 << 20))
                got = await entry.attempt(read, write=False, deadline=deadline, gone=gone)
                if got is None:
                    return m.ReceiveResponse(pending=True, buffered=framing.buffered)
                if not got:
                    raise Fault(ErrorCode.END_OF_STREAM, framing.incomplete())
                entry.bytes_in += len(got)
                piece = got
            if framing.feed(piece):
                assert framing.frame is not None
                return m.ReceiveResponse(data=framing.frame)
    finally:
        if leftover := framing.rest:
            entry.held.appendleft(m.ReceiveResponse(data=leftover))
        entry.reader.release()


def _readable_now(sock: socket.socket) -> int:
    """Bytes the OS holds for the socket now (on UDP: the next datagram's)."""
    if sys.platform != "win32":
        return int(struct.unpack("@i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])
    try:  # Windows has no FIONREAD here: what a peek sees
        return len(sock.recv(1 << 20, socket.MSG_PEEK))
    except OSError:
        return 0


def read_now(entry: Entry, size: int) -> m.ReceiveResponse:
    """What `read` gets, if it is there now; BlockingIOError if not."""
    if entry.stream:
        data = entry.sock.recv(size)
        entry.bytes_in += len(data)
        return m.ReceiveResponse(data=data, eof=not data)
    if _RECVMSG:
        data, _, flags, sender = entry.sock.recvmsg(size)
        truncated = bool(flags & socket.MSG_TRUNC)
    else:
        (data, sender), truncated = entry.sock.recvfrom(size), False
    entry.bytes_in += len(data)
    return m.ReceiveResponse(data=data, peer=m.Address(host=sender[0], port=sender[1]), truncated=truncated)


def _take(entry: Entry, size: int) -> m.ReceiveResponse:
    """What a receive gets now, under the socket's reader lock: what was given back first, else the OS's."""
    if entry.held:
        return _cut(entry, _held(entry, m.ReceiveResponse), size)
    return read_now(entry, size)


def _held(entry: Entry, kind: type[Given]) -> Given:
    """The oldest answer given back to this socket by a cancelled call."""
    given = entry.held.popleft()
    assert isinstance(given, kind)  # a listening socket only accepts, any other only receives
    return given


def _cut(entry: Entry, given: m.ReceiveResponse, bufsize: int) -> m.ReceiveResponse:
    """At most `bufsize` of what was given back: on TCP the rest stays first in line; a datagram is cut, as
    recvfrom cuts one, and says so."""
    if len(given.data) <= bufsize:
        return given
    if entry.stream:
        entry.held.appendleft(m.ReceiveResponse(data=given.data[bufsize:]))
        return m.ReceiveResponse(data=given.data[:bufsize])
    return m.ReceiveResponse(data=given.data[:bufsize], peer=given.peer, truncated=True)


async def _attempt(
    entry: Entry, lock: asyncio.Lock, wait: float | None, write: bool, call: Callable[[], T], gone: Gone | None = None
) -> T | None:
    """Run a non-blocking `call` under `lock` until it succeeds; None when `wait` seconds pass first."""
    deadline = None if wait is None else asyncio.get_running_loop().time() + wait
    if not await _acquire(lock, wait):
        return None
    try:
        return await entry.attempt(call, write=write, deadline=deadline, gone=gone)
    finally:
        lock.release()


async def _acquire(lock: asyncio.Lock, wait: float | None) -> bool:
    """Take `lock` within `wait` seconds; a free one at once, even with no time to wait."""
    if not lock.locked():
        await lock.acquire()
        return True
    await asyncio.sleep(0)  # a call run eagerly (agent/eager.py) goes on in a task from here: wait_for needs one
    if not lock.locked():
        await lock.acquire()
        return True
    try:
        await asyncio.wait_for(lock.acquire(), wait)
    except TimeoutError:
        return False
    return True


async def _send_datagram(entry: Entry, send: Callable[[], int]) -> m.SendResponse:
    """One datagram out, after the socket's sends before it: at once when none waits (the usual case, which
    costs no lock and no wait), else in turn once the socket can take it."""
    sent: int | None = None
    if not entry.sends_waiting:
        try:
            sent = send()
        except BlockingIOError:
            pass
    if sent is None:
        entry.sends_waiting += 1
        try:
            sent = await _attempt(entry, entry.writer, None, True, send)
        finally:
            entry.sends_waiting -= 1
        assert sent is not None  # it had no time limit
    entry.bytes_out += sent
    return m.SendResponse(sent=sent)


async def _send_all(entry: Entry, data: bytes) -> int:
    """Send all of `data` on a stream socket, in order with its other sends."""
    view, sent = memoryview(data), 0
    async with entry.writer:
        while sent < len(view):
            sent += await entry.attempt(partial(entry.sock.send, view[sent:]), write=True) or 0
    entry.bytes_out += sent
    return sent


async def _connect_stream(entry: Entry, target: SocketAddress) -> None:
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
