"""What the client's core asks of a transport: carry one call to the agent and bring back its outcome.

A transport is passed in, the way httpx takes one: HTTP by default, an in-process one in tests,
a channel next. It moves calls and nothing else: call ids, what an answer means and every check
live in the core, so every transport behaves alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol import AnyMethod, CallId, ErrorDetail
from protocol.models import AgentInfo, Request, Response


@dataclass(frozen=True, slots=True)
class Call:
    """One call to send: a method of the table, its request, its id, and the boot id of its descriptor."""

    method: AnyMethod
    request: Request
    call_id: CallId
    boot: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back: the response or the error body, and the agent's boot id."""

    outcome: Response | ErrorDetail
    boot: str | None = None


class Transport(Protocol):
    """A blocking transport. Failures of the link itself raise `AgentUnreachableError`."""

    url: str

    def call(self, call: Call) -> Reply: ...

    def identity(self) -> AgentInfo: ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    """An awaited transport: `Transport`'s methods as coroutines."""

    url: str

    async def call(self, call: Call) -> Reply: ...

    async def identity(self) -> AgentInfo: ...

    async def aclose(self) -> None: ...
