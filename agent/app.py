"""The agent's web app: one POST endpoint per entry of the method table, plus identity and health."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from protocol import (
    AGENT_PATH, BOOT_HEADER, CALL_HEADER, HEALTH_PATH, JSON, META_HEADER, METHODS, OCTET_STREAM,
    PROTOCOL_VERSION, ErrorBody, ErrorCode, ErrorDetail, Method, from_raw, to_raw,
)
from protocol.errors import code_for_status, describe_validation, detail_from_os_error
from protocol.models import Address, AgentInfo

from .audit import AUDITED, Audit
from .descriptors import DescriptorTable
from .faults import CallerGone, Fault
from .gate import PRINCIPAL, Gate
from .ledger import Answer, Ledger, parse_call
from .operations import Operations
from .settings import Limits, Principal, Settings
from .status import Clients, add_status_routes

log = logging.getLogger("engee.agent")

try:
    AGENT_VERSION = version("engee-sockets")
except PackageNotFoundError:  # running from a source tree that is not installed
    AGENT_VERSION = "0+unknown"

_GATE_RESPONSES = {code.status: {"model": ErrorBody, "description": code.value}
                   for code in (ErrorCode.UNAUTHORIZED, ErrorCode.PERMISSION_DENIED)}
_ERROR_RESPONSES = {
    code.status: {"model": ErrorBody, "description": code.value}
    for code in (ErrorCode.UNAUTHORIZED, ErrorCode.PERMISSION_DENIED, ErrorCode.BAD_DESCRIPTOR, ErrorCode.OS_ERROR,
                 ErrorCode.AGENT_RESTARTED, ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                 ErrorCode.BAD_REQUEST, ErrorCode.LIMIT_EXCEEDED)
}


def create_app(settings: Settings) -> FastAPI:
    """An agent app with an empty socket table, guarded and limited as `settings` say."""
    table = DescriptorTable()
    operations = Operations(table, settings.policy, settings.limits)
    audit = Audit(settings.audit_log)
    ledger = Ledger()
    clients = Clients()
    boot_id = uuid.uuid4().hex
    info = AgentInfo(
        agent_id=uuid.uuid4().hex, boot_id=boot_id, version=AGENT_VERSION,
        protocol_version=PROTOCOL_VERSION, methods=list(METHODS),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(_reap(table, settings.limits.idle_timeout, audit))
        loop = asyncio.get_running_loop()
        app.state.close_all = lambda: loop.call_soon_threadsafe(table.close_all)
        yield
        reaper.cancel()
        log.info("closing %d open sockets", len(table))
        table.close_all()
        audit.close()

    app = FastAPI(title="engee-sockets agent", version=AGENT_VERSION, lifespan=lifespan,
                  description="Real OS sockets on this machine, driven over HTTP by a remote notebook.")
    for method in METHODS.values():
        app.add_api_route(
            method.path, _endpoint(method, getattr(operations, method.name), boot_id, settings.limits, audit, ledger,
                                   clients),
            methods=["POST"], name=method.name, summary=method.doc, response_model=method.response,
            responses={**_ERROR_RESPONSES, **_raw_response(method)},
            openapi_extra={"requestBody": _request_body(method), "security": [{"bearer": []}]},
        )

    @app.get(AGENT_PATH, response_model=AgentInfo, summary="Identity, version and methods of this agent.",
             responses=_GATE_RESPONSES, openapi_extra={"security": [{"bearer": []}]})
    async def identity() -> AgentInfo:
        return info

    add_status_routes(app, table, clients, info.agent_id, AGENT_VERSION)

    @app.get(HEALTH_PATH, summary="Liveness, without a token; reveals nothing.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.openapi = lambda: _openapi(app)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(Gate, principals=settings.principals, boot_id=boot_id, allowed_hosts=settings.allowed_hosts,
                       allowed_origins=settings.allowed_origins, audit=audit)
    if settings.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.allowed_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", BOOT_HEADER, META_HEADER],
                           expose_headers=[BOOT_HEADER, META_HEADER])
    app.state.table = table
    app.state.ledger = ledger
    return app


async def _reap(table: DescriptorTable, idle_timeout: float, audit: Audit) -> None:
    """Close sockets left idle past `idle_timeout`, every quarter of it (at most every 30 s)."""
    if not idle_timeout:
        return
    while True:
        await asyncio.sleep(min(max(idle_timeout / 4, 0.05), 30.0))
        for entry in table.reap(idle_timeout):
            log.warning("reaped descriptor %d of %s: idle for over %s s", entry.descriptor, entry.owner, idle_timeout)
            audit.record(entry.owner, "reap", f"closed after {idle_timeout:g} s idle (limit idle_timeout)",
                         entry.descriptor)


def _endpoint(method: Method, operation: Callable[..., Awaitable[BaseModel]], boot_id: str, limits: Limits,
              audit: Audit, ledger: Ledger, clients: Clients):
    async def perform(call: BaseModel, principal: Principal, stale: str | None, raw: bool, gone) -> Answer | None:
        """Run the operation and make its answer, success or error; None when the caller went away."""
        descriptor = getattr(call, "descriptor", None)
        try:
            if descriptor is not None and stale and stale != boot_id:
                raise Fault(ErrorCode.AGENT_RESTARTED,
                            "the agent restarted since this socket was created; its sockets are gone")
            result = await (operation(call, principal, gone) if method.blocking else operation(call, principal))
        except CallerGone:
            return None
        except (Fault, ValueError, OSError) as exc:
            detail = _detail(exc, method.name, descriptor)
        else:
            if method.name in AUDITED and not getattr(result, "pending", False):
                audit.record(principal.name, method.name, "ok", *_audit_subject(method.name, call, result))
            if raw:
                meta, data = to_raw(result)
                return Answer(200, data, OCTET_STREAM, ((META_HEADER, meta),))
            return Answer(200, result.model_dump_json().encode(), JSON)
        if method.name in AUDITED or detail.code in _REFUSALS:
            audit.record(principal.name, method.name, f"{detail.code.value}: {detail.message}",
                         *_audit_subject(method.name, call, None))
        return _error_answer(detail)

    async def endpoint(request: Request) -> Response:
        principal: Principal = request.scope[PRINCIPAL]
        try:
            call_id = parse_call(request.headers.get(CALL_HEADER))
            call = await _read(method, request, limits.max_body)
        except ClientDisconnect:
            return Response(status_code=499)  # cut in the middle of its body: nothing was done
        except (Fault, ValueError) as exc:
            return _respond(_error_answer(_detail(exc, method.name, None)))
        stale = request.headers.get(BOOT_HEADER)
        raw = method.raw_response and OCTET_STREAM in request.headers.get("accept", "")
        if call_id is None:
            answer = await perform(call, principal, stale, raw, _disconnection(request))
        else:
            # With an id the answer waits in the ledger for a retry, so the caller's leaving need not end the wait.
            session, seq, done = call_id
            clients.seen(principal.name, session)
            if done is not None:
                ledger.acknowledge(principal.name, session, done)
            answer = await ledger.run((principal.name, session, seq), lambda: perform(call, principal, stale, raw, None))
        if answer is None:
            return Response(status_code=499)  # nobody is there to read it
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s descriptor=%s -> %d", principal.name, method.name, getattr(call, "descriptor", "-"),
                      answer.status)
        return _respond(answer)

    endpoint.__doc__ = method.doc
    return endpoint


def _detail(exc: Exception, method: str, descriptor: int | None) -> ErrorDetail:
    """The error body for what went wrong in a call."""
    if isinstance(exc, Fault):
        return ErrorDetail(code=exc.code, message=exc.message, method=method, descriptor=descriptor)
    if isinstance(exc, ValidationError):
        return ErrorDetail(code=ErrorCode.BAD_REQUEST, message=describe_validation(exc), method=method)
    if isinstance(exc, ValueError):
        return ErrorDetail(code=ErrorCode.BAD_REQUEST, message=str(exc), method=method)
    return detail_from_os_error(exc, method, descriptor)


_REFUSALS = frozenset({ErrorCode.PERMISSION_DENIED, ErrorCode.LIMIT_EXCEEDED, ErrorCode.PAYLOAD_TOO_LARGE})


def _disconnection(request: Request):
    """A waiter that returns once the caller has disconnected (the body is read by then)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


