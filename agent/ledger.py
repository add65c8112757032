"""At-most-once calls: each call id runs once; a retry joins it or gets the same outcome again.

A client names each call `<session>.<seq>` and tells, with every call, up to which seq it has all
its answers; those are forgotten. The rest are kept, within memory bounds, so an answer lost on the
way (a cut connection, a proxy timeout) is never lost for good: the retry gets it. A call id names
one call: the same id with another method or request is refused, never answered with another
call's outcome. The bounds are per principal, with a global ceiling above them: when the ceiling is
reached, the principal holding the most gives way first, so no principal can cost another its answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from protocol import ErrorDetail
from protocol.models import Request, Response

from .eager import eager

log = logging.getLogger("engee.agent")

Outcome = Response | ErrorDetail
"""What a call ends with, whatever carried it: its response, or its error."""

Key = tuple[str, int]
"""(session, seq), within one principal."""

ANSWERS_PER_PRINCIPAL = 10_000
BYTES_PER_PRINCIPAL = 64 << 20
ANSWERS_TOTAL = 100_000
BYTES_TOTAL = 512 << 20


class CallIdReused(ValueError):
    """A call id came again with another method or request."""


@dataclass
class _Call:
    name: str
    request: Request
    task: asyncio.Future[Outcome | None]
    weight: int = 0


@dataclass
class _Book:
    """One principal's calls, oldest first, and what they hold."""

    calls: OrderedDict[Key, _Call] = field(default_factory=OrderedDict)
    bytes: int = 0
    sessions: dict[str, OrderedDict[int, None]] = field(default_factory=dict)
    """Each session's seqs that have a call here, in the order they came: an acknowledgement walks only its own
    session's, and a session goes with its last call, however that one goes."""


class Ledger:
    def __init__(
        self,
        answers_per_principal: int = ANSWERS_PER_PRINCIPAL,
        bytes_per_principal: int = BYTES_PER_PRINCIPAL,
        answers_total: int = ANSWERS_TOTAL,
        bytes_total: int = BYTES_TOTAL,
    ) -> None:
        self.answers_per_principal, self.bytes_per_principal = answers_per_principal, bytes_per_principal
        self.answers_total, self.bytes_total = answers_total, bytes_total
        self._books: dict[str, _Book] = {}
        self._answers = 0
        self._bytes = 0

    async def run(
        self,
        principal: str,
        key: Key,
        name: str,
        request: Request,
        compute: Callable[[], Coroutine[Any, Any, Outcome | None]],
    ) -> Outcome | None:
        """The call's outcome, computed once: a retry of a running call waits for the same outcome.

        CallIdReused when `key` already names a call with another method or request.
        """
        book = self._books.get(principal) or self._books.setdefault(principal, _Book())  # kept while it is empty
        call = book.calls.get(key)
        if call is None:
            call = _Call(name, request, eager(compute()))
            book.calls[key] = call
            seqs = book.sessions.get(key[0])
            if seqs is None:
                seqs = book.sessions[key[0]] = OrderedDict()
            seqs[key[1]] = None
            self._answers += 1
            if call.task.done():  # ran at once: counted now, not in a later turn of the loop
                self._finished(principal, key, call)
            else:
                call.task.add_done_callback(lambda _: self._finished(principal, key, call))
        elif (call.name, call.request) != (name, request):
            raise CallIdReused(
                f"call id {key[0]}.{key[1]} names an earlier {call.name} call with other arguments; "
                "a call id names one call"
            )
        if call.task.done() and not call.task.cancelled():
            return call.task.result()  # ran at once (or a retry of a finished call): no wait to shield
        try:
            return await asyncio.shield(call.task)
        except asyncio.CancelledError:
            if call.task.cancelled():  # cancelled by the client's `cancel`, not this caller's own cancellation
                return None
            raise

    def cancel(self, principal: str, key: Key) -> tuple[Request, Outcome] | None:
        """The client gave up on call `key`: stop it if it still runs, forget it, and return its request and
        finished outcome (for what it took to go back to the socket), or None."""
        book = self._books.get(principal)
        call = book.calls.get(key) if book else None
        if call is None:
            return None
        self._forget(principal, key)
        if not call.task.done():
            call.task.cancel()
            return None
        outcome = None if call.task.cancelled() or call.task.exception() else call.task.result()
        return None if outcome is None else (call.request, outcome)

    def acknowledge(self, principal: str, session: str, done: int) -> None:
        """Forget the finished answers of `session` up to seq `done`: the client has them."""
        book = self._books.get(principal)
        seqs = book.sessions.get(session) if book else None
        while book and seqs:
            key = (session, next(iter(seqs)))
            if key[1] > done or not book.calls[key].task.done():
                break  # not answered yet, or still running: forgotten with a later acknowledgement
            self._forget(principal, key)

    def __len__(self) -> int:
        return self._answers

    def _finished(self, principal: str, key: Key, call: _Call) -> None:
        book = self._books.get(principal)
        if book is None or book.calls.get(key) is not call:
            return  # forgotten already
        outcome = None if call.task.cancelled() or call.task.exception() is not None else call.task.result()
        if outcome is None:
            self._forget(principal, key)  # nothing to give again: a retry runs it anew
            return
        call.weight = _weight(outcome) + len(call.request.__dict__.get("data", b""))
        book.bytes += call.weight
        self._bytes += call.weight
        self._evict(principal)

    def _forget(self, principal: str, key: Key) -> None:
        book = self._books[principal]
        call = book.calls.pop(key)
        book.bytes -= call.weight
        self._bytes -= call.weight
        self._answers -= 1
        seqs = book.sessions[key[0]]
        del seqs[key[1]]
        if not seqs:
            del book.sessions[key[0]]

    def _evict(self, principal: str) -> None:
        """Over a principal's bound, drop its oldest finished answers; over the ceiling, the biggest holder's."""
        book = self._books[principal]
        while len(book.calls) > self.answers_per_principal or book.bytes > self.bytes_per_principal:
            if not self._drop_oldest(principal):
                break
        while self._answers > self.answers_total or self._bytes > self.bytes_total:
            biggest = max(self._books, key=lambda who: (self._books[who].bytes, len(self._books[who].calls)))
            if not self._drop_oldest(biggest):
                break

    def _drop_oldest(self, principal: str) -> bool:
        book = self._books.get(principal)
        oldest = next((key for key, call in book.calls.items() if call.task.done()), None) if book else None
        if oldest is None:
            return False
        log.warning(
            "forgetting the unacknowledged answer to call %s.%d of %s (its ledger is full)",
            oldest[0],
            oldest[1],
            principal,
        )
        self._forget(principal, oldest)
        return True


def _weight(outcome: Outcome) -> int:
    """Bytes an outcome holds, near enough for a memory bound: its payload and a little more."""
    return len(outcome.__dict__.get("data", b"")) + 256  # not getattr: a model without it raises, which costs
