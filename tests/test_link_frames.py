"""The gateway link's frames as pure data and rules: encode, decode, and what is refused, with no network."""

import asyncio

import msgpack
import pytest

from gateway.links import LinkedAgent
from protocol.link import Close, LinkError, Message, Open, Response, decode, encode, encode_parts


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


def test_what_the_agent_sends_before_the_notebooks_side_attaches_reaches_it_close_included() -> None:
    """A channel the agent opens and closes before the gateway's relay attaches (a notebook's replica still on its
    way): its messages and its close, with the agent's code, reach the relay in order, not an 'offline'."""

    class Recorder:  # the link's tap and the relay's sink: the gateway's bookkeeping, no socket involved
        def __init__(self) -> None:
            self.got: list[object] = []

        def write(self, *parts: bytes) -> bool:
            return True

        def linger(self, seconds: float) -> None: ...

        def message(self, data: bytes) -> None:
            self.got.append(data)

        def closed(self, code: int, reason: str) -> None:
            self.got.append((code, reason))

        def hold(self, held: bool) -> None: ...

    async def run() -> list[object]:
        recorder = Recorder()
        linked = LinkedAgent("lab", None, recorder, 0.0)  # type: ignore[arg-type]
        opening = asyncio.ensure_future(linked.open_channel("ann", {"kind": "channel"}, 5))
        await asyncio.sleep(0)
        linked.received(encode(Response(1, 101, [], b"")))
        stream, _ = await opening
        linked.received(encode(Message(stream, b"hello")))
        linked.received(encode(Close(stream, 4001, "the same session opened another channel")))
        linked.attach(stream, recorder)
        return recorder.got

    assert asyncio.run(run()) == [b"hello", (4001, "the same session opened another channel")]


@pytest.mark.parametrize("size", [0, 4095, 4096, 65535, 65536, 1 << 20])
def test_a_link_message_in_parts_is_the_message(size: int) -> None:
    """What a gateway writes without copying a notebook's payload is byte for byte what `encode` gives."""
    message = Message(12345, bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    parts = encode_parts(message)
    assert b"".join(parts) == encode(message) and decode(b"".join(parts)) == message
    assert len(parts) == (3 if size >= 4096 else 1)
