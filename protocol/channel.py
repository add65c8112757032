"""The session channel's frames: msgpack arrays in binary WebSocket messages. Pure data and rules, no I/O.

A channel is one persistent WebSocket (`/v1/channel?session=<id>`) that carries every method of
the table, many calls in flight at once, bytes as native msgpack `bin`. Written out so that a client
in another language can implement it:

    client -> agent   [1, seq, method, fields, boot, done]   CALL: run `method` (a name of the table)
                                                              with `fields` (a map, as the HTTP JSON body
                                                              but bytes as bin); `boot` is the boot id the
                                                              descriptor came with, or nil; `done`: every
                                                              answer up to this seq has arrived, or nil
                      [2, seq]                                CANCEL: the client gave up on call `seq`
                      [5, descriptor, taken, limit]           GRANT: read this socket ahead of the calls and
                                                              stream it here, up to stream offset `limit`;
                                                              the client's receives took everything before
                                                              `taken`: the agent may forget it
    agent -> client   [0, info]                               HELLO: the first frame, the agent's identity
                                                              (the map of GET /v1/agent)
                      [3, seq, fields]                        RESULT of call `seq`: the response's map
                      [4, seq, error]                         ERROR of call `seq` (nil: of no call): the map
                                                              of the HTTP error body's "error"
                      [6, descriptor, offset, data, peer]     DATA of a granted stream: `data` (bin) starts at
                                                              stream offset `offset`; on a datagram socket it
                                                              is one datagram and `peer` its sender [host, port]
                      [7, descriptor, offset, error]          END of a stream after `offset` bytes: nil when the
                                                              peer closed (EOF), else the error map

A client sends one frame per message; the agent may put several frames back to back in one message
(frames it has ready at once), so a client reads every frame of a message in order.

`seq` numbers the calls of one session, as `<session>.<seq>` does on HTTP, and shares the agent's
ledger with it: each runs at most once, so after a lost link the client opens a new channel with
the same session and sends every unanswered call again under its seq. Calls start in the order
sent; calls on one descriptor complete in order (reads, `receive`, `accept`, `read_line` and
`receive_exactly`, in a lane of their own, so a waiting read never holds back a send or a close).
A frame that cannot be parsed closes the channel with code `CLOSE_PROTOCOL`; a well-formed frame
with bad content gets an ERROR frame.

A stream is read-ahead for `receive` (and the framed reads and `on_data`, which a client serves
from it as well): once the client grants a window on a socket, the agent reads
it as data comes and sends DATA frames while the stream's offset is below the granted limit, so
memory stays bounded on both sides and TCP's flow control still slows the peer. The agent keeps
what it sent until a later GRANT says receives `taken` it: it sends that again on a new channel of
the same session (a client drops what it has already, by its offset), and gives it back to the
socket, for any later receive, when the session ends. So nothing read from the OS is lost in a cut
or duplicated. Offsets and limits count bytes on a stream (TCP) socket, and datagrams on a
datagram socket, where a stream carries at most DATAGRAMS_AHEAD ahead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from .arrays import Shapes, checked, parts
from .payload import MAX_PAYLOAD
from .version import PREFIX

CHANNEL_PATH = f"{PREFIX}/channel"
SESSION_PARAMETER = "session"
MAX_FRAME = MAX_PAYLOAD + 64 * 1024
"""Largest frame either side sends or takes: a maximal payload and its fields."""

READ_AHEAD = 32 << 20
"""Bytes of a socket a stream may carry ahead of the client's receives (the agent's limit read_ahead caps it)."""
DATAGRAMS_AHEAD = 256
"""Datagrams a stream of a datagram socket carries ahead of the client's receives, at most."""
STREAM_CHUNK = 1 << 20
"""The most a DATA frame of a stream socket carries."""

PING_INTERVAL = 10.0
"""Seconds between WebSocket pings, each way; a ping unanswered for as long marks the link dead."""

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
"""A text frame: the channel speaks binary frames only."""
CLOSE_TOO_BIG = 1009
CLOSE_PROTOCOL = 4000
"""A frame that is not a msgpack array of a known kind."""
CLOSE_SESSION = 4001
"""The same session opened another channel: this one gives way."""


class Kind(IntEnum):
    HELLO = 0
    CALL = 1
    CANCEL = 2
    RESULT = 3
    ERROR = 4
    GRANT = 5
    DATA = 6
    END = 7


@dataclass(frozen=True, slots=True)
class CallFrame:
    seq: int
    method: str
    fields: dict[str, Any]
    boot: str | None = None
    done: int | None = None


@dataclass(frozen=True, slots=True)
class CancelFrame:
    seq: int


@dataclass(frozen=True, slots=True)
class HelloFrame:
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResultFrame:
    seq: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    seq: int | None
    error: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GrantFrame:
    descriptor: int
    taken: int
    limit: int


@dataclass(frozen=True, slots=True)
class DataFrame:
    descriptor: int
    offset: int
    data: bytes
    peer: list[Any] | None = None
    """[host, port] of a datagram's sender."""


