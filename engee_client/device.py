"""A socket on the agent, as the notebook sees it: the seed's device with its methods."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from protocol import AgentRestartedError, to_bytes
from protocol.errors import where
from protocol.models import LONG_POLL, Address, SocketInfo

from .result import ResultUIntList

if TYPE_CHECKING:
    from .agent import Agent

CHUNK = 4 * 1024 * 1024
"""A TCP send larger than this goes out in several calls; a stream keeps them in order."""


class Socket:
    """A socket that lives on an agent; every method is a call to that agent."""

    def __init__(self, agent: Agent, info: SocketInfo, boot: str | None) -> None:
        self.agent = agent
        self.descriptor = info.descriptor
        self.family = info.family
        self.socket_type = info.socket_type
        self._boot = boot
        self._closed = False
        self._interrupted: dict[str, int] = {}
        """Blocking calls cut by KeyboardInterrupt: the next call of that method collects their answer."""
        self._update(info.local, info.peer)

    def bind(self, host: str, port: int) -> None:
        """Bind to a local address on the agent's machine; port 0 picks a free port."""
        info = self._call("bind", host=host, port=port)
        self._update(info.local, info.peer)

    def listen(self, backlog: int = 128) -> None:
        """Accept incoming TCP connections from now on (an unbound socket gets a free port)."""
        info = self._call("listen", backlog=backlog)
        self._update(info.local, info.peer)

    def accept(self, timeout: float | None = None) -> int:
        """Wait for a client and return the new connection's descriptor; TimeoutError after `timeout`."""
        result = self._wait("accept", timeout)
        return result.descriptor

    def connect(self, host: str, port: int, timeout: float | None = None) -> int:
        """Connect to a peer (TCP) or fix the peer (UDP); returns 0, as the seed does."""
        result = self._wait("connect", timeout, host=host, port=port)
        self._update(result.local, result.peer)
        return 0

    def send(self, message: bytes | bytearray | memoryview | list[int]) -> int:
        """Send bytes and return how many were sent: all of them on TCP, one datagram on UDP."""
        data = to_bytes(message)
        if self.socket_type == "SOCK_DGRAM" or len(data) <= CHUNK:
            return self._call("send", data=data).sent
        return sum(self._call("send", data=data[start:start + CHUNK]).sent for start in range(0, len(data), CHUNK))

    def receive(self, bufsize: int, timeout: float | None = None) -> ResultUIntList | None:
        """Up to `bufsize` bytes (TCP) or one datagram (UDP); None at end of stream or after `timeout`."""
        try:
            result = self._wait("receive", timeout, bufsize=bufsize)
        except _WaitExpired:
            return None
        if result.eof:
            return None
        return ResultUIntList(result.data, result.peer.as_tuple() if result.peer else None)

    def is_open(self, socket_descriptor: int | None = None) -> bool:
        """Whether a descriptor (this socket's by default) is open on the agent."""
        if socket_descriptor is None:
            if self._closed:
                return False
            socket_descriptor = self.descriptor
        try:
            return self._call("is_open", descriptor=socket_descriptor).open
        except AgentRestartedError:
            return False  # the restart closed every socket of before

    def close(self) -> None:
        """Close the socket on the agent; closing again does nothing."""
        if self._closed:
            return
        for seq in self._interrupted.values():
            self.agent.forget_call(seq)
        self._interrupted.clear()
        try:
            self._call("close")
        except AgentRestartedError:
            pass  # the restart already closed it
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"local={self.local_address} peer={self.peer_address}"
        return f"<Socket {self.descriptor} {self.family}/{self.socket_type} {state} at {self.agent.url}>"

    def _update(self, local: Address | None, peer: Address | None) -> None:
        self.local_address = local.as_tuple() if local else None
        self.peer_address = peer.as_tuple() if peer else None

    def _call(self, method: str, seq: int | None = None, **fields: object):
        fields.setdefault("descriptor", self.descriptor)
        return self.agent.call(method, boot=self._boot, seq=seq, **fields)

    def _wait(self, method: str, timeout: float | None, **fields: object):
        """A blocking call as a series of bounded waits, so no HTTP timeout ever cuts it."""
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"{self._where(method)}: timeout must be None or a number of seconds, "
                                f"not {type(timeout).__name__}")
            if not 0 <= timeout < math.inf:
                raise ValueError(f"{self._where(method)}: timeout must be a finite number of seconds >= 0, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = LONG_POLL if deadline is None else min(LONG_POLL, max(0.0, deadline - time.monotonic()))
            seq = self._interrupted.pop(method, None) or self.agent.new_call()
            try:
                result = self._call(method, seq=seq, wait=wait, **fields)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # KeyboardInterrupt: what the agent took waits for the next call
                    self._interrupted[method] = seq
                raise
            if not result.pending:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise _WaitExpired(f"{self._where(method)}: timed out after {timeout} s")

    def _where(self, method: str) -> str:
        return where(method, self.descriptor, self.agent.url)


class _WaitExpired(TimeoutError):
    """The caller's own timeout passed; unlike an OS ETIMEDOUT from the agent, receive answers None."""
