"""The channel's frames as pure data and rules: encode, decode, and what is refused, with no network."""

import msgpack
import pytest

from protocol.arrays import BULK
from protocol.channel import (
    MAX_FRAME,
    CallFrame,
    CancelFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    FrameError,
    GrantFrame,
    HelloFrame,
    ResultFrame,
    decode,
    decode_all,
    encode,
    encode_parts,
)


@pytest.mark.parametrize(
    "frame",
    [
        CallFrame(7, "send", {"descriptor": 3, "data": b"\x00\xffbytes"}, "boot", 6),
        CallFrame(1, "socket", {}),
        CancelFrame(9),
        HelloFrame({"agent_id": "a", "methods": ["socket"]}),
        ResultFrame(7, {"sent": 7}),
        ResultFrame(8, {"data": b"\x01" * 1000, "peer": {"host": "::1", "port": 5}}),
        ErrorFrame(7, {"code": "os_error", "message": "refused", "errno_name": "ECONNREFUSED"}),
        ErrorFrame(None, {"code": "bad_request", "message": "?"}),
        GrantFrame(3, 0, 16 << 20),
        DataFrame(3, 4096, b"\x00" * 100),
        DataFrame(4, 17, b"datagram", ["::1", 5000]),
        EndFrame(3, 8192),
        EndFrame(3, 8192, {"code": "os_error", "message": "reset", "errno_name": "ECONNRESET"}),
    ],
)
def test_every_frame_survives_the_wire(frame: object) -> None:
    assert decode(encode(frame)) == frame  # type: ignore[arg-type]


def test_bytes_travel_as_msgpack_bin_not_base64_or_ints() -> None:
    payload = bytes(range(256))
    items = msgpack.unpackb(encode(CallFrame(1, "send", {"descriptor": 1, "data": payload})), raw=True)
    assert items[3][b"data"] == payload  # raw bin, byte for byte
    assert items[0] == 1 and items[2] == b"send"


def test_the_documented_layout_a_julia_client_would_write() -> None:
    written = msgpack.packb([1, 5, "is_open", {"descriptor": 2}, None, 4])
    assert decode(written) == CallFrame(5, "is_open", {"descriptor": 2}, None, 4)
    assert msgpack.unpackb(encode(ResultFrame(5, {"open": True}))) == [3, 5, {"open": True}]


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "not a msgpack message"),
        (b"\xc1", "not a msgpack message"),
        (msgpack.packb({"kind": 1}), "first item is a kind"),
        (msgpack.packb([]), "first item is a kind"),
        (msgpack.packb([9, 1]), "first item is a kind"),
        (msgpack.packb([True, 1]), "first item is a kind"),
        (msgpack.packb([1, 1, "socket"]), "call frame has 6 items, not 3"),
        (msgpack.packb([1, "one", "socket", {}, None, None]), "item 1 of a call frame has the wrong type"),
        (msgpack.packb([1, True, "socket", {}, None, None]), "item 1 of a call frame has the wrong type"),
        (msgpack.packb([1, 1, "socket", [], None, None]), "item 3 of a call frame has the wrong type"),
        (msgpack.packb([2, 1.5]), "item 1 of a cancel frame has the wrong type"),
        (msgpack.packb([5, 3, 10, 5]), "taken offset 10 must be >= 0 and at most its limit 5"),
        (msgpack.packb([6, 3, 0, "text", None]), "item 3 of a data frame has the wrong type"),
        (encode(CancelFrame(1)) + encode(CancelFrame(2)), "a message from a client holds one frame, not 2"),
        (msgpack.packb([1, 1, "socket", {1: 2}, None, None]), "not a msgpack message"),  # keys are strings
        (b"\x00" * (MAX_FRAME + 1), "over the limit"),
    ],
)
def test_garbage_is_refused_naming_what_is_wrong(data: bytes, problem: str) -> None:
    with pytest.raises(FrameError, match=problem):
        decode(data)


def test_the_agent_may_send_several_frames_in_one_message() -> None:
    frames = [ResultFrame(1, {"sent": 3}), DataFrame(2, 0, b"abc", ["127.0.0.1", 9])]
    assert decode_all(b"".join(encode(frame) for frame in frames)) == frames
    with pytest.raises(FrameError, match="ends inside a frame"):
        decode_all(encode(frames[0]) + encode(frames[1])[:-1])


@pytest.mark.parametrize("size", [0, 100, BULK, 65535, 65536, 1 << 20])
@pytest.mark.parametrize("peer", [None, ["127.0.0.1", 5026]])
def test_a_frame_in_parts_is_the_frame(size: int, peer: list | None) -> None:
    """What the agent writes without copying a stream's payload is byte for byte what `encode` gives."""
    frame = DataFrame(7, 123456789, bytes(range(256)) * (size // 256) + b"x" * (size % 256), peer)
    parts = encode_parts(frame)
    assert b"".join(parts) == encode(frame)
    assert decode_all(b"".join(parts)) == [frame]
    assert (frame.data in parts) == (size >= BULK)  # the payload itself, not a copy of it
