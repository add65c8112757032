"""The agent's web app: the dispatcher's HTTP routes, identity, health and the status page, behind the gate."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.exceptions import HTTPException

from protocol import AGENT_PATH, BOOT_HEADER, HEALTH_PATH, META_HEADER, METHODS, ErrorBody, ErrorCode, ErrorDetail
from protocol.errors import code_for_status
from protocol.models import AgentInfo

from .channel import add_channel_route
from .dispatch import Dispatcher
from .gate import Gate
from .http import SECURITY, add_method_routes, error_response
from .link import AgentLink
from .settings import Settings
from .status import add_status_routes

log = logging.getLogger("engee.agent")

try:
    AGENT_VERSION = version("engee-sockets")
except PackageNotFoundError:  # running from a source tree that is not installed
    AGENT_VERSION = "0+unknown"

_GATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    code.status: {"model": ErrorBody, "description": code.value}
    for code in (ErrorCode.UNAUTHORIZED, ErrorCode.PERMISSION_DENIED)
}


def create_app(settings: Settings) -> FastAPI:
    """An agent app with an empty socket table, guarded and limited as `settings` say."""
    dispatcher = Dispatcher(settings, AGENT_VERSION)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(dispatcher.reap())
        loop = asyncio.get_running_loop()
        app.state.close_all = lambda: loop.call_soon_threadsafe(dispatcher.close_all)
        linker = None
        if settings.gateways:
            assert settings.agent_id and settings.agent_key
            app.state.link = AgentLink(
                app,
                settings.gateways,
                settings.agent_id,
                settings.agent_key,
                verify=ssl.create_default_context(cafile=settings.gateway_ca) if settings.gateway_ca else None,
                ping_interval=settings.limits.link_ping,
            )
            linker = asyncio.create_task(app.state.link.run())
        yield
        reaper.cancel()
        if linker is not None:
            linker.cancel()
        dispatcher.close()

    app = FastAPI(
        title="engee-sockets agent",
        version=AGENT_VERSION,
        lifespan=lifespan,
        description="Real OS sockets on this machine, driven over HTTP by a remote notebook.",
    )
    add_method_routes(app, dispatcher)
    app.state.sessions = add_channel_route(app, dispatcher)

    @app.get(
        AGENT_PATH,
        response_model=AgentInfo,
        summary="Identity, version and methods of this agent.",
        responses=_GATE_RESPONSES,
        openapi_extra=SECURITY,
    )
    async def identity() -> AgentInfo:
        return dispatcher.info

    add_status_routes(
        app,
        dispatcher.table,
        dispatcher.clients,
        dispatcher.info.agent_id,
        AGENT_VERSION,
        lambda: link.state if (link := getattr(app.state, "link", None)) else None,
    )

    @app.get(HEALTH_PATH, summary="Liveness, without a token; reveals nothing.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(
        Gate,
        principals=settings.principals,
        boot_id=dispatcher.boot_id,
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.allowed_origins,
        audit=dispatcher.audit,
        gateway_users=settings.gateway_users,
    )
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", BOOT_HEADER, META_HEADER],
            expose_headers=[BOOT_HEADER, META_HEADER],
        )
    app.state.dispatcher = dispatcher
    return app


REF = "#/components/schemas/{model}"


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the bearer-token scheme every call but /healthz needs."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        requests: list[tuple[type[BaseModel], JsonSchemaMode]] = [(method.request, "validation") for method in METHODS]
        responses: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            (method.response, "serialization") for method in METHODS
        ]
        for models in (requests, responses):
            _, found = models_json_schema(models, ref_template=REF)
            for name, model_schema in found.get("$defs", {}).items():
                schemas.setdefault(name, model_schema)  # the routes' bodies name them by $ref
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The token the agent printed at start."}
        }
        app.openapi_schema = schema
    return app.openapi_schema


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return error_response(
        ErrorDetail(code=code_for_status(exc.status_code), message=f"{request.method} {request.url.path}: {exc.detail}")
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error in %s %s", request.method, request.url.path)
    return error_response(ErrorDetail(code=ErrorCode.INTERNAL, message=f"internal error: {type(exc).__name__}"))
