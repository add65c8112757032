"""How a call to an agent looks on HTTP, without sending anything: the requests to build, the replies to read.

Both HTTP transports (sync/http.py and aio/http.py) are thin I/O layers over this: they only
move the `httpx.Request` built here and hand the `httpx.Response` back, retrying transport failures
as `Backoff` says.
"""

from __future__ import annotations

import ssl
import time

import httpx

from protocol import (
    AGENT_PATH,
    BOOT_HEADER,
    CALL_HEADER,
    JSON,
    META_HEADER,
    METHODS,
    OCTET_STREAM,
    RETRY_HEADER,
    AgentUnreachableError,
    ErrorBody,
    ErrorDetail,
    ProtocolError,
    exception_for,
    from_raw,
    to_raw,
)
from protocol.errors import where
from protocol.models import AgentInfo

from .transport import Call, Reply, answer_due

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
    """The HTTP form of every call to the agent at `url`: the request to build, and what a reply means."""

    def __init__(self, url: str, token: str) -> None:
        self.url = _http_url(url).rstrip("/")
        self._auth = ("Authorization", f"Bearer {token}")
        self._urls = {method.name: httpx.URL(self.url + (method.raw_path or method.path)) for method in METHODS}
        """Each method at its route; one that carries bytes at its raw one, so bytes never go as base64."""

    def request(self, call: Call) -> httpx.Request:
        """The HTTP request for `call`; its boot id makes a restarted agent refuse old descriptors."""
        method, request = call.method, call.request
        headers = [self._auth, (CALL_HEADER, str(call.call_id))]
        if call.boot:
            headers.append((BOOT_HEADER, call.boot))
        if method.raw_request:
            meta, content = to_raw(request)
            headers += [("Content-Type", OCTET_STREAM), (META_HEADER, meta)]
            timeout = _UNBOUNDED_READ  # a send blocks while the peer does not read, as a local socket's does
        else:
            content = request.model_dump_json(exclude_defaults=True).encode()
            headers.append(("Content-Type", JSON))
            wait = getattr(request, "wait", None)
            timeout = _CALL if wait is None else _limits(CALL_TIMEOUT + wait)
        return httpx.Request(
            "POST", self._urls[method.name], content=content, headers=headers, extensions={"timeout": timeout}
        )

    def reply(self, call: Call, reply: httpx.Response) -> Reply:
        """The outcome of `call` and the agent's boot id; ProtocolError for an answer that makes no sense."""
        boot = reply.headers.get(BOOT_HEADER)
        if reply.status_code >= 400:
            return Reply(_error(reply, self.where(call)), boot)
        response_type = call.method.response
        try:
            if reply.headers.get("content-type", "").startswith(OCTET_STREAM):
                result = from_raw(response_type, reply.headers.get(META_HEADER), reply.content)
            else:
                result = response_type.model_validate_json(reply.content)
        except ValueError as exc:
            raise ProtocolError(f"{self.where(call)}: unreadable answer: {exc}") from None
        return Reply(result, boot)

    def identity_request(self) -> httpx.Request:
        """The request for the agent's identity endpoint."""
        return httpx.Request("GET", self.url + AGENT_PATH, headers=[self._auth], extensions={"timeout": _CALL})

    def identity(self, reply: httpx.Response) -> AgentInfo:
        """The agent's identity from the identity endpoint's reply."""
        where = self.where(None)
        if reply.status_code >= 400:
            raise exception_for(_error(reply, where), where)
        try:
            return AgentInfo.model_validate_json(reply.content)
        except ValueError as exc:
            raise ProtocolError(f"{where}: unreadable answer: {exc}") from None

    def where(self, call: Call | None) -> str:
        """How an error message about this call starts (None: the identity request)."""
        if call is None:
            return f"GET {AGENT_PATH} (agent {self.url})"
        return where(call.method.name, getattr(call.request, "descriptor", None), self.url)


class Backoff:
    """When to send a request again after transport failures: at once (a cut keep-alive), then after
    0.05 s doubling up to 1 s, as long as the next attempt starts before `deadline` (a monotonic time)."""

    __slots__ = ("_attempt", "_deadline")

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._attempt = 0

    def pause(self, exc: BaseException, where: str) -> float:
        """Seconds to wait before the next attempt; AgentUnreachableError when no retry can help or time is up."""
        pause = min(0.05 * 2 ** (self._attempt - 1), 1.0) if self._attempt else 0.0
        if _permanent(exc) or time.monotonic() + pause > self._deadline:
            raise AgentUnreachableError(f"{where}: cannot reach the agent: {exc or type(exc).__name__}") from exc
        self._attempt += 1
        return pause


class Resend:
    """When to send `call` again after a gateway said its agent's link dropped with it on the way (503 with
    Retry-After): its outcome is unknown, and the same call id runs at most once. From then on every offline
    answer (the agent is not linked again yet) means the same: after 0.1 s doubling up to 1 s, until `retry_for`
    seconds after the call began, with its wait on top; then its offline answer stands."""

    __slots__ = ("_attempt", "_due")

    def __init__(self, call: Call | None, retry_for: float) -> None:
        self._due = None if call is None else answer_due(call, time.monotonic(), retry_for)
        self._attempt = 0

    def pause(self, reply: httpx.Response) -> float | None:
        """Seconds to wait before sending the call again; None when `reply` is its answer."""
        if self._due is None or reply.status_code != 503 or not (self._attempt or RETRY_HEADER in reply.headers):
            return None
        pause: float = min(0.1 * 2.0**self._attempt, 1.0)
        if time.monotonic() + pause > self._due:
            return None
        self._attempt += 1
        return pause


def _http_url(url: str) -> str:
    """`url`, if it is an http:// or https:// URL with a host; else ValueError at once, not retries."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"the agent URL {url!r} needs http:// or https:// and a host, as in 'http://127.0.0.1:8700'")
    return url


def _permanent(exc: BaseException | None) -> bool:
    """A failure no retry mends: TLS verification or handshake, as opposed to a cut or refused connection."""
    while exc is not None:
        if isinstance(exc, ssl.SSLError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _error(reply: httpx.Response, where: str) -> ErrorDetail:
    try:
        return ErrorBody.model_validate_json(reply.content).error
    except ValueError:
        raise ProtocolError(f"{where}: HTTP {reply.status_code} without an error body: {reply.text[:200]!r}") from None


def _limits(read: float | None) -> dict[str, float | None]:
    return {"connect": CONNECT_TIMEOUT, "read": read, "write": CALL_TIMEOUT, "pool": CONNECT_TIMEOUT}


_CALL = _limits(CALL_TIMEOUT)
_UNBOUNDED_READ = _limits(None)
