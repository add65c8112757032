"""Call ids: `<session>.<seq>`, optionally ` done=<seq>`; the client names each call so it runs at most once.

A session is one client's run; seq numbers its calls. `done` says up to which seq the client has
every answer, so the agent may forget those. Both sides parse and write ids here, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SESSION = 64
_MAX_DIGITS = 18


@dataclass(frozen=True, slots=True)
class CallId:
    session: str
    seq: int
    done: int | None = None

    def __str__(self) -> str:
        return f"{self.session}.{self.seq}" + ("" if self.done is None else f" done={self.done}")

    @classmethod
    def parse(cls, value: str) -> CallId:
        """The id written as `<session>.<seq>[ done=<seq>]`; ValueError for anything else."""
        call, has_done, done = value.partition(" done=")
        session, dot, seq = call.rpartition(".")
        if (
            not dot
            or not 1 <= len(session) <= MAX_SESSION
            or not session.isascii()
            or not session.isprintable()
            or " " in session
            or not _number(seq)
            or (has_done and not _number(done))
        ):
            raise ValueError(f"the call id {value[:80]!r} is not <session>.<seq> or <session>.<seq> done=<seq>")
        return cls(session, int(seq), int(done) if has_done else None)


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS
