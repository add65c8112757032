"""ASGI middleware in front of every route: who is calling, from where, and the boot id on every answer.

In order: the bearer token names the principal (401 without one); the Host header must be a name
the agent serves under, so a web page cannot reach a loopback agent by DNS rebinding; a browser's
Origin must be one the agent was told to allow.
"""

import hmac
import ipaddress
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol import BOOT_HEADER, HEALTH_PATH, ErrorBody, ErrorCode, ErrorDetail

from .audit import Audit
from .policy import Policy
from .settings import Principal

_HINT = (
    "pass the token the agent printed at start as the header 'Authorization: Bearer <token>', "
    "or open the status page by the link the agent printed"
)
_COOKIE_CANNOT_ACT = (
    "the status page's cookie can only look (GET), never act: "
    "pass the token as the header 'Authorization: Bearer <token>'"
)
PRINCIPAL = "engee.principal"
"""The scope key under which the calling principal travels to the endpoints."""
LINK_USER = "engee.link_user"
"""The scope key of a request that came over the gateway link: the gateway's user who made it. Only the
agent's link (agent/link.py) builds such scopes; no request from the network can carry it."""
GATEWAY_PREFIX = "gateway:"
"""A gateway user's principal is `gateway:<user>`, so it never shares sockets with a local principal."""
COOKIE = "engee_token"
"""The status page's cookie: accepted for GET requests only, so a page can look but never act."""


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        principals: tuple[Principal, ...],
        boot_id: str,
        allowed_hosts: tuple[str, ...],
        allowed_origins: tuple[str, ...],
        audit: Audit,
        gateway_users: dict[str, Policy] | None = None,
    ) -> None:
        self.app = app
        self.gateway_users = gateway_users
        self.tokens = [(f"Bearer {p.token}".encode(), p) for p in principals]
        self.boot = (BOOT_HEADER.lower().encode(), boot_id.encode())
        self.hosts = {"localhost", *(name.lower() for name in allowed_hosts)}
        self.origins = set(allowed_origins)
        self._good_hosts: set[bytes] = set()
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Health checks are open, so they tell nothing, not even the boot id.
        if scope["type"] not in ("http", "websocket") or scope["path"] == HEALTH_PATH:
            await self.app(scope, receive, send)
            return

        async def send_with_boot(message: Message) -> None:
            if message["type"] in _STARTS:
                message["headers"] = [*message.get("headers", []), self.boot]
            await send(message)

        if (user := scope.get(LINK_USER)) is not None:  # the gateway authenticated the user; the link, the gateway
            if self.gateway_users is not None and user not in self.gateway_users:
                reason = f"this agent serves no gateway user {user!r} (its [gateway_users] does not name them)"
                self.audit.record(GATEWAY_PREFIX + user, scope["path"], f"permission_denied: {reason}")
                await _refuse(ErrorCode.PERMISSION_DENIED, reason, send_with_boot, scope["type"])
                return
            policy = self.gateway_users.get(user) if self.gateway_users is not None else None
            scope[PRINCIPAL] = Principal(name=GATEWAY_PREFIX + user, token="", policy=policy)
            await self.app(scope, receive, send_with_boot)
            return
        headers = dict(scope["headers"])
        given = _credential(scope, headers)
        principal = self._principal(given)
        refusal = self._refusal(principal, given, headers)
        if refusal:
            self.audit.record(principal.name if principal else "-", scope["path"], f"{refusal[0].value}: {refusal[1]}")
            await _refuse(*refusal, send_with_boot, scope["type"])
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send_with_boot)

    def _principal(self, given: bytes | None) -> Principal | None:
        found = None
        for expected, principal in self.tokens:  # compare with every token: the time tells nothing
            if given is not None and hmac.compare_digest(given, expected):
                found = principal
        return found

    def _refusal(
        self, principal: Principal | None, given: bytes | None, headers: dict[bytes, bytes]
    ) -> tuple[ErrorCode, str] | None:
        if principal is None:
            if given is None and _cookie(headers):  # on a call that acts, which takes no cookie
                return ErrorCode.UNAUTHORIZED, _COOKIE_CANNOT_ACT
            return ErrorCode.UNAUTHORIZED, f"{'missing' if given is None else 'wrong'} token: {_HINT}"
        host = headers.get(b"host", b"")
        if host not in self._good_hosts:
            name = _hostname(host.decode("latin-1"))
            if not _is_ip(name) and name not in self.hosts:
                return ErrorCode.PERMISSION_DENIED, (
                    f"this agent does not answer to the host name {name!r}; start it "
                    f"with --allow-host {name or 'NAME'} if that is how it is reached"
                )
            if len(self._good_hosts) < 64:  # the few names a client uses; bounded against junk
                self._good_hosts.add(host)
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1") not in self.origins:
            return ErrorCode.PERMISSION_DENIED, (
                f"calls from the web origin {origin.decode('latin-1')!r} are not "
                "allowed; start the agent with --allow-origin to allow one"
            )
        return None


def _credential(scope: Scope, headers: dict[bytes, bytes]) -> bytes | None:
    """The bearer token: the Authorization header, or for plain GETs the status page's cookie or link.

    A WebSocket upgrade is a GET too, but a browser sends the cookie with any page's WebSocket: a
    channel takes the Authorization header only, so no web page can open one (cross-site WebSocket
    hijacking)."""
    if scope["type"] == "websocket" or b"authorization" in headers or scope["method"] != "GET":
        return headers.get(b"authorization")
    if scope["path"] == "/" and (token := parse_qs(scope["query_string"].decode("latin-1")).get("token")):
        return f"Bearer {token[-1]}".encode()
    cookie = _cookie(headers)
    return f"Bearer {cookie}".encode() if cookie else None


def _cookie(headers: dict[bytes, bytes]) -> str | None:
    """The status page's cookie, if the request carries it (among cookies of any shape)."""
    try:
        cookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1")).get(COOKIE)
    except CookieError:  # another site's cookie on the same host name, with a key Python will not take
        return None
    return cookie.value if cookie else None


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0].lower() if ":" in host else host.lower()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.http.response.start"})
"""The messages that start an answer, which carry the boot id."""


async def _refuse(code: ErrorCode, message: str, send: Send, kind: str = "http") -> None:
    """An HTTP error answer; for a WebSocket, the same as the answer to its upgrade request (the server
    offers the websocket.http.response extension), so no page ever gets a channel it may not have."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message)).to_json().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if code is ErrorCode.UNAUTHORIZED:
        headers.append((b"www-authenticate", b'Bearer realm="engee-agent"'))
    prefix = "websocket.http" if kind == "websocket" else "http"
    await send({"type": f"{prefix}.response.start", "status": code.status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})
