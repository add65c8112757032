"""The channel against a real agent: who may open one, bad frames, and sockets released when a client is gone."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.speedups import apply_mask

from engee_client import Agent, AgentError, AgentUnreachableError
from engee_client.sync.link import Link, _binary_header
from engee_client.sync.socket import Socket
from lab.process import AgentProcess
from protocol.channel import (
    CHANNEL_PATH,
    CLOSE_PROTOCOL,
    CLOSE_UNSUPPORTED,
    CallFrame,
    ErrorFrame,
    Frame,
    HelloFrame,
    ResultFrame,
    decode_all,
    encode,
)

from .conftest import Background, connected_to_peer, recv_exactly


def channel_url(process: AgentProcess, session: str = "test-session") -> str:
    return process.url.replace("http://", "ws://") + f"{CHANNEL_PATH}?session={session}"


async def upgrade(process: AgentProcess, **headers: str) -> int:
    """The HTTP status the agent answers an upgrade with (101 when it opens the channel)."""
    try:
        async with websockets.connect(channel_url(process), additional_headers=headers) as link:
            decode_all(await link.recv())
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def test_only_the_bearer_token_opens_a_channel(agent_process: AgentProcess) -> None:
    token = agent_process.token
    assert asyncio.run(upgrade(agent_process, Authorization=f"Bearer {token}")) == 101
    assert asyncio.run(upgrade(agent_process)) == 401
    assert asyncio.run(upgrade(agent_process, Authorization="Bearer wrong")) == 401
    # A web page's WebSocket carries the status page's cookie, never an Authorization header: refused.
    assert asyncio.run(upgrade(agent_process, Cookie=f"engee_token={token}")) == 401
    assert asyncio.run(upgrade(agent_process, Authorization=f"Bearer {token}", Origin="https://evil.example")) == 403
    assert asyncio.run(upgrade(agent_process, Authorization=f"Bearer {token}", Host="evil.example")) == 403


async def exchange(process: AgentProcess, *messages: bytes | str) -> list[object]:
    """Send `messages` on a fresh channel; what comes back (frames, then the close code if it closes)."""
    got: list[object] = []
    headers = {"Authorization": f"Bearer {process.token}"}
    async with websockets.connect(channel_url(process), additional_headers=headers) as link:
        assert isinstance(decode_all(await link.recv())[0], HelloFrame)
        for message in messages:
            await link.send(message)
        try:
            while len(got) < len(messages):  # the agent may send several frames in one message
                got.extend(decode_all(await asyncio.wait_for(link.recv(), 10)))
        except ConnectionClosed as closed:
            got.append(closed.rcvd.code if closed.rcvd else None)
    return got


def test_bad_frames_get_error_frames_and_the_channel_carries_on(agent_process: AgentProcess) -> None:
    answers = asyncio.run(
        exchange(
            agent_process,
            encode(CallFrame(1, "no_such_method", {})),
            encode(CallFrame(2, "socket", {"family": "AF_UNIX"})),
            encode(CallFrame(3, "bind", {"descriptor": 1, "host": "127.0.0.1", "port": "x"})),
            encode(CallFrame(4, "socket", {"socket_type": "SOCK_DGRAM"})),
        )
    )
    errors = {frame.seq: frame.error for frame in answers if isinstance(frame, ErrorFrame)}
    assert "not a method" in errors[1]["message"] and errors[1]["code"] == "bad_request"
    assert "family" in errors[2]["message"]
    assert "port" in errors[3]["message"]
    assert any(isinstance(frame, ResultFrame) and frame.seq == 4 for frame in answers)  # the channel carried on


@pytest.mark.parametrize("message, code", [(b"\xc1garbage", CLOSE_PROTOCOL), ("text", CLOSE_UNSUPPORTED)])
def test_unparsable_frames_close_the_channel_with_a_documented_code(
    agent_process: AgentProcess, message: bytes | str, code: int
) -> None:
    assert asyncio.run(exchange(agent_process, message)) == [code]
    with Agent(agent_process.url, token=agent_process.token, transport="channel") as agent:
        assert agent.info().protocol_version == 1  # and the agent serves on


@pytest.fixture
def short_grace(tmp_path: Path) -> Iterator[AgentProcess]:
    config = tmp_path / "agent.toml"
    config.write_text("[limits]\nchannel_grace = 0.5\n")
    with AgentProcess("--config", str(config), "--audit-log", str(tmp_path / "audit.log"), log_dir=str(tmp_path)) as p:
        yield p


def test_a_gone_clients_sockets_are_released_after_the_grace_time(short_grace: AgentProcess, tmp_path: Path) -> None:
    gone = Agent(short_grace.url, token=short_grace.token, transport="channel")
    descriptor = gone.Socket("AF_INET", "SOCK_DGRAM").descriptor
    gone.disconnect()  # as a killed notebook: the link is gone and does not come back
    with Agent(short_grace.url, token=short_grace.token, transport="http") as watcher:
        deadline = time.monotonic() + 20
        while watcher.call("is_open", descriptor=descriptor).open and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not watcher.call("is_open", descriptor=descriptor).open
    assert "channel's client was gone" in (tmp_path / "audit.log").read_text()


def test_a_client_that_comes_back_within_the_grace_time_keeps_its_sockets(agent_process: AgentProcess) -> None:
    with Agent(agent_process.url, token=agent_process.token, transport="channel") as agent:
        sock = agent.Socket("AF_INET", "SOCK_DGRAM")
        link = agent.transport._link
        assert link is not None
        link.sock.shutdown(socket.SHUT_RDWR)  # the link is cut under the client
        sock.bind("127.0.0.1", 0)  # the client relinks with its session and goes on
        assert agent.transport._link is not link
        assert sock.is_open()
        sock.close()


def test_the_blocking_client_works_where_an_event_loop_already_runs(agent_process: AgentProcess) -> None:
    """As in a Jupyter cell: the calling thread runs a loop of its own; the blocking client does not touch it."""

    async def cell() -> bytes:
        with Agent(agent_process.url, token=agent_process.token, transport="channel") as agent:
            server = agent.Socket("AF_INET", "SOCK_DGRAM")
            client = agent.Socket("AF_INET", "SOCK_DGRAM")
            server.bind("127.0.0.1", 0)
            client.connect(*server.local_address)
            client.send(b"from a running loop")
            received = server.receive(100, timeout=10)
            server.close()
            client.close()
            return bytes(received) if received else b""

    assert asyncio.run(cell()) == b"from a running loop"


def test_many_threads_share_one_blocking_channel(agent_process: AgentProcess) -> None:
    with Agent(agent_process.url, token=agent_process.token, transport="channel") as agent:

        def echo_through_the_agent(index: int) -> list[bytes]:
            with agent.Socket("AF_INET", "SOCK_DGRAM") as server, agent.Socket("AF_INET", "SOCK_DGRAM") as client:
                server.bind("127.0.0.1", 0)
                client.connect(*server.local_address)
                got = []
                for i in range(50):
                    client.send(f"{index}:{i}".encode())
                    received = server.receive(100, timeout=10)
                    got.append(bytes(received) if received else b"")
                return got

        workers = [Background(echo_through_the_agent, index) for index in range(16)]
        for index, worker in enumerate(workers):
            assert worker.join_result() == [f"{index}:{i}".encode() for i in range(50)]


def test_a_process_that_exits_with_sends_in_flight_flushes_them(agent_process: AgentProcess) -> None:
    script = (
        "import sys\n"
        "from engee_client import Agent\n"
        "agent = Agent(sys.argv[1], token=sys.argv[2], transport='channel')\n"
        "sock = agent.Socket()\n"
        "sock.connect('127.0.0.1', int(sys.argv[3]))\n"
        "for _ in range(8):\n"
        "    sock.send(bytes(1 << 20))\n"  # pipelined: returns before the agent has sent it; then the process ends
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        port = listener.getsockname()[1]

        def receive_all() -> int:
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(30)
                return len(recv_exactly(peer, 8 << 20))

        reader = Background(receive_all)
        done = subprocess.run(
            [sys.executable, "-c", script, agent_process.url, agent_process.token, str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and not done.stderr, done.stderr  # flushed at exit, nothing to warn about
        assert reader.join_result() == 8 << 20  # every pipelined send arrived


def test_callers_get_an_error_not_a_hang_when_the_agent_is_gone_for_good(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        process = AgentProcess(log_dir=str(tmp_path)).start()
        agent = Agent(process.url, token=process.token, transport="channel", retry_for=1)
        sock = agent.Socket()
        sock.connect(*listener.getsockname())
        peer, _ = listener.accept()  # and never reads: the sends wait on the agent
        with peer:
            for _ in range(16):
                sock.send(bytes(1 << 20))
            process.stop()
            with pytest.raises(AgentError):  # the unanswered sends: raised, not waited for forever
                Background(sock.close).join_result(30)
            with pytest.raises(AgentUnreachableError):
                Background(agent.sockets).join_result(30)
        agent.disconnect()


def test_disconnect_wakes_a_call_waiting_in_another_thread(agent_process: AgentProcess) -> None:
    agent = Agent(agent_process.url, token=agent_process.token, transport="channel")
    sock = agent.Socket("AF_INET", "SOCK_DGRAM")
    sock.bind("127.0.0.1", 0)
    waiting = Background(sock.receive, 100)
    time.sleep(0.3)
    agent.disconnect()
    with pytest.raises(AgentUnreachableError, match="closed"):
        waiting.join_result(30)


def test_a_send_refused_for_its_size_fails_the_later_sends_on_its_socket(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[limits]\nmax_body = 4096\n")
    with (
        AgentProcess("--config", str(config), log_dir=str(tmp_path)) as process,
        socket.create_server(("127.0.0.1", 0)) as listener,
        Agent(process.url, token=process.token, transport="channel") as agent,
    ):
        sock = agent.Socket()
        sock.connect(*listener.getsockname())
        peer, _ = listener.accept()
        with peer:
            sock.send(b"A" * 5000)  # pipelined: refused for its size on the agent
            sock.send(b"B")  # posted before the refusal came back: must not reach the peer alone
            with pytest.raises(ValueError, match="max_body"):
                sock.flush()
            sock.close()
            peer.settimeout(10)
            assert peer.recv(100) == b""  # nothing went through: no hole, no tail


def small_window(tmp_path: Path, grace: float = 180.0) -> AgentProcess:
    config = tmp_path / "agent.toml"
    config.write_text(f"[limits]\nread_ahead = 65536\nchannel_grace = {grace}\n")
    return AgentProcess("--config", str(config), log_dir=str(tmp_path))


@contextmanager
def windowed_peer(tmp_path: Path) -> Iterator[tuple[Socket, socket.socket]]:
    """A TCP socket on an agent with a 64 KiB read-ahead window, over the channel, and its peer here."""
    with (
        small_window(tmp_path) as process,
        Agent(process.url, token=process.token, transport="channel") as agent,
        connected_to_peer(agent) as pair,
    ):
        yield pair


def test_a_stream_reads_no_further_than_its_window_so_tcp_slows_the_peer(tmp_path: Path) -> None:
    payload = os.urandom(48 << 20)
    with windowed_peer(tmp_path) as (sock, peer):
        assert sock.receive(1, timeout=0.2) is None  # the stream starts; nothing has come yet
        peer.setblocking(False)
        pushed, deadline = 0, time.monotonic() + 3
        while pushed < len(payload) and time.monotonic() < deadline:
            try:
                pushed += peer.send(payload[pushed : pushed + (1 << 20)])
            except BlockingIOError:
                time.sleep(0.01)
        # The agent read at most its 64 KiB window: the rest fills the kernel's buffers, then the peer waits.
        assert pushed < len(payload) // 2, f"the peer pushed {pushed} bytes into a socket nobody read"
        peer.setblocking(True)
        writer = Background(peer.sendall, payload[pushed:])
        received = bytearray()
        while len(received) < len(payload):
            chunk = sock.receive(1 << 20, timeout=30)
            assert chunk is not None, f"the stream ended after {len(received)} bytes"
            received += bytes(chunk)
        writer.join_result()
    assert received == payload  # every byte once, in order


def test_what_a_stream_read_goes_back_to_its_socket_when_the_session_ends(tmp_path: Path) -> None:
    with (
        small_window(tmp_path, grace=0.3) as process,
        Agent(process.url, token=process.token, transport="http") as owner,
        socket.create_server(("127.0.0.1", 0)) as listener,
    ):
        sock = owner.Socket()  # opened over HTTP: it outlives the channel session that reads it
        sock.connect(*listener.getsockname())
        peer, _ = listener.accept()
        with peer:
            peer.sendall(b"0123456789" * 1000)
            reader = Agent(process.url, token=process.token, transport="channel")
            streamed = reader.Socket("AF_INET", "SOCK_STREAM", sock.descriptor)
            assert bytes(streamed.receive(5, timeout=10)) == b"01234"  # the stream read ahead the rest
            reader.disconnect()
            time.sleep(1)  # past the grace time: the session is released
            rest = bytearray()
            while len(rest) < 9995:
                chunk = sock.receive(100000, timeout=10)
                assert chunk is not None
                rest += bytes(chunk)
            assert rest == (b"0123456789" * 1000)[5:]  # nothing lost, nothing twice
            sock.close()


def test_a_long_line_after_short_ones_arrives_within_a_small_window(tmp_path: Path) -> None:
    """Short lines leave the window not granted again yet; a line almost as long as the window then needs more
    room than is left: the stream, stalled at its limit with no whole line, opens the window again."""
    lines = [b"a" * 2000, b"b" * 2000, b"c" * 2000, b"d" * 60000]
    with windowed_peer(tmp_path) as (sock, peer):
        peer.sendall(b"".join(line + b"\n" for line in lines))
        got = [sock.read_line(timeout=10, max_length=65536).encode() for _ in lines]
    assert got == lines


def test_fragments_pings_and_long_frames_reach_the_channel(agent_process: AgentProcess) -> None:
    """What a WebSocket client may send besides one small frame per message: a message in fragments, a ping in
    between (answered), frames with 16- and 64-bit lengths; every one is taken as the channel's frame."""

    async def talk() -> list[object]:
        headers = {"Authorization": f"Bearer {agent_process.token}"}
        async with websockets.connect(channel_url(agent_process, "fragments"), additional_headers=headers) as link:
            assert isinstance(decode_all(await link.recv())[0], HelloFrame)
            call = encode(CallFrame(1, "socket", {"family": "AF_INET", "socket_type": "SOCK_DGRAM"}))
            await link.send([call[:3], call[3:10], call[10:]])  # one message, three frames
            await asyncio.wait_for(await link.ping(b"still there?"), 10)
            await link.send(encode(CallFrame(2, "no_such_method", {"pad": b"x" * 300})))
            await link.send(encode(CallFrame(3, "no_such_method", {"pad": b"x" * 70000})))
            got: list[object] = []
            while len(got) < 3:
                got.extend(decode_all(await asyncio.wait_for(link.recv(), 10)))
            return got

    answers = {frame.seq: frame for frame in asyncio.run(talk())}  # type: ignore[attr-defined]
    assert isinstance(answers[1], ResultFrame) and answers[1].fields["descriptor"] > 0
    assert all(isinstance(answers[seq], ErrorFrame) for seq in (2, 3))
    assert "not a method" in answers[3].error["message"]


