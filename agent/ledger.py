"""At-most-once calls: each call id runs once; a retry joins it or gets the same answer again.

A client names each call `<session>.<seq>` and tells, with every call, up to which seq it has all
its answers; those are forgotten. The rest are kept, within a memory bound, so an answer lost on
the way (a cut connection, a proxy timeout) is never lost for good: the retry gets it.
"""

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from protocol import ErrorDetail
from protocol.models import Response

log = logging.getLogger("engee.agent")


Outcome = Response | ErrorDetail
"""What a call ends with, whatever carried it: its response, or its error."""


Key = tuple[str, str, int]
"""(principal, session, seq)."""


class Ledger:
    def __init__(self, max_answers: int = 10_000, max_bytes: int = 64 << 20) -> None:
        self.max_answers = max_answers
        self.max_bytes = max_bytes
        self._calls: OrderedDict[Key, asyncio.Future[Outcome]] = OrderedDict()
        self._sessions: dict[tuple[str, str], set[int]] = {}
        self._bytes = 0

    async def run(self, key: Key, compute: Callable[[], Awaitable[Outcome | None]]) -> Outcome | None:
        """The call's answer, computed once: a retry of a running call waits for the same answer."""
        known = self._calls.get(key)
        if known is not None:
            return await asyncio.shield(known)
        answer = asyncio.get_running_loop().create_future()
        self._calls[key] = answer
        self._sessions.setdefault(key[:2], set()).add(key[2])
        try:
            result = await compute()
        except BaseException:
            self._forget(key)  # nothing to give again: a retry runs it anew
            answer.cancel()
            raise
        if result is None:  # the caller left before anything was done: nothing to give again
            self._forget(key)
            answer.cancel()
            return None
        answer.set_result(result)
        self._bytes += _weight(result)
        self._evict()
        return result

    def acknowledge(self, principal: str, session: str, done: int) -> None:
        """Forget the finished answers of `session` up to seq `done`: the client has them."""
        seqs = self._sessions.get((principal, session), ())
        for seq in [seq for seq in seqs if seq <= done and self._calls[(principal, session, seq)].done()]:
            self._forget((principal, session, seq))

    def __len__(self) -> int:
        return len(self._calls)

    def _forget(self, key: Key) -> None:
        answer = self._calls.pop(key)
        seqs = self._sessions[key[:2]]
        seqs.discard(key[2])
        if not seqs:
            del self._sessions[key[:2]]
        if answer.done() and not answer.cancelled():
            self._bytes -= _weight(answer.result())

    def _evict(self) -> None:
        """Over the bound, drop the oldest finished answers; their clients never acknowledged them."""
        while len(self._calls) > self.max_answers or self._bytes > self.max_bytes:
            oldest = next((key for key, answer in self._calls.items() if answer.done()), None)
            if oldest is None:
                return
            log.warning(
                "forgetting the unacknowledged answer to call %s.%d of %s (ledger full)",
                oldest[1],
                oldest[2],
                oldest[0],
            )
            self._forget(oldest)


def _weight(outcome: Outcome) -> int:
    """Bytes an outcome holds, near enough for a memory bound: its payload and a little more."""
    return len(getattr(outcome, "data", b"")) + 256