@dataclass(frozen=True, slots=True)
class EndFrame:
    descriptor: int
    offset: int
    error: dict[str, Any] | None = None


Frame = CallFrame | CancelFrame | HelloFrame | ResultFrame | ErrorFrame | GrantFrame | DataFrame | EndFrame


class FrameError(ValueError):
    """Bytes that are not a frame of this protocol; the channel closes with CLOSE_PROTOCOL."""


def encode(frame: Frame) -> bytes:
    """The bytes of one binary WebSocket message."""
    return msgpack.packb(_ITEMS[type(frame)](frame), use_bin_type=True)  # type: ignore[no-any-return]


_ITEMS: dict[type, Callable[[Any], list[Any]]] = {
    CallFrame: lambda frame: [Kind.CALL, frame.seq, frame.method, frame.fields, frame.boot, frame.done],
    CancelFrame: lambda frame: [Kind.CANCEL, frame.seq],
    HelloFrame: lambda frame: [Kind.HELLO, frame.info],
    ResultFrame: lambda frame: [Kind.RESULT, frame.seq, frame.fields],
    ErrorFrame: lambda frame: [Kind.ERROR, frame.seq, frame.error],
    GrantFrame: lambda frame: [Kind.GRANT, frame.descriptor, frame.taken, frame.limit],
    DataFrame: lambda frame: [Kind.DATA, frame.descriptor, frame.offset, frame.data, frame.peer],
    EndFrame: lambda frame: [Kind.END, frame.descriptor, frame.offset, frame.error],
}
"""Each frame's msgpack array: its kind, then its fields in order."""


def encode_parts(frame: Frame) -> list[bytes]:
    """The bytes of `frame`, as `encode` gives them, in parts: a bulk DATA payload is a part of its own, so a
    stream's megabytes go from the socket to the wire without a copy (the parts are written with writev)."""
    if not isinstance(frame, DataFrame):
        return [encode(frame)]
    return parts([Kind.DATA, frame.descriptor, frame.offset], frame.data, [frame.peer])


_SHAPES: Shapes = {
    Kind.CALL: (int, str, dict, (str, type(None)), (int, type(None))),
    Kind.CANCEL: (int,),
    Kind.HELLO: (dict,),
    Kind.RESULT: (int, dict),
    Kind.ERROR: ((int, type(None)), dict),
    Kind.GRANT: (int, int, int),
    Kind.DATA: (int, int, bytes, (list, type(None))),
    Kind.END: (int, int, (dict, type(None))),
}
_FRAMES: dict[Kind, type[Frame]] = {
    Kind.CALL: CallFrame,
    Kind.CANCEL: CancelFrame,
    Kind.HELLO: HelloFrame,
    Kind.RESULT: ResultFrame,
    Kind.ERROR: ErrorFrame,
    Kind.GRANT: GrantFrame,
    Kind.DATA: DataFrame,
    Kind.END: EndFrame,
}


_UNPACKING: dict[str, Any] = {"raw": False, "strict_map_key": True, "max_bin_len": MAX_FRAME, "max_str_len": MAX_FRAME}
"""How a frame is unpacked: str as str, map keys only str or int, no item past the frame limit."""


def decode(data: bytes) -> Frame:
    """The frame in one binary message; FrameError naming what is wrong for anything else."""
    if len(data) > MAX_FRAME:
        raise FrameError(f"a frame of {len(data)} bytes is over the limit of {MAX_FRAME}")
    try:
        items = msgpack.unpackb(data, **_UNPACKING)
    except Exception:  # noqa: BLE001 - more than one frame, none, or no msgpack: the long way says which
        frames = decode_all(data)
        if len(frames) != 1:
            raise FrameError(f"a message from a client holds one frame, not {len(frames)}") from None
        return frames[0]
    return _frame(items)


def decode_all(data: bytes) -> list[Frame]:
    """The frames in one binary message, back to back; FrameError naming what is wrong for anything else."""
    if len(data) > MAX_FRAME:
        raise FrameError(f"a frame of {len(data)} bytes is over the limit of {MAX_FRAME}")
    unpacker = msgpack.Unpacker(max_buffer_size=MAX_FRAME, **_UNPACKING)
    unpacker.feed(data)
    frames = []
    while unpacker.tell() < len(data):
        try:
            items = unpacker.unpack()
        except msgpack.OutOfData:
            raise FrameError("not a msgpack message: it ends inside a frame") from None
        except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types for malformed input
            raise FrameError(f"not a msgpack message: {type(exc).__name__}") from None
        frames.append(_frame(items))
    if not frames:
        raise FrameError("not a msgpack message: it is empty")
    return frames


def _frame(items: Any) -> Frame:
    kind, rest = checked(items, Kind, _SHAPES, FrameError, "frame")
    if kind is Kind.GRANT and not 0 <= rest[1] <= rest[2]:
        raise FrameError(f"a grant's taken offset {rest[1]} must be >= 0 and at most its limit {rest[2]}")
    return _FRAMES[kind](*rest)
