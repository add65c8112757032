"""The client sessions that called lately, by their call ids: who is connected, for the status page."""

import time

from pydantic import BaseModel

from .settings import Principal

CLIENT_WINDOW = 60.0
"""Seconds after its last call that a client still counts as connected."""


class ClientRow(BaseModel):
    principal: str
    session: str
    calls: int
    idle: float


class Clients:
    """The client sessions that called lately, by their call ids."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], list[float]] = {}

    def seen(self, principal: str, session: str) -> None:
        entry = self._seen.setdefault((principal, session), [0, 0.0])
        entry[0] += 1
        entry[1] = time.monotonic()
        if len(self._seen) > 10_000:
            self._forget_old()

    def rows(self, principal: Principal) -> list[ClientRow]:
        self._forget_old()
        now = time.monotonic()
        return [
            ClientRow(principal=who, session=session, calls=calls, idle=round(now - last, 1))
            for (who, session), (calls, last) in self._seen.items()
            if principal.admin or who == principal.name
        ]

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key in [key for key, (_, last) in self._seen.items() if now - last > CLIENT_WINDOW]:
            del self._seen[key]
