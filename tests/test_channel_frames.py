"""The channel's frames as pure data and rules: encode, decode, and what is refused, with no network."""

import msgpack
import pytest

from protocol.channel import (
    MAX_FRAME,
    CallFrame,
    CancelFrame,
    ErrorFrame,
    FrameError,
    HelloFrame,
    ResultFrame,
    decode,
    encode,
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
        (msgpack.packb([1, 1, "socket", {1: 2}, None, None]), "not a msgpack message"),  # keys are strings
        (b"\x00" * (MAX_FRAME + 1), "over the limit"),
    ],
)
def test_garbage_is_refused_naming_what_is_wrong(data: bytes, problem: str) -> None:
    with pytest.raises(FrameError, match=problem):
        decode(data)
