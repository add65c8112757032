"""What the client's core asks of a transport: carry one call to the agent and bring back its outcome.

A transport is passed in, the way httpx takes one: HTTP by default, an in-process one in tests,
a channel next. It moves calls and nothing else: call ids, what an answer means and every check
live in the core, so every transport behaves alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from protocol import TRANSPORT_VARIABLE, AnyMethod, CallId, ErrorDetail
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


def answer_due(call: Call, sent: float, retry_for: float) -> float:
    """Until when (a monotonic time) a call `sent` then may still be answered after its link dropped."""
    wait: float = getattr(call.request, "wait", None) or 0.0
    return sent + retry_for + wait


TRANSPORTS = ("auto", "channel", "http")
"""What `transport=` may name: the channel when the agent offers one, the channel, or HTTP."""


def transport_kind(kind: str | None) -> str:
    """The transport `kind` names, or $ENGEE_AGENT_TRANSPORT, or auto; ValueError for anything else."""
    chosen = kind or os.environ.get(TRANSPORT_VARIABLE) or "auto"
    if chosen not in TRANSPORTS:
        named = f"${TRANSPORT_VARIABLE}" if not kind else "transport"
        raise ValueError(f"{named} = {chosen!r}: expected one of {', '.join(TRANSPORTS)}, or a transport object")
    return chosen


class Transport(Protocol):
    """A blocking transport. Failures of the link itself raise `AgentUnreachableError`."""

    url: str

    def call(self, call: Call) -> Reply: ...

    def identity(self) -> AgentInfo: ...

    def flush(self, descriptor: int | None = None) -> list[ErrorDetail]:
        """Wait for the answers of pipelined sends (of one socket, or all); the failures among them."""
        ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    """An awaited transport: `Transport`'s methods as coroutines."""

    url: str

    async def call(self, call: Call) -> Reply: ...

    async def identity(self) -> AgentInfo: ...

    async def flush(self, descriptor: int | None = None) -> list[ErrorDetail]: ...

    async def aclose(self) -> None: ...
