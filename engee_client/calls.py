"""Call ids for one client session: what makes a retried call safe, and what the agent may forget.

A call stays open until its answer arrives. A blocking call cut by an interrupt (KeyboardInterrupt,
or a cancelled task) is *abandoned*: it stays open, so the agent keeps what it may have taken, and
the next call carries its cancel; once that call is answered, the agent has stopped it and given
what it took back to its socket, and the call ends.
"""

from __future__ import annotations

import secrets
import threading

from protocol import CallId
from protocol.calls import MAX_CANCEL


class CallLog:
    """Numbers the calls of one session and knows up to which number every answer has arrived."""

    def __init__(self) -> None:
        self.session = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._last = 0
        self._open: set[int] = set()
        self._abandoned: list[int] = []

    def begin(self, seq: int | None = None) -> CallId:
        """The id of a new call, or of call `seq` again; it carries the acknowledgement and pending cancels."""
        with self._lock:
            if seq is None:
                self._last += 1
                seq = self._last
            self._open.add(seq)
            done = min(self._open) - 1
            return CallId(self.session, seq, done, tuple(self._abandoned[:MAX_CANCEL]))

    def end(self, call: CallId, answered: bool = True) -> None:
        """Call `call` is over; `answered`, the agent also has its cancels, and those calls are over too."""
        with self._lock:
            self._open.discard(call.seq)
            if answered and call.cancel:
                self._abandoned = [seq for seq in self._abandoned if seq not in call.cancel]
                self._open.difference_update(call.cancel)

    def abandon(self, call: CallId) -> None:
        """An interrupt cut call `call`: it stays open until a later call's cancel reaches the agent."""
        with self._lock:
            self._abandoned.append(call.seq)

    def done_mark(self) -> int:
        """Every call up to this number has its answer: the agent may forget those."""
        with self._lock:
            return min(self._open) - 1 if self._open else self._last
