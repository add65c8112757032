"""The client's transport: one call of the method table over HTTP to one agent.

It drives httpx's transport layer directly: the agent needs none of `httpx.Client`'s cookies,
redirects or hooks, and skipping them takes a third off every call's latency.
"""

import ssl

import httpx

from protocol import (
    AGENT_PATH, BOOT_HEADER, METHODS, META_HEADER, OCTET_STREAM, AgentUnreachableError, ErrorBody, Method,
    ProtocolError, exception_for, from_raw, to_raw,
)
from protocol.errors import where as describe_call
from protocol.models import Request, Response

CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 60.0
"""Seconds a non-blocking call may take; blocking calls get their wait on top."""


class HttpTransport:
    """Calls an agent's endpoints over pooled keep-alive connections."""

    def __init__(self, url: str, token: str, *, verify: bool | str = True) -> None:
        self.url = url.rstrip("/")
        if isinstance(verify, str):
            try:
                verify = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot use {verify!r} as the CA file for agent {self.url}: {exc}") from None
        self._pool = httpx.HTTPTransport(verify=verify, limits=httpx.Limits(max_keepalive_connections=32))
        self._auth = ("Authorization", f"Bearer {token}")
        self._urls = {name: httpx.URL(self.url + method.path) for name, method in METHODS.items()}

    def call(self, method: Method, request: Request, *, boot: str | None = None) -> tuple[Response, str | None]:
        """Run one method on the agent; returns its result and the agent's boot id."""
        headers = [self._auth]
        if boot:
            headers.append((BOOT_HEADER, boot))
        if method.raw_request:
            meta, content = to_raw(request)
            headers += [("Content-Type", OCTET_STREAM), (META_HEADER, meta)]
        else:
            content = request.model_dump_json(exclude_defaults=True).encode()
            headers.append(("Content-Type", "application/json"))
        if method.raw_response:
            headers.append(("Accept", OCTET_STREAM))
        where = describe_call(method.name, getattr(request, "descriptor", None), self.url)
        reply = self._send(httpx.Request("POST", self._urls[method.name], content=content, headers=headers,
                                         extensions={"timeout": _timeout(method, request)}), where)
        if reply.status_code >= 400:
            raise _error(reply, where)
        try:
            if reply.headers.get("content-type", "").startswith(OCTET_STREAM):
                result = from_raw(method.response, reply.headers.get(META_HEADER), reply.content)
            else:
                result = method.response.model_validate_json(reply.content)
        except ValueError as exc:
            raise ProtocolError(f"{where}: unreadable answer: {exc}") from None
        return result, reply.headers.get(BOOT_HEADER)

    def identity(self) -> bytes:
        """The body of the agent's identity endpoint."""
        where = f"GET {AGENT_PATH} (agent {self.url})"
        request = httpx.Request("GET", self.url + AGENT_PATH, headers=[self._auth],
                                extensions={"timeout": _limits(CALL_TIMEOUT)})
        reply = self._send(request, where)
        if reply.status_code >= 400:
            raise _error(reply, where)
        return reply.content

    def close(self) -> None:
        self._pool.close()

    def _send(self, request: httpx.Request, where: str) -> httpx.Response:
        try:
            reply = self._pool.handle_request(request)
            try:
                reply.read()
            finally:
                reply.close()
        except httpx.TransportError as exc:
            raise AgentUnreachableError(f"{where}: cannot reach the agent: {exc or type(exc).__name__}") from exc
        return reply


def _error(reply: httpx.Response, where: str) -> Exception:
    try:
        detail = ErrorBody.model_validate_json(reply.content).error
    except ValueError:
        return ProtocolError(f"{where}: HTTP {reply.status_code} without an error body: {reply.text[:200]!r}")
    return exception_for(detail, where)


def _timeout(method: Method, request: Request) -> dict[str, float | None]:
    if method.raw_request:
        return _limits(None)  # a send blocks while the peer does not read, as a local socket's does
    return _limits(CALL_TIMEOUT + getattr(request, "wait", 0.0))


def _limits(read: float | None) -> dict[str, float | None]:
    return {"connect": CONNECT_TIMEOUT, "read": read, "write": CALL_TIMEOUT, "pool": CONNECT_TIMEOUT}
