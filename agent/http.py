"""The HTTP transport: one POST route per method of the table, each a thin adapter over the dispatcher.

A route reads the request (JSON, or a raw octet-stream body with the other fields in a header),
hands it to `Dispatcher.dispatch` with the call id and boot id from the headers, and writes the
outcome back as JSON or raw bytes. Nothing about a call's meaning lives here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from protocol import (
    BOOT_HEADER,
    CALL_HEADER,
    JSON,
    META_HEADER,
    METHODS,
    OCTET_STREAM,
    AnyMethod,
    CallId,
    ErrorBody,
    ErrorCode,
    ErrorDetail,
    from_raw,
    to_raw,
)
from protocol import models as m

from .descriptors import Gone
from .dispatch import Dispatcher, error_detail
from .faults import Fault
from .gate import PRINCIPAL
from .ledger import Outcome

_CALL_ERRORS = (
    ErrorCode.UNAUTHORIZED,
    ErrorCode.PERMISSION_DENIED,
    ErrorCode.BAD_DESCRIPTOR,
    ErrorCode.OS_ERROR,
    ErrorCode.CALL_ID_REUSED,
    ErrorCode.AGENT_RESTARTED,
    ErrorCode.PAYLOAD_TOO_LARGE,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.BAD_REQUEST,
    ErrorCode.LIMIT_EXCEEDED,
    ErrorCode.END_OF_STREAM,
)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ErrorBody,
        "description": " or ".join(code.value for code in _CALL_ERRORS if code.status == status),
    }
    for status in sorted({code.status for code in _CALL_ERRORS})
}
SECURITY: dict[str, Any] = {"security": [{"bearer": []}]}
_CALLER_LEFT = 499
"""Not sent to anyone: the status a route ends with when its caller has gone."""


def add_method_routes(app: FastAPI, dispatcher: Dispatcher) -> None:
    """`POST /v1/<method>` for every method of the table."""
    for method in METHODS:
        app.add_api_route(
            method.path,
            _endpoint(method, dispatcher),
            methods=["POST"],
            name=method.name,
            summary=method.doc,
            response_model=method.response,
            responses={**ERROR_RESPONSES, **_raw_response(method)},
            openapi_extra={"requestBody": _request_body(method), **SECURITY},
        )


def _endpoint(method: AnyMethod, dispatcher: Dispatcher) -> Callable[[Request], Awaitable[Response]]:
    max_body = dispatcher.limits.max_body

    async def endpoint(request: Request) -> Response:
        try:
            header = request.headers.get(CALL_HEADER)
            call_id = None if header is None else CallId.parse(header)
            call = await _read(method, request, max_body)
        except ClientDisconnect:
            return Response(status_code=_CALLER_LEFT)  # cut in the middle of its body: nothing was done
        except (Fault, ValueError) as exc:
            return error_response(error_detail(exc, method.name, None))
        outcome = await dispatcher.dispatch(
            request.scope[PRINCIPAL],
            method,
            call,
            call_id,
            request.headers.get(BOOT_HEADER),
            None if call_id else _disconnection(request),
        )
        if outcome is None:
            return Response(status_code=_CALLER_LEFT)  # nobody is there to read it
        return _response(outcome, method.raw_response and OCTET_STREAM in request.headers.get("accept", ""))

    endpoint.__doc__ = method.doc
    return endpoint


def _response(outcome: Outcome, raw: bool) -> Response:
    if isinstance(outcome, ErrorDetail):
        return error_response(outcome)
    if raw:
        meta, data = to_raw(outcome)
        return Response(data, media_type=OCTET_STREAM, headers={META_HEADER: meta})
    return Response(outcome.model_dump_json().encode(), media_type=JSON)


def error_response(detail: ErrorDetail) -> Response:
    """The one HTTP form of an error: its code's status and the error body."""
    return Response(ErrorBody(error=detail).to_json().encode(), status_code=detail.code.status, media_type=JSON)


def _disconnection(request: Request) -> Gone:
    """A waiter that returns once the caller has disconnected (the body is read by then)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


async def _read(method: AnyMethod, request: Request, max_body: int) -> m.Request:
    """The call's model from a JSON body, or from a raw body and the meta header."""
    media_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if media_type not in (JSON, OCTET_STREAM) or (media_type == OCTET_STREAM and not method.raw_request):
        raise Fault(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"{method.name} takes {JSON}" + (f" or {OCTET_STREAM}" if method.raw_request else ""),
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise Fault(
                ErrorCode.PAYLOAD_TOO_LARGE, f"request body is over the agent's limit max_body = {max_body} bytes"
            )
    request_type: type[m.Request] = method.request
    if media_type == OCTET_STREAM:
        return from_raw(request_type, request.headers.get(META_HEADER), bytes(body))
    return request_type.model_validate_json(body or b"{}")


_META = {META_HEADER: {"description": "The model's other fields as JSON.", "schema": {"type": "string"}}}


def _request_body(method: AnyMethod) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": method.request.model_json_schema()}}
    if method.raw_request:
        content[OCTET_STREAM] = {
            "schema": {"type": "string", "format": "binary"},
            "description": f"The payload as raw bytes; the other fields as JSON in the {META_HEADER} header.",
        }
    required = any(field.is_required() for field in method.request.model_fields.values())
    return {"required": required, "content": content}


def _raw_response(method: AnyMethod) -> dict[int | str, dict[str, Any]]:
    """The octet-stream form of a 200, for methods whose answer carries bytes."""
    if not method.raw_response:
        return {}
    return {
        200: {
            "description": f"With Accept: {OCTET_STREAM}, the payload as the body",
            "headers": _META,
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        }
    }
