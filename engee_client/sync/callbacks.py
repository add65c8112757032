"""Pushed data for the blocking client: `on_data` callbacks, run on one client thread, in order.

A reader thread per watched socket takes each piece as it arrives (on the channel, from the socket's
read-ahead stream, so no call waits on the agent) and queues it; one callback thread per agent runs
the callbacks in the order the pieces came. The queue is bounded: a callback slower than the data
stops the readers, the socket's window fills, and TCP's flow control slows the peer, so nothing is
dropped on TCP (on UDP, the agent counts what a full window drops: `Socket.dropped`). An exception
in a callback is reported on stderr with its traceback, and the next piece is delivered as usual.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol import AgentError

from ..core import Piece, report

if TYPE_CHECKING:
    from .socket import Socket

Callback = Callable[["Socket", Any], object]
QUEUE = 256
"""Pieces read and not yet handed to their callbacks, for all sockets of an agent."""
POLL = 0.5
"""Seconds a reader waits for data before it looks whether it should stop."""


class _Reader:
    """The thread that reads one socket for its callback."""

    def __init__(self, callbacks: Callbacks, sock: Socket, callback: Callback, options: dict[str, Any]) -> None:
        self.callbacks, self.sock, self.callback, self.options = callbacks, sock, callback, options
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"engee on_data {sock.descriptor}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                piece = self.sock._piece(POLL, **self.options)
            except EOFError:
                return  # the peer closed: nothing more will come
            except (OSError, AgentError) as exc:
                if not self.sock.closed and not self.stopped.is_set():
                    report(f"on_data of {self.sock!r} stopped: {exc}")
                return
            if piece is not None:
                self.callbacks.deliver(self.callback, self.sock, piece)  # even once stopped: it was taken


class Callbacks:
    """The on_data callbacks of one agent's sockets."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callback, Socket, Piece]] = queue.Queue(QUEUE)
        self._readers: dict[int, _Reader] = {}
        self._lock = threading.Lock()
        self._runner: threading.Thread | None = None

    def watch(self, sock: Socket, callback: Callback | None, options: dict[str, Any]) -> None:
        """Run `callback(sock, piece)` for every piece that arrives on `sock` from now on; None stops it. A reader
        already running for the socket is stopped first, once it has handed over what it took (unless the
        socket is `closing`, or this is the callback thread, which must not wait for it)."""
        closing = options.pop("closing", False)
        with self._lock:
            old = self._readers.pop(sock.descriptor, None)
        if old is not None:
            old.stopped.set()
            if not closing and threading.current_thread() is not self._runner:
                old.thread.join()
        if callback is None:
            return
        with self._lock:
            if self._runner is None:
                self._runner = threading.Thread(target=self._run, name="engee callbacks", daemon=True)
                self._runner.start()
            self._readers[sock.descriptor] = _Reader(self, sock, callback, options)

    def deliver(self, callback: Callback, sock: Socket, piece: Piece) -> None:
        self._queue.put((callback, sock, piece))

    def _run(self) -> None:
        while True:
            callback, sock, piece = self._queue.get()
            try:
                callback(sock, piece)
            except Exception:  # noqa: BLE001 - reported, and the next piece still comes
                report(f"the on_data callback of {sock!r} raised:", traceback_too=True)