def _audit_subject(method: str, call: BaseModel | None, result: BaseModel | None) -> tuple:
    """The descriptor and the local and peer addresses a call concerned, for its audit line."""
    descriptor = getattr(result, "descriptor", None) or getattr(call, "descriptor", None)
    local, peer = getattr(result, "local", None), getattr(result, "peer", None)
    asked = Address(host=call.host, port=call.port) if hasattr(call, "host") else None
    if method == "bind":
        local = local or asked
    elif method == "connect":
        peer = peer or asked
    return descriptor, local, peer


async def _read(method: Method, request: Request, max_body: int) -> BaseModel:
    """The call's model from a JSON body, or from a raw body and the meta header."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type not in ("application/json", OCTET_STREAM) or (media_type == OCTET_STREAM and not method.raw_request):
        raise Fault(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    f"{method.name} takes application/json" + (f" or {OCTET_STREAM}" if method.raw_request else ""))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise Fault(ErrorCode.PAYLOAD_TOO_LARGE, f"request body is over the agent's limit max_body = {max_body} bytes")
    if media_type == OCTET_STREAM:
        return from_raw(method.request, request.headers.get(META_HEADER), bytes(body))
    return method.request.model_validate_json(body or b"{}")


_META = {META_HEADER: {"description": "The model's other fields as JSON.", "schema": {"type": "string"}}}


def _request_body(method: Method) -> dict:
    content = {"application/json": {"schema": method.request.model_json_schema()}}
    if method.raw_request:
        content[OCTET_STREAM] = {
            "schema": {"type": "string", "format": "binary"},
            "description": f"The payload as raw bytes; the other fields as JSON in the {META_HEADER} header.",
        }
    required = any(field.is_required() for field in method.request.model_fields.values())
    return {"required": required, "content": content}


def _raw_response(method: Method) -> dict:
    """The octet-stream form of a 200, for methods whose answer carries bytes."""
    if not method.raw_response:
        return {}
    return {200: {"description": f"With Accept: {OCTET_STREAM}, the payload as the body", "headers": _META,
                  "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}}}


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document plus the bearer-token scheme every call but /healthz needs."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The token the agent printed at start."}}
        app.openapi_schema = schema
    return app.openapi_schema


def _error_answer(detail: ErrorDetail) -> Answer:
    return Answer(detail.code.status, ErrorBody(error=detail).to_json().encode(), JSON)


def _respond(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type, headers=dict(answer.headers))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _respond(_error_answer(ErrorDetail(code=code_for_status(exc.status_code),
                                              message=f"{request.method} {request.url.path}: {exc.detail}")))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error in %s %s", request.method, request.url.path)
    return _respond(_error_answer(ErrorDetail(code=ErrorCode.INTERNAL, message=f"internal error: {type(exc).__name__}")))
