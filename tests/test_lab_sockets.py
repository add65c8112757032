"""Lab sockets beyond the seed: datagrams to any address, options, half-close, framed reads and typed values.

Every test runs over both transports; the peers are plain Python sockets and the simulated
instrument, on loopback. (Broadcast and multicast run in network namespaces: tests/test_lan.py.)
"""

import math
import socket
import struct
import sys
import time

import pytest

from engee_client import Agent, IncompleteReadError
from lab.process import ChildProcess

from .conftest import Background, connected_to_peer, press_stop_after, recv_exactly


@pytest.fixture(scope="module")
def instrument():
    """The simulated SCPI instrument, sending every answer a few bytes at a time."""
    with ChildProcess(
        [sys.executable, "-m", "lab.instrument", "--tcp", "0", "--udp", "0", "--fragment"],
        r"instrument tcp listening on 127\.0\.0\.1:(\d+)",
    ) as child:
        yield int(child.match.group(1))


@pytest.mark.parametrize("family, host", [("AF_INET", "127.0.0.1"), ("AF_INET6", "::1")])
def test_one_unconnected_udp_socket_answers_three_peers(agent: Agent, family: str, host: str) -> None:
    kind = socket.AF_INET if family == "AF_INET" else socket.AF_INET6
    peers = [socket.socket(kind, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        with agent.Socket(family, "SOCK_DGRAM") as station:
            station.bind(host, 0)
            for index, peer in enumerate(peers):
                peer.settimeout(10)
                peer.bind((host, 0))
                assert station.send_to(f"hello {index}".encode(), host, peer.getsockname()[1]) == 7
            for index, peer in enumerate(peers):
                data, sender = peer.recvfrom(100)
                assert data == f"hello {index}".encode()
                assert sender[:2] == station.local_address
                peer.sendto(f"answer {index}".encode(), sender)
            heard = {}
            for _ in peers:
                result = station.receive(100, timeout=10)
                heard[result.address] = bytes(result)
                station.send_to(b"thanks " + bytes(result)[-1:], *result.address)  # answered at its own address
            assert heard == {peer.getsockname()[:2]: f"answer {i}".encode() for i, peer in enumerate(peers)}
            for index, peer in enumerate(peers):
                assert peer.recvfrom(100)[0] == f"thanks {index}".encode()
    finally:
        for peer in peers:
            peer.close()


def test_datagrams_of_65507_bytes_both_ways(agent: Agent) -> None:
    big = bytes(range(256)) * 255 + bytes(227)
    assert len(big) == 65507
    with agent.Socket("AF_INET", "SOCK_DGRAM") as station, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.settimeout(10)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        peer.bind(("127.0.0.1", 0))
        station.bind("127.0.0.1", 0)
        station.send_to(big, *peer.getsockname())
        data, sender = peer.recvfrom(70000)
        assert data == big
        peer.sendto(big[::-1], sender)
        result = station.receive(65535, timeout=10)
        assert bytes(result) == big[::-1] and not result.truncated


def test_send_to_on_a_tcp_socket_is_a_clear_error(agent: Agent) -> None:
    with agent.Socket() as tcp, pytest.raises(OSError, match="send_to needs a SOCK_DGRAM socket"):
        tcp.send_to(b"x", "127.0.0.1", 9)
        tcp.flush()  # on the channel a send_to is pipelined: its failure comes with the next call


def test_query_and_lines_against_a_scpi_instrument(agent: Agent, instrument: int) -> None:
    with agent.Socket() as device:
        device.connect("127.0.0.1", instrument, timeout=10)
        assert device.query("*IDN?", terminator="\r\n", timeout=10) == "ENGEE,SIM-1,0001,1.0"
        assert math.isfinite(float(device.query("MEAS:VOLT?", terminator="\r\n", timeout=10)))
        device.write_line("*IDN?", terminator="\r\n")
        assert device.read_line(terminator=b"\r\n", timeout=10) == "ENGEE,SIM-1,0001,1.0"
        assert device.query("FOO", terminator="\r\n", timeout=10) == "ERR unknown command"
        # A binary block: "#<digits><length>", then float32 big-endian samples, then CR LF.
        device.write_line("CURV? 1000", terminator="\r\n")
        assert device.receive_exactly(2, timeout=10) == b"#4"
        assert int(device.receive_exactly(4, timeout=10)) == 4000
        values = device.read_values(1000, "float32", byte_order="big", timeout=10)
        assert values == [i / 4 for i in range(1000)]
        assert device.read_line(terminator="\r\n", timeout=10) == ""


def test_bytes_after_the_terminator_stay_for_the_next_read(connected) -> None:
    client, plain = connected
    plain.sendall(b"first\nsecond\x00\xffthird\r\nrest")
    assert client.read_line() == "first"
    assert client.read_line(terminator=b"\x00\xff") == "second"
    assert client.read_line(terminator="\r\n") == "third"
    assert bytes(client.receive(100, timeout=10)) == b"rest"


def test_a_line_cut_into_many_segments(connected) -> None:
    client, plain = connected
    line = "x" * 5000

    def dribble() -> None:
        data = (line + "\n").encode()
        for start in range(0, len(data), 7):
            plain.sendall(data[start : start + 7])
            time.sleep(0.0005)

    writer = Background(dribble)
    assert client.read_line(timeout=30) == line
    writer.join_result()


def test_a_line_over_max_length_is_an_error_and_its_bytes_stay(connected) -> None:
    client, plain = connected
    plain.sendall(b"0123456789abcdefghij")
    with pytest.raises(ValueError, match="over max_length"):
        client.read_line(max_length=10, timeout=10)
    assert client.receive_exactly(20, timeout=10) == b"0123456789abcdefghij"


def test_receive_exactly_timeout_says_how_many_came_and_keeps_them(connected) -> None:
    client, plain = connected
    plain.sendall(b"abc")
    with pytest.raises(TimeoutError, match="with 3 bytes read so far"):
        client.receive_exactly(5, timeout=0.5)
    plain.sendall(b"de")
    assert client.receive_exactly(5, timeout=10) == b"abcde"


def test_receive_exactly_at_the_end_of_the_stream_keeps_the_bytes(connected) -> None:
    client, plain = connected
    plain.sendall(b"abc")
    plain.shutdown(socket.SHUT_WR)
    with pytest.raises(IncompleteReadError, match="after 3 bytes of the 5 asked for"):
        client.receive_exactly(5, timeout=10)
    with pytest.raises(IncompleteReadError, match="no terminator"):
        client.read_line(timeout=10)
    assert bytes(client.receive(10, timeout=10)) == b"abc"
    assert client.receive(10, timeout=10) is None


STRUCT_CODES = dict(
    zip(
        ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"),
        "bBhHiIqQfd",
        strict=True,
    )
)


@pytest.mark.parametrize(
    "datatype, values",
    [
        ("int8", [-128, 0, 127]),
        ("uint8", [0, 200, 255]),
        ("int16", [-32768, 1, 32767]),
        ("uint16", [0, 65535]),
        ("int32", [-(2**31), 2**31 - 1]),
        ("uint32", [0, 2**32 - 1]),
        ("int64", [-(2**63), 2**63 - 1]),
        ("uint64", [0, 2**64 - 1]),
        ("float32", [0.5, -1.25, 2.0**100]),
        ("float64", [math.pi, -1e300]),
    ],
)
@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_values_written_and_read_as_each_datatype(connected, datatype: str, values: list, byte_order: str) -> None:
    client, plain = connected
    code = {"little": "<", "big": ">"}[byte_order] + STRUCT_CODES[datatype]
    size = struct.calcsize(code)
    assert client.write_values(values, datatype, byte_order) == size * len(values)
    wire = recv_exactly(plain, size * len(values))
    assert [struct.unpack(code, wire[i : i + size])[0] for i in range(0, len(wire), size)] == values
    plain.sendall(wire)
    assert client.read_values(len(values), datatype, byte_order, timeout=10) == values


def test_bytes_available_counts_what_waits(connected) -> None:
    client, plain = connected
    assert client.bytes_available() == 0
    plain.sendall(b"0123456789")
    deadline = time.monotonic() + 10
    while client.bytes_available() < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.bytes_available() == 10
    assert bytes(client.receive(4, timeout=10)) == b"0123"
    assert client.bytes_available() == 6


def test_shutdown_write_lets_the_peer_answer_after_eof(agent: Agent) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, agent.Socket() as client:
        listener.settimeout(10)

        def peer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                got = b""
                while chunk := conn.recv(65536):  # until the notebook's half-close
                    got += chunk
                conn.sendall(f"got {len(got)} bytes".encode())

        server = Background(peer)
        client.connect(*listener.getsockname(), timeout=10)
        client.send(b"x" * 100_000)
        client.shutdown("SHUT_WR")
        assert client.read_line(terminator="s", timeout=10) == "got 100000 byte"
        server.join_result()
        with pytest.raises(OSError):
            client.send(b"more")
            client.flush()


def test_options_by_name(agent: Agent) -> None:
    with agent.Socket() as tcp, agent.Socket("AF_INET", "SOCK_DGRAM") as udp, agent.Socket("AF_INET6") as tcp6:
        tcp.set_option("TCP_NODELAY", True)
        assert tcp.get_option("TCP_NODELAY") is True
        tcp.set_option("SO_KEEPALIVE", 1)
        assert tcp.get_option("SO_KEEPALIVE") is True
        tcp.set_option("SO_RCVBUF", 65536)
        assert tcp.get_option("SO_RCVBUF") >= 65536  # the kernel doubles it for its bookkeeping
        udp.set_option("SO_BROADCAST", True)
        assert udp.get_option("SO_BROADCAST") is True
        udp.set_option("IP_MULTICAST_TTL", 4)
        assert udp.get_option("IP_MULTICAST_TTL") == 4
        udp.set_option("IP_MULTICAST_LOOP", False)
        assert udp.get_option("IP_MULTICAST_LOOP") is False
        udp.set_option("SO_REUSEADDR", True)
        udp.set_option("IP_TTL", 17)
        assert udp.get_option("IP_TTL") == 17
        tcp6.set_option("IPV6_V6ONLY", True)
        assert tcp6.get_option("IPV6_V6ONLY") is True
        tcp6.set_option("IP_TTL", 9)  # its IPv6 twin, IPV6_UNICAST_HOPS
        assert tcp6.get_option("IPV6_UNICAST_HOPS") == 9


def test_bad_input_is_a_clear_error(agent: Agent) -> None:
    before = {info.descriptor for info in agent.sockets()}
    with agent.Socket() as tcp, agent.Socket("AF_INET", "SOCK_DGRAM") as udp:
        with pytest.raises(ValueError, match="name"):
            tcp.set_option("SO_BINDTODEVICE", 1)
        with pytest.raises(ValueError, match="name"):
            tcp.get_option("IP_HDRINCL")
        with pytest.raises((TypeError, ValueError)):
            tcp.set_option("TCP_NODELAY", "yes")
        with pytest.raises(ValueError, match="within 1..255"):
            udp.set_option("IP_TTL", 1000)
        with pytest.raises(ValueError, match="flag"):
            udp.set_option("SO_BROADCAST", 7)
        with pytest.raises(OSError, match="SOCK_STREAM"):
            udp.set_option("TCP_NODELAY", True)
        with pytest.raises(OSError, match="AF_INET6"):
            udp.set_option("IPV6_V6ONLY", True)
        with pytest.raises(ValueError, match="not a multicast group"):
            udp.join_group("10.0.0.1")
        with pytest.raises(ValueError, match="not an IP address"):
            udp.join_group("nonsense")
        with pytest.raises(ValueError, match="count must be >= 0"):
            tcp.read_values(-1)
        with pytest.raises(ValueError, match="datatype 'float16'"):
            tcp.read_values(4, "float16")
        with pytest.raises(ValueError, match="byte_order"):
            tcp.write_values([1], "uint8", "middle")
        with pytest.raises(ValueError, match="does not fit in uint8"):
            tcp.write_values([1, 256], "uint8")
        with pytest.raises(TypeError, match="values\\[1\\] must be an int"):
            tcp.write_values([1, 2.5], "int16")
        with pytest.raises(ValueError):
            tcp.receive_exactly(-3)
        with pytest.raises(ValueError, match="over the most one read takes"):
            tcp.receive_exactly(1 << 40)
        with pytest.raises(ValueError, match="max_bufsize|less than or equal"):
            tcp.receive_exactly(1 << 40, progress=False)
        with pytest.raises(ValueError, match="terminator"):
            tcp.read_line(terminator="")
        with pytest.raises(ValueError, match="cannot be encoded as ascii"):
            tcp.write_line("Grüße")
        with pytest.raises(ValueError, match="SHUT_"):
            tcp.shutdown("SHUT_SIDEWAYS")
        with pytest.raises(OSError):
            udp.read_line(timeout=1)
    assert {info.descriptor for info in agent.sockets()} <= before  # nothing left open by the errors


def test_the_destination_policy_fences_send_to_and_groups(tmp_path) -> None:
    from lab.process import AgentProcess

    with AgentProcess("--allow-connect", "127.0.0.0/8", log_dir=str(tmp_path)) as fenced:
        for transport in ("http", "channel"):
            with (
                Agent(fenced.url, token=fenced.token, transport=transport) as agent,
                agent.Socket("AF_INET", "SOCK_DGRAM") as udp,
            ):
                with pytest.raises(PermissionError, match="192.0.2.1"):
                    udp.send_to(b"x", "192.0.2.1", 9)  # TEST-NET-1: refused before anything is sent
                    udp.flush()
                with pytest.raises(PermissionError, match="239.1.2.3"):
                    udp.join_group("239.1.2.3")


def test_an_interrupted_read_line_loses_nothing(connected) -> None:
    """The stop button while read_line waits: the line its call took on the agent comes back, terminator
    and all, before what followed it."""
    client, plain = connected
    press_stop_after(0.5)
    with pytest.raises(KeyboardInterrupt):
        client.read_line(terminator="\r\n")
    plain.sendall(b"first\r\nsecond\r\n")  # taken by the interrupted call, if the agent still waits
    time.sleep(0.2)
    assert client.read_line(terminator="\r\n", timeout=10) == "first"
    assert client.read_line(terminator="\r\n", timeout=10) == "second"


def test_a_framed_read_with_no_time_to_wait_reads_what_is_there(agent_process) -> None:
    with (
        Agent(agent_process.url, token=agent_process.token, transport="http") as agent,
        connected_to_peer(agent) as (client, plain),
    ):
        plain.sendall(b"hello\nworld")
        deadline = time.monotonic() + 10
        while client.bytes_available() < 11 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.read_line(timeout=0) == "hello"
        assert client.receive_exactly(5, timeout=0) == b"world"


def test_an_interrupted_query_leaves_flush_and_close_working(connected) -> None:
    """The stop button while a query waits for its answer: the socket's next calls, flush and close go on."""
    client, plain = connected
    timer = press_stop_after(0.5)
    with pytest.raises(KeyboardInterrupt):
        client.query("*IDN?", timeout=30)  # the peer never answers
    timer.join()
    assert recv_exactly(plain, 6) == b"*IDN?\n"  # the question went out once
    client.write_line("again")
    client.flush()
    assert recv_exactly(plain, 6) == b"again\n"
    client.close()
    assert client.closed


def test_shutdown_takes_the_socket_modules_numbers_too(connected) -> None:
    client, plain = connected
    client.shutdown(socket.SHUT_WR)
    assert plain.recv(10) == b""  # the peer reads the end of the stream
    plain.sendall(b"still here")
    assert client.receive_exactly(10, timeout=10) == b"still here"
