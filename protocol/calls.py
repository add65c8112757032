"""Call ids: `<session>.<seq>[ done=<seq>][ cancel=<seq>,...]`; the client names each call so it runs at most once.

A session is one client's run; seq numbers its calls. A call id names one call, its method and
request included: the agent refuses the same id for a different call. `done` says up to which seq
the client has every answer, so the agent may forget those. `cancel` lists calls the client gave
up on (an interrupt, a cancelled task): the agent stops their waits, and whatever they took from a
socket goes back to that socket for the next call. Both sides parse and write ids here, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SESSION = 64
MAX_CANCEL = 64
"""Most calls one id may cancel."""
_MAX_DIGITS = 18


@dataclass(frozen=True, slots=True)
class CallId:
    session: str
    seq: int
    done: int | None = None
    cancel: tuple[int, ...] = ()

    def __str__(self) -> str:
        text = f"{self.session}.{self.seq}"
        if self.done is not None:
            text += f" done={self.done}"
        if self.cancel:
            text += f" cancel={','.join(map(str, self.cancel))}"
        return text

    @classmethod
    def parse(cls, value: str) -> CallId:
        """The id as written by `str`; ValueError naming what is wrong for anything else."""
        call, *parts = value.split(" ")
        session, dot, seq = call.rpartition(".")
        fields: dict[str, str] = {}
        for part in parts:
            key, equals, text = part.partition("=")
            if not equals or key not in ("done", "cancel") or key in fields:
                raise ValueError(_bad(value))
            fields[key] = text
        done = fields.get("done")
        cancel = fields["cancel"].split(",") if "cancel" in fields else []
        numbers = [seq, *cancel] + ([] if done is None else [done])
        if not dot or not valid_session(session) or not all(map(_number, numbers)) or len(cancel) > MAX_CANCEL:
            raise ValueError(_bad(value))
        return cls(session, int(seq), None if done is None else int(done), tuple(map(int, cancel)))


def valid_session(session: str) -> bool:
    """Whether `session` may name a client's session: 1 to MAX_SESSION printable ASCII characters, no space."""
    return 1 <= len(session) <= MAX_SESSION and session.isascii() and session.isprintable() and " " not in session


def _bad(value: str) -> str:
    return (
        f"the call id {value[:80]!r} is not <session>.<seq>, optionally followed by ' done=<seq>' "
        f"and ' cancel=<seq>,...' (at most {MAX_CANCEL})"
    )


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS
