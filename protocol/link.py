"""The link: one WebSocket an agent dials out to a gateway, carrying its users' requests. Pure data and rules.

An agent behind NAT opens `LINK_PATH` on the gateway with `Authorization: Bearer <agent key>` and
`X-Engee-Agent: <agent id>`. The gateway then carries every notebook request for that agent over
the link as a *stream*: an HTTP request and its response, or a whole channel (the WebSocket a
client opens at `/agents/<id>/v1/channel`), each under a stream number the gateway picks. The agent
serves a stream exactly as it serves its own port, with the gateway's user as the caller, so every
method, call id and error means the same through a gateway as direct. One msgpack array per
binary message:

    gateway -> agent  [0, stream, user, request]    OPEN: `user` (a name the gateway authenticated) asks
                                                     `request`, a map: "kind" ("http" or "channel"),
                                                     "method", "path" (under the agent's own root, as
                                                     "/v1/bind"), "query", "headers" ([[name, value]]),
                                                     "body" (bin; http only)
    agent -> gateway  [1, stream, status, headers, body]
                                                     RESPONSE of an http stream; the stream is over
    both ways         [2, stream, data]              MESSAGE: one binary message of a channel stream
    both ways         [3, stream, code, reason]      CLOSE a channel stream (a WebSocket close code)

A gateway that loses the link answers its open streams `agent_offline` at once, with `Retry-After`
(protocol.RETRY_HEADER) on a request the link carried; the notebook sends such a call again, or its
channel links again with its session, and the agent's ledger runs each call at most once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from .arrays import Shapes, checked, parts
from .payload import MAX_PAYLOAD
from .version import PREFIX

LINK_PATH = f"{PREFIX}/link"
AGENT_HEADER = "X-Engee-Agent"
"""The header naming the agent id on the link's upgrade."""
AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Agent ids: 1 to 64 letters, digits, dots, dashes and underscores, not starting with a punctuation mark."""
USER_PATTERN = AGENT_ID_PATTERN
"""Gateway user names follow the same rule."""
MAX_LINK_FRAME = MAX_PAYLOAD * 4 // 3 + 256 * 1024
"""A link frame carries a channel message or an HTTP body (a maximal payload in base64, as the agent's
max_body allows) and their envelope."""


class LinkKind(IntEnum):
    OPEN = 0
    RESPONSE = 1
    MESSAGE = 2
    CLOSE = 3


@dataclass(frozen=True, slots=True)
class Open:
    stream: int
    user: str
    request: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    stream: int
    status: int
    headers: list[list[str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Message:
    stream: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    stream: int
    code: int
    reason: str = ""


LinkFrame = Open | Response | Message | Close


class LinkError(ValueError):
    """Bytes that are not a link frame; the link is closed with CLOSE_PROTOCOL."""


def encode(frame: LinkFrame) -> bytes:
    match frame:
        case Open(stream, user, request):
            items: list[Any] = [LinkKind.OPEN, stream, user, request]
        case Response(stream, status, headers, body):
            items = [LinkKind.RESPONSE, stream, status, headers, body]
        case Message(stream, data):
            items = [LinkKind.MESSAGE, stream, data]
        case Close(stream, code, reason):
            items = [LinkKind.CLOSE, stream, code, reason]
    return msgpack.packb(items, use_bin_type=True)  # type: ignore[no-any-return]


def encode_parts(frame: LinkFrame) -> list[bytes]:
    """The bytes of `frame`, as `encode` gives them, in parts: a bulk MESSAGE payload is a part of its own, so a
    gateway relays a notebook's megabyte to the link without a copy."""
    if not isinstance(frame, Message):
        return [encode(frame)]
    return parts([LinkKind.MESSAGE, frame.stream], frame.data, [])


_SHAPES: Shapes = {
    LinkKind.OPEN: (int, str, dict),
    LinkKind.RESPONSE: (int, int, list, bytes),
    LinkKind.MESSAGE: (int, bytes),
    LinkKind.CLOSE: (int, int, str),
}
_FRAMES: dict[LinkKind, type[LinkFrame]] = {
    LinkKind.OPEN: Open,
    LinkKind.RESPONSE: Response,
    LinkKind.MESSAGE: Message,
    LinkKind.CLOSE: Close,
}


def decode(data: bytes) -> LinkFrame:
    """The link frame in one binary message; LinkError naming what is wrong for anything else."""
    if len(data) > MAX_LINK_FRAME:
        raise LinkError(f"a link frame of {len(data)} bytes is over the limit of {MAX_LINK_FRAME}")
    try:
        items = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_LINK_FRAME)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types for malformed input
        raise LinkError(f"not a msgpack message: {type(exc).__name__}") from None
    kind, rest = checked(items, LinkKind, _SHAPES, LinkError, "link frame")
    return _FRAMES[kind](*rest)
