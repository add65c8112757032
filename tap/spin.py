"""Polling the connections for what comes next for a moment before the event loop sleeps.

A process asleep in epoll costs tens of microseconds to wake, far more on a virtual machine, whose
idle CPU halts; a client in a tight loop of calls sends its next frame sooner than that. So once an
endpoint has written, at the end of that turn of the event loop, it may spin: poll without sleeping
for up to `limit` seconds, and go back to the loop as soon as any connection of the process that
spins has something (the one written to, or any other: no connection waits on another's spin).

It adapts, so a peer that does not answer that fast costs next to nothing: a spin that saw nothing
doubles the number of writes that go without one (up to `MAX_SKIP`); one that saw something spins
again after the next write. Never on one CPU, where spinning would only keep the peer, or the
process that answers it, from running; only where there is epoll (Linux), which polls every
connection at once at no cost per connection.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time

MAX_SPIN = 0.01
"""The longest a spin may be set to hold an event loop, in seconds."""
MAX_SKIP = 63
"""The most writes in a row that go without a spin after spins that saw nothing."""

_epoll: select.epoll | None = None
"""Every connection that may spin, of this process."""


def _watching(sock: socket.socket | None) -> select.epoll | None:
    """The process's epoll set, with `sock` in it; None where this machine does not spin."""
    global _epoll
    if sock is None or not hasattr(select, "epoll") or (os.cpu_count() or 1) < 2:
        return None
    if _epoll is None:
        _epoll = select.epoll()
    try:
        _epoll.register(sock.fileno(), select.EPOLLIN)
    except FileExistsError:  # already watched; a closed socket leaves the set by itself
        pass
    except OSError:  # closed already
        return None
    return _epoll


class Spin:
    """The spin of one connection: `soon(limit)` after it was written to."""

    def __init__(self, sock: socket.socket | None) -> None:
        self._epoll = _watching(sock)
        self._due = False
        self._skip = 0
        self._misses = 0

    def soon(self, limit: float) -> None:
        """Spin for up to `limit` seconds once this turn of the event loop is done."""
        if self._epoll is None or limit <= 0 or self._due:
            return
        if self._skip:
            self._skip -= 1
            return
        self._due = True
        asyncio.get_running_loop().call_soon(self._spin, self._epoll, limit)

    def _spin(self, epoll: select.epoll, limit: float) -> None:
        self._due = False
        poll, now = epoll.poll, time.perf_counter
        until = now() + limit
        while now() < until:
            if poll(0):
                self._misses = 0
                return
        self._misses += 1
        self._skip = min((1 << self._misses) - 1, MAX_SKIP)
