"""The client's transport: one call of the method table over HTTP to one agent.

It drives httpx's transport layer directly: the agent needs none of `httpx.Client`'s cookies,
redirects or hooks, and skipping them takes a third off every call's latency.
"""

import ssl
import time

import httpx

from protocol import (
    AGENT_PATH, BOOT_HEADER, CALL_HEADER, METHODS, META_HEADER, OCTET_STREAM, AgentUnreachableError, ErrorBody, Method,
    ProtocolError, exception_for, from_raw, to_raw,
)
from protocol.errors import where as describe_call
from protocol.models import Request, Response

from .calls import CallLog

CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 60.0
"""Seconds a non-blocking call may take; blocking calls get their wait on top."""


RETRY_FOR = 15.0
"""Seconds a call is retried after transport failures (agent unreachable, connection cut) before giving up."""


class HttpTransport:
    """Calls an agent's endpoints over pooled keep-alive connections.

    Every call carries an id; after a transport failure the same id is sent again with backoff, so
    the agent runs it at most once and an answer lost on the way is fetched again, not redone.
    """

    def __init__(self, url: str, token: str, *, verify: bool | str = True, retry_for: float = RETRY_FOR) -> None:
        self.url = url.rstrip("/")
        self.retry_for = retry_for
        self.calls = CallLog()
        if isinstance(verify, str):
            try:
                verify = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot use {verify!r} as the CA file for agent {self.url}: {exc}") from None
        self._pool = httpx.HTTPTransport(verify=verify, limits=httpx.Limits(max_keepalive_connections=32))
        self._auth = ("Authorization", f"Bearer {token}")
        self._urls = {name: httpx.URL(self.url + method.path) for name, method in METHODS.items()}

    def call(self, method: Method, request: Request, *, boot: str | None = None,
             seq: int | None = None) -> tuple[Response, str | None]:
        """Run one method on the agent as call `seq` (a new one by default); returns the result and boot id.

        On KeyboardInterrupt the call stays open: calling again with the same `seq` collects its answer.
        """
        seq = self.calls.begin() if seq is None else self.calls.reopen(seq)
        try:
            result = self._call(method, request, boot, seq)
        except Exception:
            self.calls.end(seq)
            raise
        self.calls.end(seq)
        return result

    def _call(self, method: Method, request: Request, boot: str | None, seq: int) -> tuple[Response, str | None]:
        headers = [self._auth, (CALL_HEADER, f"{self.calls.session}.{seq} done={self.calls.done_mark()}")]
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
        """Send, and on a transport failure send the same request again, with backoff, for `retry_for` seconds."""
        deadline, attempt = time.monotonic() + self.retry_for, 0
        while True:
            try:
                reply = self._pool.handle_request(request)
                try:
                    reply.read()
                finally:
                    reply.close()
                return reply
            except httpx.TransportError as exc:
                pause = min(0.05 * 2 ** (attempt - 1), 1.0) if attempt else 0.0  # a cut keep-alive: retry at once
                if _permanent(exc) or time.monotonic() + pause > deadline:
                    raise AgentUnreachableError(f"{where}: cannot reach the agent: {exc or type(exc).__name__}") from exc
                time.sleep(pause)
                attempt += 1


def _permanent(exc: BaseException) -> bool:
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


def _timeout(method: Method, request: Request) -> dict[str, float | None]:
    if method.raw_request:
        return _limits(None)  # a send blocks while the peer does not read, as a local socket's does
    return _limits(CALL_TIMEOUT + getattr(request, "wait", 0.0))


def _limits(read: float | None) -> dict[str, float | None]:
    return {"connect": CONNECT_TIMEOUT, "read": read, "write": CALL_TIMEOUT, "pool": CONNECT_TIMEOUT}
