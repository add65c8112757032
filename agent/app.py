"""The agent's web app: one POST endpoint per entry of the method table, plus identity and health."""

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from protocol import (
    AGENT_PATH, BOOT_HEADER, HEALTH_PATH, MAX_PAYLOAD, META_HEADER, METHODS, OCTET_STREAM,
    PROTOCOL_VERSION, ErrorBody, ErrorCode, ErrorDetail, Method, from_raw, to_raw,
)
from protocol.errors import code_for_status, describe_validation, detail_from_os_error
from protocol.models import AgentInfo

from .descriptors import DescriptorTable
from .faults import Fault
from .gate import Gate
from .operations import Operations

log = logging.getLogger("engee.agent")

MAX_BODY = MAX_PAYLOAD * 4 // 3 + 64 * 1024
"""Largest request body: a maximal payload in base64 plus room for the other fields."""

try:
    AGENT_VERSION = version("engee-sockets")
except PackageNotFoundError:  # running from a source tree that is not installed
    AGENT_VERSION = "0+unknown"

_ERROR_RESPONSES = {
    code.status: {"model": ErrorBody, "description": code.value}
    for code in (ErrorCode.UNAUTHORIZED, ErrorCode.BAD_DESCRIPTOR, ErrorCode.OS_ERROR, ErrorCode.AGENT_RESTARTED,
                 ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA_TYPE, ErrorCode.BAD_REQUEST)
}


def create_app(token: str, agent_id: str | None = None) -> FastAPI:
    """An agent app with an empty socket table; `token` guards every call."""
    table = DescriptorTable()
    operations = Operations(table)
    boot_id = uuid.uuid4().hex
    info = AgentInfo(
        agent_id=agent_id or uuid.uuid4().hex, boot_id=boot_id, version=AGENT_VERSION,
        protocol_version=PROTOCOL_VERSION, methods=list(METHODS),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        log.info("closing %d open sockets", len(table))
        table.close_all()

    app = FastAPI(title="engee-sockets agent", version=AGENT_VERSION, lifespan=lifespan,
                  description="Real OS sockets on this machine, driven over HTTP by a remote notebook.")
    for method in METHODS.values():
        app.add_api_route(
            method.path, _endpoint(method, getattr(operations, method.name), boot_id), methods=["POST"],
            name=method.name, summary=method.doc, response_model=method.response,
            responses=_ERROR_RESPONSES, openapi_extra={"requestBody": _request_body(method)},
        )

    @app.get(AGENT_PATH, response_model=AgentInfo, summary="Identity, version and methods of this agent.")
    async def identity() -> AgentInfo:
        return info

    @app.get(HEALTH_PATH, summary="Liveness, without a token; reveals nothing.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(Gate, token=token, boot_id=boot_id)
    app.state.table = table
    return app


def _endpoint(method: Method, operation: Callable[[BaseModel], Awaitable[BaseModel]], boot_id: str):
    async def endpoint(request: Request) -> Response:
        descriptor = None
        try:
            call = await _read(method, request)
            descriptor = getattr(call, "descriptor", None)
            stale = request.headers.get(BOOT_HEADER)
            if descriptor is not None and stale and stale != boot_id:
                raise Fault(ErrorCode.AGENT_RESTARTED,
                            "the agent restarted since this socket was created; its sockets are gone")
            result = await operation(call)
        except Fault as fault:
            return _error(ErrorDetail(code=fault.code, message=fault.message, method=method.name, descriptor=descriptor))
        except ValidationError as exc:
            return _error(ErrorDetail(code=ErrorCode.BAD_REQUEST, message=describe_validation(exc), method=method.name))
        except ValueError as exc:
            return _error(ErrorDetail(code=ErrorCode.BAD_REQUEST, message=str(exc), method=method.name))
        except OSError as exc:
            return _error(detail_from_os_error(exc, method.name, descriptor))
        if method.raw_response and OCTET_STREAM in request.headers.get("accept", ""):
            meta, data = to_raw(result)
            return Response(data, media_type=OCTET_STREAM, headers={META_HEADER: meta})
        return Response(result.model_dump_json(), media_type="application/json")

    endpoint.__doc__ = method.doc
    return endpoint


async def _read(method: Method, request: Request) -> BaseModel:
    """The call's model from a JSON body, or from a raw body and the meta header."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type not in ("application/json", OCTET_STREAM) or (media_type == OCTET_STREAM and not method.raw_request):
        raise Fault(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    f"{method.name} takes application/json" + (f" or {OCTET_STREAM}" if method.raw_request else ""))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Fault(ErrorCode.PAYLOAD_TOO_LARGE, f"request body is over the limit of {MAX_BODY} bytes")
    if media_type == OCTET_STREAM:
        return from_raw(method.request, request.headers.get(META_HEADER), bytes(body))
    return method.request.model_validate_json(body or b"{}")


def _request_body(method: Method) -> dict:
    content = {"application/json": {"schema": method.request.model_json_schema()}}
    if method.raw_request:
        content[OCTET_STREAM] = {
            "schema": {"type": "string", "format": "binary"},
            "description": f"The payload as raw bytes; the other fields as JSON in the {META_HEADER} header.",
        }
    return {"required": False, "content": content}


def _error(detail: ErrorDetail) -> Response:
    return Response(ErrorBody(error=detail).to_json(), status_code=detail.code.status,
                    media_type="application/json")


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error(ErrorDetail(code=code_for_status(exc.status_code), message=f"{request.method} {request.url.path}: {exc.detail}"))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error in %s %s", request.method, request.url.path)
    return _error(ErrorDetail(code=ErrorCode.INTERNAL, message=f"internal error: {type(exc).__name__}"))
