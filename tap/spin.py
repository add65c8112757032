"""Spinning: keeping an event loop awake for a moment after a write, for what comes next.

A process asleep in epoll costs tens of microseconds to wake, far more on a virtual machine, whose
idle CPU halts; in a tight loop of calls the peer's next frame comes sooner than that. So once an
endpoint has written, it may keep its event loop from sleeping for up to `limit` seconds: a chain of
callbacks, one per turn of the loop, keeps the loop polling its sockets without a timeout. Nothing
waits on a spin: between two links of the chain the loop reads every socket, runs every callback and
timer as it would, so a device's data or another connection's frame is handled at once. The spin
ends as soon as something comes on a connection of the process (`arrived`), or its time is up; a
loop has one spin at a time (a write during a spin extends it).

It adapts, so a peer that does not answer that fast costs next to nothing: a spin that saw nothing
doubles the number of writes that go without one (up to `MAX_SKIP`); one that saw something spins
again after the next write. Never where the process may run on one CPU only: there spinning would
only keep the peer, or the process that answers it, from running.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref

MAX_SPIN = 0.01
"""The longest a spin may be set to last, in seconds."""
MAX_SKIP = 63
"""The most writes in a row that go without a spin after spins that saw nothing."""

CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
"""The CPUs this process may run on."""

_arrivals = 0
"""How many times something came on a connection of this process."""


def arrived() -> None:
    """Something came on a connection: the spin going on, if any, has done its work."""
    global _arrivals
    _arrivals += 1


class Spin:
    """The spins of one connection: `soon(limit)` after each write to it."""

    def __init__(self) -> None:
        self._skip = 0
        self._misses = 0

    def soon(self, limit: float) -> None:
        """Keep the loop awake for up to `limit` seconds from now, unless spins after this connection's writes
        saw nothing lately."""
        if not limit > 0 or CPUS < 2:
            return
        if self._skip:
            self._skip -= 1
            return
        loop = asyncio.get_running_loop()
        awake = _awake.get(loop)
        if awake is None:
            awake = _awake[loop] = _Awake(loop)
        awake.keep(self, limit)

    def saw(self, hit: bool) -> None:
        """What the spin after a write found: something (spin again next time), or nothing (skip more writes)."""
        if hit:
            self._misses = 0
        else:
            self._misses = min(self._misses + 1, 6)
            self._skip = min((1 << self._misses) - 1, MAX_SKIP)


class _Awake:
    """The spin of one event loop: the connection whose write started it, until when it lasts, and what had come
    then. Each loop has its own, gone with the loop: a loop stopped in the middle of a spin leaves no other
    loop without one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._owner: Spin | None = None
        self._until = 0.0
        self._seen = 0

    def keep(self, owner: Spin, limit: float) -> None:
        until = time.perf_counter() + limit
        if self._owner is not None:
            self._until = max(self._until, until)
            return
        self._owner, self._until, self._seen = owner, until, _arrivals
        self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        hit = _arrivals != self._seen
        if not hit and time.perf_counter() < self._until:
            self._loop.call_soon(self._turn)  # a ready callback: the loop polls without sleeping
            return
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.saw(hit)


_awake: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Awake] = weakref.WeakKeyDictionary()
"""Each running loop's spin."""
