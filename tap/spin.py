"""Spinning: keeping an event loop awake for a moment after a write, for what comes next.

Once an endpoint has written, it may keep its event loop from sleeping for up to `limit` seconds,
as protocol/spin.py rules: a chain of callbacks, one per turn of the loop, keeps the loop polling its
sockets without a timeout. Nothing waits on a spin: between two links of the chain the loop reads
every socket, runs every callback and timer as it would, so a device's data or another connection's
frame is handled at once. The spin ends as soon as something comes on a connection of the process
(`arrived`), or its time is up; a loop has one spin at a time (a write during a spin extends it).
"""

from __future__ import annotations

import asyncio
import time
import weakref

from protocol.spin import MAX_SPIN, SpinRule

__all__ = ["MAX_SPIN", "Spin", "arrived"]

_arrivals = 0
"""How many times something came on a connection of this process."""


def arrived() -> None:
    """Something came on a connection: the spin going on, if any, has done its work."""
    global _arrivals
    _arrivals += 1


class Spin(SpinRule):
    """The spins after the writes to one connection: `soon(limit)` after each."""

    def soon(self, limit: float) -> None:
        """Keep the loop awake for up to `limit` seconds from now, unless the rule says this write goes without."""
        if not limit > 0 or not self.due():
            return
        loop = asyncio.get_running_loop()
        awake = _awake.get(loop)
        if awake is None:
            awake = _awake[loop] = _Awake(loop)
        awake.keep(self, limit)


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
