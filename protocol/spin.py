"""When to spin: poll for what comes next, without sleeping, for a moment before sleeping. Rules only, no I/O.

A process asleep costs tens of microseconds to wake, far more on a virtual machine, whose idle CPU
halts; in a tight loop of calls the next message often comes sooner than that. So a wait may first
spin for up to a limit. A spin that sees nothing has only burnt a CPU, so the rule adapts: each spin
that saw nothing doubles the number of waits that go without one (up to `MAX_SKIP`); one that saw
something spins again next time. A peer that answers within the limit keeps its waits spinning; one
that does not (a long link, a slow device) costs one spin in up to 64 waits. The blocking client
(engee_client/sync/link.py) and both servers (tap/spin.py) follow it.
"""

from __future__ import annotations

import os

MAX_SPIN = 0.01
"""The longest a spin may be set to last, in seconds."""
MAX_SKIP = 63
"""The most waits in a row that go without a spin after spins that saw nothing."""
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
"""The CPUs this process may run on: on one, nothing spins, as it would only keep the sender from running."""


class SpinRule:
    """The spins of one connection: `due()` before each wait, `saw(hit)` after each spin it allowed."""

    def __init__(self) -> None:
        self._skip = 0
        self._misses = 0

    def due(self) -> bool:
        """Whether this wait spins first."""
        if CPUS < 2:
            return False
        if self._skip:
            self._skip -= 1
            return False
        return True

    def saw(self, hit: bool) -> None:
        """What the spin found: something (spin again next time), or nothing (skip more waits)."""
        if hit:
            self._misses = 0
        else:
            self._misses = min(self._misses + 1, 6)
            self._skip = min((1 << self._misses) - 1, MAX_SKIP)