@pytest.mark.parametrize("piece", [1, 5, 1000])
def test_frames_cut_anywhere_by_tcp_reach_the_channel_whole_and_in_order(
    agent_process: AgentProcess, piece: int
) -> None:
    """TCP may hand the agent several frames in one read, or one frame over several reads, cut anywhere (its
    header too): every frame is taken whole, in order. 1000-byte pieces hold several frames each."""
    headers = {"Authorization": f"Bearer {agent_process.token}"}
    link, _ = Link.open(channel_url(agent_process, f"pieces-{piece}"), headers, None, 10)
    try:
        assert isinstance(decode_all((link.read(10) or [b""])[0])[0], HelloFrame)
        pads = [b"x" * size for size in (0, 120, 200, 70000, 3)]  # 7-, 16- and 64-bit lengths
        wire = b""
        for seq, pad in enumerate(pads, 1):
            data, mask = encode(CallFrame(seq, "is_open", {"descriptor": 1, "pad": pad})), os.urandom(4)
            wire += _binary_header(len(data), mask) + apply_mask(data, mask)
        for start in range(0, len(wire), piece):
            link.sock.sendall(wire[start : start + piece])
            if start < 200:
                time.sleep(0.002)  # so the first pieces arrive as reads of their own
        frames: list[Frame] = []
        while len(frames) < len(pads):
            frames.extend(frame for message in link.read(10) or [] for frame in decode_all(message))
        assert [getattr(frame, "seq", None) for frame in frames] == [1, 2, 3, 4, 5]
        assert all(isinstance(frame, ErrorFrame) and "pad" in frame.error["message"] for frame in frames)
    finally:
        link.close()
