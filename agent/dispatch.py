"""The one call path: every transport hands a call here and sends back the outcome it gets.

In order: the boot check (a descriptor from before a restart is refused), the ledger (a call id
runs at most once; a retry gets the same outcome), the operation within the policy and limits, the
audit line, and the error mapping. No framework: HTTP routes, and later a channel or a gateway
link, are thin adapters that decode a request, call `dispatch`, and encode what it returns.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from protocol import METHODS, PROTOCOL_VERSION, AnyMethod, CallId, ErrorCode, ErrorDetail
from protocol import models as m
from protocol.errors import RESTARTED, describe_validation, detail_from_os_error

from .audit import AUDITED, Audit
from .clients import Clients
from .descriptors import DescriptorTable, Gone
from .faults import CallerGone, Fault
from .ledger import CallIdReused, Ledger, Outcome
from .operations import Operations
from .settings import Principal, Settings

log = logging.getLogger("engee.agent")

Operation = Callable[..., Awaitable[m.Response]]

_REFUSALS = frozenset({ErrorCode.PERMISSION_DENIED, ErrorCode.LIMIT_EXCEEDED, ErrorCode.PAYLOAD_TOO_LARGE})
"""Refusals audited for every method, not only for the audited ones."""


class Dispatcher:
    """Runs the calls of every principal on one table of sockets, as the settings allow."""

    def __init__(self, settings: Settings, version: str) -> None:
        self.boot_id = uuid.uuid4().hex
        self.limits = settings.limits
        self.table = DescriptorTable()
        self.operations = Operations(self.table, settings.policy, settings.limits)
        self.audit = Audit(settings.audit_log)
        self.ledger = Ledger()
        self.clients = Clients()
        self.info = m.AgentInfo(
            agent_id=uuid.uuid4().hex,
            boot_id=self.boot_id,
            version=version,
            protocol_version=PROTOCOL_VERSION,
            methods=METHODS.names(),
            transports=["http", "channel"],
            max_bufsize=settings.limits.max_bufsize,
            read_ahead=settings.limits.read_ahead,
            idle_timeout=settings.limits.idle_timeout,
        )
        self._operations: dict[str, Operation] = {
            method.name: getattr(self.operations, method.name) for method in METHODS
        }

    async def dispatch(
        self,
        principal: Principal,
        method: AnyMethod,
        request: m.Request,
        call_id: CallId | None = None,
        boot: str | None = None,
        gone: Gone | None = None,
    ) -> Outcome | None:
        """The outcome of one call: its response or its error; None when the caller left before it was done.

        `boot` is the boot id the caller's descriptor came with; `gone` completes when a caller
        without a call id disconnects, ending its wait without taking data.
        """
        if call_id is None:
            outcome = await self._perform(principal, method, request, boot, gone)
        else:  # the outcome waits in the ledger for a retry, so the caller's leaving need not end the wait
            self.clients.seen(principal.name, call_id.session)
            if call_id.done is not None:
                self.ledger.acknowledge(principal.name, call_id.session, call_id.done)
            for seq in call_id.cancel:
                self.cancel(principal, call_id.session, seq)
            try:
                outcome = await self.ledger.run(
                    principal.name,
                    (call_id.session, call_id.seq),
                    method.name,
                    request,
                    lambda: self._perform(principal, method, request, boot, None),
                )
            except CallIdReused as exc:
                outcome = ErrorDetail(code=ErrorCode.CALL_ID_REUSED, message=str(exc), method=method.name)
        if outcome is not None and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s descriptor=%s -> %s",
                principal.name,
                method.name,
                getattr(request, "descriptor", "-"),
                outcome.code.value if isinstance(outcome, ErrorDetail) else "ok",
            )
        return outcome

    async def _perform(
        self, principal: Principal, method: AnyMethod, request: m.Request, boot: str | None, gone: Gone | None
    ) -> Outcome | None:
        descriptor = getattr(request, "descriptor", None)
        operation = self._operations[method.name]
        try:
            if descriptor is not None and boot and boot != self.boot_id:
                raise Fault(ErrorCode.AGENT_RESTARTED, RESTARTED)
            if method.blocking:
                result = await operation(request, principal, gone)
            else:
                result = await operation(request, principal)
        except CallerGone:
            return None
        except Exception as exc:
            if not isinstance(exc, Fault | ValueError | OSError):
                log.exception("%s of %s failed", method.name, principal.name)
            detail = error_detail(exc, method.name, descriptor)
            if method.name in AUDITED or detail.code in _REFUSALS:
                self.audit.record(
                    principal.name,
                    method.name,
                    f"{detail.code.value}: {detail.message}",
                    *_audit_subject(method.name, request, None),
                )
            return detail
        if method.name in AUDITED and not getattr(result, "pending", False):
            outcome = "not_open: nothing was closed" if getattr(result, "closed", True) is False else "ok"
            self.audit.record(principal.name, method.name, outcome, *_audit_subject(method.name, request, result))
        return result

    def cancel(self, principal: Principal, session: str, seq: int) -> None:
        """The client gave up on a call: its wait ends, and what it took goes back to its socket."""
        cancelled = self.ledger.cancel(principal.name, (session, seq))
        if cancelled is not None and not isinstance(cancelled[1], ErrorDetail):
            self.operations.give_back(principal, cancelled[0], cancelled[1])

    async def reap(self) -> None:
        """Close sockets left idle past `idle_timeout`, every quarter of it (at most every 30 s); runs until cancelled."""
        idle_timeout = self.limits.idle_timeout
        if not idle_timeout:
            return
        while True:
            await asyncio.sleep(min(max(idle_timeout / 4, 0.05), 30.0))
            for entry in self.table.reap(idle_timeout):
                log.warning(
                    "reaped descriptor %d of %s: idle for over %s s", entry.descriptor, entry.owner, idle_timeout
                )
                self.audit.record(
                    entry.owner, "reap", f"closed after {idle_timeout:g} s idle (limit idle_timeout)", entry.descriptor
                )

    def close_all(self) -> None:
        """Close every socket, each with its audit line: the agent is stopping. Waiting calls end with EBADF."""
        if self.table:
            log.info("closing %d open sockets", len(self.table))
        for entry in self.table.entries():
            self.audit.record(entry.owner, "close", "closed at shutdown", entry.descriptor)
        self.table.close_all()

    def close(self) -> None:
        """Close every socket and the audit log: the agent has stopped."""
        self.close_all()
        self.audit.close()


def error_detail(exc: Exception, method: str, descriptor: int | None) -> ErrorDetail:
    """The error body for what went wrong in a call: the one mapping from exceptions to error codes."""
    if isinstance(exc, Fault):
        return ErrorDetail(code=exc.code, message=exc.message, method=method, descriptor=descriptor)
    if isinstance(exc, ValidationError):
        return ErrorDetail(code=ErrorCode.BAD_REQUEST, message=describe_validation(exc), method=method)
    if isinstance(exc, ValueError):
        return ErrorDetail(code=ErrorCode.BAD_REQUEST, message=str(exc), method=method)
    if isinstance(exc, OSError):
        return detail_from_os_error(exc, method, descriptor)
    return ErrorDetail(code=ErrorCode.INTERNAL, message=f"the agent failed: {type(exc).__name__}", method=method)


def _audit_subject(method: str, call: Any, result: Any) -> tuple[int | None, m.Address | None, m.Address | None]:
    """The descriptor and the local and peer addresses a call concerned, for its audit line."""
    descriptor = getattr(result, "descriptor", None) or getattr(call, "descriptor", None)
    local, peer = getattr(result, "local", None), getattr(result, "peer", None)
    asked = m.Address(host=call.host, port=call.port) if hasattr(call, "host") else None
    if method == "bind":
        local = local or asked
    elif method == "connect":
        peer = peer or asked
    return descriptor, local, peer
