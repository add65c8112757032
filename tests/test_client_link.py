"""The blocking client's WebSocket (engee_client/sync/link.py) against a hand-written server on loopback: the frames
it parses itself, as RFC 6455 has them, and what it refuses."""

import base64
import hashlib
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from engee_client.sync.link import Link, LinkClosed

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """A server's frame: unmasked."""
    first = (0x80 if fin else 0) | rsv | opcode
    if len(payload) < 126:
        return bytes((first, len(payload))) + payload
    if len(payload) < 65536:
        return struct.pack("!BBH", first, 126, len(payload)) + payload
    return struct.pack("!BBQ", first, 127, len(payload)) + payload


class Server:
    """Accepts one WebSocket upgrade, then sends `frames` (with the 101, in one write) and records what comes."""

    def __init__(self, frames: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frames = frames
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + self.frames
            )
            conn.settimeout(5)
            try:
                while data := conn.recv(65536):
                    self.received += data
            except OSError:
                pass


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Link, Server]]:
    server = Server(request.param)
    link, _ = Link.open(f"ws://127.0.0.1:{server.port}/v1/channel", {}, None, 5)
    yield link, server
    link.close()
    server.listener.close()


def messages(link: Link, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        got += link.read(5) or []
    return got


BIG = bytes(range(256)) * 4096  # 1 MiB


@pytest.mark.parametrize(
    "served",
    [frame(2, b"one") + frame(2, b"") + frame(2, b"x" * 300) + frame(2, BIG)],
    indirect=True,
)
def test_messages_of_every_length_arrive_whole_and_in_order(served: tuple[Link, Server]) -> None:
    link, _ = served
    assert messages(link, 4) == [b"one", b"", b"x" * 300, BIG]


@pytest.mark.parametrize(
    "served",
    [frame(2, b"frag", fin=False) + frame(9, b"are you there") + frame(0, b"men", fin=False) + frame(0, b"ted")],
    indirect=True,
)
def test_a_fragmented_message_is_joined_and_a_ping_inside_it_is_answered(served: tuple[Link, Server]) -> None:
    link, server = served
    assert messages(link, 1) == [b"fragmented"]
    link.flush()  # the pong the reader left for a writer
    link.close()
    server.thread.join(5)
    first, second = server.received[0], server.received[1]
    assert first == 0x8A and second & 0x80 and second & 0x7F == len(b"are you there")  # a masked pong
    mask = server.received[2:6]
    pong = bytes(byte ^ mask[i % 4] for i, byte in enumerate(server.received[6 : 6 + len(b"are you there")]))
    assert pong == b"are you there"


@pytest.mark.parametrize("served", [frame(2, b"last words") + frame(8, struct.pack("!H", 1000))], indirect=True)
def test_a_close_ends_the_link_after_what_came_before_it(served: tuple[Link, Server]) -> None:
    link, _ = served
    assert messages(link, 1) == [b"last words"]
    with pytest.raises(LinkClosed, match="closed the channel"):
        link.read(1)


@pytest.mark.parametrize(
    ("served", "problem"),
    [
        (frame(1, b"text"), "text frame"),
        (frame(2, b"x", rsv=0x40), "reserved bits"),
        (frame(5, b""), "opcode 5"),
        (frame(0, b"nothing began"), "no message begun"),
        (frame(2, b"a", fin=False) + frame(2, b"b"), "inside another"),
    ],
    indirect=["served"],
)
def test_what_no_agent_sends_ends_the_link_with_a_reason(served: tuple[Link, Server], problem: str) -> None:
    link, _ = served
    with pytest.raises(LinkClosed, match=problem):
        messages(link, 1)
