"""Call ids for one client session: what makes a retried call safe, and what the agent may forget."""

import secrets
import threading


class CallLog:
    """Numbers the calls of one session and knows up to which number every answer has arrived."""

    def __init__(self) -> None:
        self.session = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._last = 0
        self._open: set[int] = set()

    def begin(self) -> int:
        with self._lock:
            self._last += 1
            self._open.add(self._last)
            return self._last

    def reopen(self, seq: int) -> int:
        """Call `seq` again (it was interrupted): the agent answers it from its ledger."""
        with self._lock:
            self._open.add(seq)
            return seq

    def end(self, seq: int) -> None:
        """The answer to `seq` has arrived (or will never be asked for again)."""
        with self._lock:
            self._open.discard(seq)

    def done_mark(self) -> int:
        """Every call up to this number has its answer: the agent may forget those."""
        with self._lock:
            return min(self._open) - 1 if self._open else self._last

    def number(self, seq: int | None) -> "Numbered":
        """Number one call, as `with calls.number(seq) as seq:` around sending it.

        `seq` is the caller's number for a call it may repeat (from `begin`), or None for a new one.
        The call ends when its answer arrives or it fails. Interrupted (KeyboardInterrupt, or
        cancelled in asyncio), a call numbered by its caller stays open for the caller to repeat or
        end; one numbered here ends, since nobody can ask for it again.
        """
        if seq is None:
            return Numbered(self, self.begin(), False)
        return Numbered(self, self.reopen(seq), True)


class Numbered:
    """The context `CallLog.number` returns."""

    __slots__ = ("_log", "_repeatable", "_seq")

    def __init__(self, log: CallLog, seq: int, repeatable: bool) -> None:
        self._log, self._seq, self._repeatable = log, seq, repeatable

    def __enter__(self) -> int:
        return self._seq

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None or not self._repeatable or issubclass(kind, Exception):
            self._log.end(self._seq)
