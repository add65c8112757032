"""TCP through the agent, with plain Python sockets as the other end."""

import os
import socket

from engee_client import Agent

from .conftest import Background, recv_exactly


def test_agent_as_server_plain_client(agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_STREAM") as server:
        server.bind("127.0.0.1", 0)
        server.listen(5)
        host, port = server.local_address
        assert host == "127.0.0.1" and port > 0
        with socket.create_connection((host, port), timeout=10) as plain:
            descriptor = server.accept()
            assert isinstance(descriptor, int) and descriptor > 0
            conn = agent.Socket("AF_INET", "SOCK_STREAM", descriptor)
            assert conn.peer_address == plain.getsockname()
            plain.sendall(b"ping")
            assert bytes(conn.receive(100)) == b"ping"
            assert conn.send(list(b"pong")) == 4
            assert recv_exactly(plain, 4) == b"pong"
            assert conn.is_open() and server.is_open(descriptor)
        assert conn.receive(100) is None  # the plain client closed: end of stream
        conn.close()
        assert not conn.is_open()
        assert not server.is_open(descriptor)
        conn.close()  # closing twice is fine


def test_agent_as_client_plain_server(agent: Agent) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        client = agent.Socket()
        assert client.connect(*listener.getsockname()) == 0
        plain, address = listener.accept()
        with plain:
            assert client.local_address == address
            assert client.send(b"hello") == 5
            assert recv_exactly(plain, 5) == b"hello"
            plain.sendall(b"world")
            assert bytes(client.receive(5)) == b"world"
        assert client.receive(5) is None
        client.close()


def test_eight_mebibytes_both_ways_byte_exact(agent: Agent) -> None:
    payload_out, payload_in = os.urandom(8 << 20), os.urandom(8 << 20)
    with socket.create_server(("127.0.0.1", 0)) as listener, agent.Socket() as client:
        listener.settimeout(30)
        client.connect(*listener.getsockname())
        plain, _ = listener.accept()
        with plain:
            plain.settimeout(60)
            reader = Background(recv_exactly, plain, len(payload_out))
            assert client.send(payload_out) == len(payload_out)
            assert reader.join_result() == payload_out

            writer = Background(plain.sendall, payload_in)
            received = bytearray()
            while len(received) < len(payload_in):
                chunk = client.receive(1 << 20)
                assert chunk is not None, f"stream ended after {len(received)} bytes"
                received += bytes(chunk)
            writer.join_result()
            assert bytes(received) == payload_in


def test_wrapping_a_descriptor_checks_family_and_type(agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as udp:
        wrapped = agent.Socket("AF_INET", "SOCK_DGRAM", udp.descriptor)
        assert wrapped.descriptor == udp.descriptor
        try:
            agent.Socket("AF_INET", "SOCK_STREAM", udp.descriptor)
        except ValueError as exc:
            assert "SOCK_DGRAM, not AF_INET/SOCK_STREAM" in str(exc)
        else:
            raise AssertionError("wrapping a UDP descriptor as TCP must fail")
