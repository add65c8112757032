"""How a call to an agent looks on HTTP, without sending anything: the requests to build, the replies to read.

Both transports (blocking and asyncio, in transport.py) are thin I/O layers over this: they only
move the `httpx.Request` built here and hand the `httpx.Response` back, retrying transport failures
as `Backoff` says.
"""

from __future__ import annotations

import ssl
import time

import httpx

from protocol import (
    AGENT_PATH, BOOT_HEADER, CALL_HEADER, METHODS, META_HEADER, OCTET_STREAM, AgentUnreachableError, ErrorBody, Method,
    ProtocolError, exception_for, from_raw, to_raw,
)
from protocol.errors import where
from protocol.models import Request, Response

from .calls import CallLog

CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 60.0
"""Seconds a non-blocking call may take; blocking calls get their wait on top."""

RETRY_FOR = 15.0
"""Seconds a call is retried after transport failures (agent unreachable, connection cut) before giving up."""

LIMITS = httpx.Limits(max_keepalive_connections=32)
"""No cap on connections: every call waiting on the agent holds one, and none may wait for another."""


def ssl_context(verify: bool | str, url: str) -> bool | ssl.SSLContext:
    """What httpx's transports take as `verify`: True/False, or a context trusting the CA file `verify`."""
    if not isinstance(verify, str):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use {verify!r} as the CA file for agent {url}: {exc}") from None


class Wire:
    """One client session with the agent at `url`: its call numbers and the HTTP form of every call."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.calls = CallLog()
        self._auth = ("Authorization", f"Bearer {token}")
        self._routes = {name: (httpx.URL(self.url + method.path), method.raw_request, method.raw_response)
                        for name, method in METHODS.items()}

    def request(self, method: Method, request: Request, boot: str | None, seq: int) -> httpx.Request:
        """The HTTP request for call `seq` of `method`; `boot` makes a restarted agent refuse old descriptors."""
        url, raw_request, raw_response = self._routes[method.name]
        headers = [self._auth, (CALL_HEADER, f"{self.calls.session}.{seq} done={self.calls.done_mark()}")]
        if boot:
            headers.append((BOOT_HEADER, boot))
        if raw_request:
            meta, content = to_raw(request)
            headers += [("Content-Type", OCTET_STREAM), (META_HEADER, meta)]
            timeout = _UNBOUNDED_READ  # a send blocks while the peer does not read, as a local socket's does
        else:
            content = request.model_dump_json(exclude_defaults=True).encode()
            headers.append(("Content-Type", "application/json"))
            wait = getattr(request, "wait", None)
            timeout = _CALL if wait is None else _limits(CALL_TIMEOUT + wait)
        if raw_response:
            headers.append(("Accept", OCTET_STREAM))
        return httpx.Request("POST", url, content=content, headers=headers, extensions={"timeout": timeout})

    def result(self, method: Method, request: Request, reply: httpx.Response) -> tuple[Response, str | None]:
        """The call's result and the agent's boot id; an error answer raises the exception it maps to."""
        if reply.status_code >= 400:
            raise _error(reply, self.where(method, request))
        try:
            if reply.headers.get("content-type", "").startswith(OCTET_STREAM):
                result = from_raw(method.response, reply.headers.get(META_HEADER), reply.content)
            else:
                result = method.response.model_validate_json(reply.content)
        except ValueError as exc:
            raise ProtocolError(f"{self.where(method, request)}: unreadable answer: {exc}") from None
        return result, reply.headers.get(BOOT_HEADER)

    def identity_request(self) -> httpx.Request:
        """The request for the agent's identity endpoint."""
        return httpx.Request("GET", self.url + AGENT_PATH, headers=[self._auth], extensions={"timeout": _CALL})

    def identity(self, reply: httpx.Response) -> bytes:
        """The body of the identity endpoint's reply."""
        if reply.status_code >= 400:
            raise _error(reply, self.where(None, None))
        return reply.content

    def where(self, method: Method | None, request: Request | None) -> str:
        """How an error message about this call starts (None, None: the identity request)."""
        if method is None:
            return f"GET {AGENT_PATH} (agent {self.url})"
        return where(method.name, getattr(request, "descriptor", None), self.url)


class Backoff:
    """When to send a request again after transport failures: at once (a cut keep-alive), then after
    0.05 s doubling up to 1 s, as long as the next attempt starts before `deadline` (a monotonic time)."""

    __slots__ = ("_deadline", "_attempt")

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._attempt = 0

    def pause(self, exc: httpx.TransportError, where: str) -> float:
        """Seconds to wait before the next attempt; AgentUnreachableError when no retry can help or time is up."""
        pause = min(0.05 * 2 ** (self._attempt - 1), 1.0) if self._attempt else 0.0
        if _permanent(exc) or time.monotonic() + pause > self._deadline:
            raise AgentUnreachableError(f"{where}: cannot reach the agent: {exc or type(exc).__name__}") from exc
        self._attempt += 1
        return pause


def _permanent(exc: BaseException | None) -> bool:
    """A failure no retry mends: TLS verification or handshake, as opposed to a cut or refused connection."""
    while exc is not None:
        if isinstance(exc, ssl.SSLError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _error(reply: httpx.Response, where: str) -> Exception:
    try:
        detail = ErrorBody.model_validate_json(reply.content).error
    except ValueError:
        return ProtocolError(f"{where}: HTTP {reply.status_code} without an error body: {reply.text[:200]!r}")
    return exception_for(detail, where)


def _limits(read: float | None) -> dict[str, float | None]:
    return {"connect": CONNECT_TIMEOUT, "read": read, "write": CALL_TIMEOUT, "pool": CONNECT_TIMEOUT}


_CALL = _limits(CALL_TIMEOUT)
_UNBOUNDED_READ = _limits(None)
