"""The gateway link's frames as pure data and rules: encode, decode, and what is refused, with no network."""

import msgpack
import pytest

from protocol.link import Close, LinkError, Message, Open, Response, decode, encode


@pytest.mark.parametrize(
    "frame",
    [
        Open(1, "alice", {"kind": "http", "method": "POST", "path": "/v1/bind", "headers": [], "body": b"{}"}),
        Open(2, "bob", {"kind": "channel", "path": "/v1/channel", "query": "session=s"}),
        Response(1, 200, [["content-type", "application/json"]], b'{"descriptor": 1}'),
        Response(2, 101, [], b""),
        Message(2, b"\x93\x03\x01\x80"),
        Close(2, 1000, "bye"),
    ],
)
def test_every_link_frame_survives_the_wire(frame: object) -> None:
    assert decode(encode(frame)) == frame  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"\xc1", "not a msgpack message"),
        (msgpack.packb([7, 1]), "first item is a kind: 0 open, 1 response, 2 message, 3 close"),
        (msgpack.packb([0, 1, "alice"]), "open frame has 4 items, not 3"),
        (msgpack.packb([2, 1, "text, not bytes"]), "item 2 of a message frame has the wrong type"),
        (msgpack.packb([3, True, 1000, ""]), "item 1 of a close frame has the wrong type"),
    ],
)
def test_garbage_on_the_link_is_refused_naming_what_is_wrong(data: bytes, problem: str) -> None:
    with pytest.raises(LinkError, match=problem):
        decode(data)
