"""Pushed data: on_data callbacks (blocking client) and incoming()/on_data (asyncio), with real peers."""

import asyncio
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from engee_client import Agent, AsyncAgent
from lab.process import AgentProcess

from .conftest import Background
from .faulty_proxy import FaultyProxy

LINES = 10_000


class Collector:
    """A callback that keeps what it is given, and says when `want` pieces came."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.pieces: list = []
        self.threads: set[str] = set()
        self.done = threading.Event()

    def __call__(self, sock, piece) -> None:
        self.pieces.append(piece)
        self.threads.add(threading.current_thread().name)
        if len(self.pieces) >= self.want:
            self.done.set()

    def wait(self, timeout: float = 60) -> list:
        assert self.done.wait(timeout), f"{len(self.pieces)} of {self.want} pieces came"
        return self.pieces


def _lines(count: int) -> bytes:
    return b"".join(f"line {i}\r\n".encode() for i in range(count))


def test_every_line_once_and_in_order(connected) -> None:
    client, plain = connected
    collector = Collector(LINES)
    client.on_data(collector, terminator="\r\n")
    writer = Background(plain.sendall, _lines(LINES))
    assert collector.wait() == [f"line {i}" for i in range(LINES)]
    writer.join_result()
    assert len(collector.threads) == 1  # one client thread runs the callbacks
    client.on_data(None)
    plain.sendall(b"after\n")
    assert client.read_line(timeout=10) == "after"  # stopped: the next read is the caller's again


def test_lines_through_a_cutting_link(agent_process: AgentProcess, transport: str) -> None:
    """Again until the link was cut at least once: every line once, in order, whatever the cuts."""
    upstream = urlsplit(agent_process.url)
    proxy = FaultyProxy((upstream.hostname, upstream.port), cut=0.03, seed=11)
    try:
        for _ in range(20):
            with (
                Agent(proxy.url, token=agent_process.token, retry_for=60, transport=transport) as agent,
                socket.create_server(("127.0.0.1", 0)) as listener,
                agent.Socket() as client,
            ):
                client.connect(*listener.getsockname())
                plain, _ = listener.accept()
                with plain:
                    collector = Collector(LINES)
                    client.on_data(collector, terminator=b"\n")
                    writer = Background(plain.sendall, _lines(LINES).replace(b"\r\n", b"\n"))
                    assert collector.wait(120) == [f"line {i}" for i in range(LINES)]
                    writer.join_result()
            if proxy.cuts:
                break
        assert proxy.cuts > 0
    finally:
        proxy.close()


def test_bytes_of_at_least_min_bytes(connected) -> None:
    client, plain = connected
    payload = bytes(range(256)) * 40
    got = bytearray()
    enough = threading.Event()

    def keep(sock, piece) -> None:
        assert isinstance(piece, bytes) and len(piece) >= 100
        got.extend(piece)
        if len(payload) - len(got) < 100:  # what is left is less than a piece: it waits for more
            enough.set()

    client.on_data(keep, min_bytes=100)
    for start in range(0, len(payload), 30):  # in pieces smaller than min_bytes
        plain.sendall(payload[start : start + 30])
    assert enough.wait(30)
    client.on_data(None)
    rest = len(payload) - len(got)
    assert bytes(got) == payload[: len(got)]
    assert (client.receive_exactly(rest, timeout=10) if rest else b"") == payload[len(got) :]


def test_datagrams_with_their_senders(agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as station, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        station.bind("127.0.0.1", 0)
        peer.bind(("127.0.0.1", 0))
        collector = Collector(50)
        station.on_data(collector)
        for i in range(50):
            peer.sendto(f"sample {i}".encode(), station.local_address)
            time.sleep(0.001)  # gently: a datagram the kernel drops would not be the client's fault
        pieces = collector.wait()
        assert [bytes(piece) for piece in pieces] == [f"sample {i}".encode() for i in range(50)]
        assert {piece.address for piece in pieces} == {peer.getsockname()}


def test_an_exception_in_a_callback_is_reported_and_the_next_piece_comes(connected, capsys) -> None:
    client, plain = connected
    seen: list[str] = []
    both = threading.Event()

    def fragile(sock, line: str) -> None:
        seen.append(line)
        if len(seen) == 2:
            both.set()
        if line == "bad":
            raise RuntimeError("the callback broke on purpose")

    client.on_data(fragile, terminator="\n")
    plain.sendall(b"bad\ngood\n")
    assert both.wait(30)
    assert seen == ["bad", "good"]
    client.on_data(None)
    err = capsys.readouterr().err
    assert "the on_data callback" in err and "RuntimeError: the callback broke on purpose" in err


def test_a_slow_callback_slows_the_peer_and_loses_nothing(connected) -> None:
    """While the callback is held, the peer's sends stall (TCP flow control), far short of all it has; released,
    every byte arrives in order."""
    client, plain = connected
    total = 160 << 20
    release = threading.Event()
    got = bytearray()
    finished = threading.Event()

    def slow(sock, piece: bytes) -> None:
        release.wait()
        got.extend(piece)
        if len(got) >= total:
            finished.set()

    client.on_data(slow)
    block = bytes(range(256)) * 4096  # 1 MiB
    sent = [0]

    def send_all() -> None:
        for _ in range(total // len(block)):
            plain.sendall(block)
            sent[0] += len(block)

    writer = Background(send_all)
    last, steady_since = -1, time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and time.monotonic() - steady_since < 1.0:
        time.sleep(0.1)
        if sent[0] != last:
            last, steady_since = sent[0], time.monotonic()
    assert sent[0] < total, "the peer sent everything although nothing was taken"
    release.set()
    assert finished.wait(120), f"{len(got)} of {total} bytes came"
    writer.join_result()
    assert bytes(got) == block * (total // len(block))
    client.on_data(None)


def test_bad_on_data_arguments(agent: Agent) -> None:
    with agent.Socket() as sock:
        with pytest.raises(TypeError, match="callable"):
            sock.on_data("print")
        with pytest.raises(ValueError, match="min_bytes"):
            sock.on_data(print, min_bytes=0)
        with pytest.raises(ValueError, match="terminator"):
            sock.on_data(print, terminator="")


def test_async_incoming_and_on_data(agent_process: AgentProcess, transport: str) -> None:
    async def main() -> None:
        async with AsyncAgent(agent_process.url, token=agent_process.token, transport=transport) as agent:
            with socket.create_server(("127.0.0.1", 0)) as listener:
                listener.setblocking(False)
                client = await agent.Socket()
                await client.connect(*listener.getsockname())
                plain, _ = await asyncio.get_running_loop().sock_accept(listener)
            with plain:
                plain.setblocking(True)
                plain.sendall(_lines(1000))
                lines = []
                async for line in client.incoming(terminator="\r\n"):
                    lines.append(line)
                    if len(lines) == 1000:
                        break
                assert lines == [f"line {i}" for i in range(1000)]
                heard: list[str] = []
                done = asyncio.Event()

                async def callback(sock, line: str) -> None:
                    heard.append(line)
                    if len(heard) == 3:
                        done.set()

                await client.on_data(callback, terminator="\n")
                plain.sendall(b"a\nb\nc\n")
                await asyncio.wait_for(done.wait(), 30)
                await client.on_data(None)
                assert heard == ["a", "b", "c"]
                plain.sendall(b"mine\n")
                assert await client.read_line(timeout=10) == "mine"
                await client.close()

    asyncio.run(main())


def test_a_full_datagram_window_drops_and_counts(agent_process: AgentProcess) -> None:
    """On the channel, datagrams past a held callback's full window are dropped by the agent and counted, as a
    full kernel buffer drops them; what was delivered came once and in order."""
    with (
        Agent(agent_process.url, token=agent_process.token, transport="channel") as agent,
        agent.Socket("AF_INET", "SOCK_DGRAM") as station,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
    ):
        station.bind("127.0.0.1", 0)
        release = threading.Event()
        delivered: list[int] = []

        def held(sock, datagram) -> None:
            release.wait()
            delivered.append(int(bytes(datagram)))

        station.on_data(held)
        sent = 0
        deadline = time.monotonic() + 60
        while station.dropped == 0 and time.monotonic() < deadline:
            for _ in range(100):
                peer.sendto(str(sent).encode(), station.local_address)
                sent += 1
            time.sleep(0.01)  # gently, so the kernel's own buffer does not overflow first
        dropped = station.dropped
        assert dropped > 0
        status = httpx.get(
            agent_process.url + "/v1/status", headers={"Authorization": f"Bearer {agent_process.token}"}
        ).json()
        assert next(row["dropped"] for row in status["sockets"] if row["descriptor"] == station.descriptor) >= dropped
        release.set()
        station.on_data(None)
        assert delivered == sorted(set(delivered)) and len(delivered) + dropped <= sent


def test_what_comes_before_the_end_is_handed_over(connected) -> None:
    """A last line without its terminator, and a tail shorter than min_bytes, still reach the callback."""
    client, plain = connected
    collector = Collector(2)
    client.on_data(collector, terminator="\n")
    plain.sendall(b"whole\npart")
    plain.shutdown(socket.SHUT_WR)
    assert collector.wait() == ["whole", b"part"]
