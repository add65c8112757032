"""A client transport that calls the agent's dispatcher directly, in the same event loop.

It lets tests run the real client (`AsyncAgent`, its flows, call ids and error mapping) on the real
dispatcher (boot check, ledger, policy, limits, audit) with no HTTP in between.
"""

from __future__ import annotations

from agent.dispatch import Dispatcher
from agent.settings import Principal
from engee_client import Call, Reply
from protocol import ErrorCode, ErrorDetail
from protocol.models import AgentInfo


class InProcessTransport:
    """An `engee_client.AsyncTransport` that hands each call to `dispatcher` as `principal`."""

    url = "inprocess://agent"

    def __init__(self, dispatcher: Dispatcher, principal: Principal) -> None:
        self.dispatcher = dispatcher
        self.principal = principal

    async def call(self, call: Call) -> Reply:
        outcome = await self.dispatcher.dispatch(self.principal, call.method, call.request, call.call_id, call.boot)
        if outcome is None:  # only a caller that left gets None, and this one is still here
            outcome = ErrorDetail(
                code=ErrorCode.INTERNAL, message="the dispatcher gave no outcome", method=call.method.name
            )
        return Reply(outcome, self.dispatcher.boot_id)

    async def identity(self) -> AgentInfo:
        return self.dispatcher.info

    async def aclose(self) -> None:
        """Nothing to close: the dispatcher and its sockets belong to the test."""
