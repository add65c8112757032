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
    """`POST /v1/<method>` (JSON) for every method of the table, and `POST /v1/<method>/raw` (its bytes as a raw
    body) for those that carry bytes."""
    for method in METHODS:
        for raw, path in ((False, method.path), (True, method.raw_path)):
            if path is None:
                continue
            app.add_api_route(
                path,
                _endpoint(method, dispatcher, raw),
                methods=["POST"],
                name=f"{method.name}_raw" if raw else method.name,
                operation_id=f"{method.name}_raw" if raw else method.name,
                summary=method.doc + (" Raw bytes, not base64." if raw else ""),
                response_model=None if raw and method.raw_response else method.response,
                response_class=Response,
                responses={**ERROR_RESPONSES, **(_raw_response(method) if raw else _json_response(method))},
                openapi_extra={**_request(method, raw), **SECURITY},
            )


def _endpoint(method: AnyMethod, dispatcher: Dispatcher, raw: bool) -> Callable[[Request], Awaitable[Response]]:
    max_body = dispatcher.limits.max_body
    raw_in, raw_out = raw and method.raw_request, raw and method.raw_response

    async def endpoint(request: Request) -> Response:
        try:
            header = request.headers.get(CALL_HEADER)
            call_id = None if header is None else CallId.parse(header)
            call = await _read(method, request, max_body, raw_in)
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
        return _response(outcome, raw_out)

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


async def _read(method: AnyMethod, request: Request, max_body: int, raw: bool) -> m.Request:
    """The call's model from a JSON body, or (`raw`) from a raw body and the meta header."""
    media_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    wanted = OCTET_STREAM if raw else JSON
    if media_type != wanted:
        other = f"; for raw bytes, POST {OCTET_STREAM} to {method.raw_path}" if method.raw_request and not raw else ""
        raise Fault(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"{request.url.path} takes {wanted}{other}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise Fault(
                ErrorCode.PAYLOAD_TOO_LARGE, f"request body is over the agent's limit max_body = {max_body} bytes"
            )
    request_type: type[m.Request] = method.request
    if raw:
        return from_raw(request_type, request.headers.get(META_HEADER), bytes(body))
    return request_type.model_validate_json(body or b"{}")


_META = {META_HEADER: {"description": "The model's other fields as JSON.", "schema": {"type": "string"}}}
_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _request(method: AnyMethod, raw: bool) -> dict[str, Any]:
    """The request body of a route (and the meta header of a raw one), one content type each."""
    if raw and method.raw_request:
        meta = {
            "name": META_HEADER,
            "in": "header",
            "required": True,
            "description": f"The call's other fields as JSON: {', '.join(_other_fields(method))}.",
            "schema": {"type": "string"},
        }
        return {"parameters": [meta], "requestBody": {"required": True, "content": {OCTET_STREAM: _BINARY}}}
    required = any(field.is_required() for field in method.request.model_fields.values())
    schema = {"$ref": f"#/components/schemas/{method.request.__name__}"}
    return {"requestBody": {"required": required, "content": {JSON: {"schema": schema}}}}


def _other_fields(method: AnyMethod) -> list[str]:
    return [name for name in method.request.model_fields if name != "data"]


def _json_response(method: AnyMethod) -> dict[int | str, dict[str, Any]]:
    schema = {"$ref": f"#/components/schemas/{method.response.__name__}"}
    return {200: {"description": "The call's result.", "content": {JSON: {"schema": schema}}}}


def _raw_response(method: AnyMethod) -> dict[int | str, dict[str, Any]]:
    """The 200 of a raw route: the payload as the body and the other fields in the meta header, or JSON."""
    if not method.raw_response:
        return _json_response(method)
    return {200: {"description": "The payload as the body", "headers": _META, "content": {OCTET_STREAM: _BINARY}}}
