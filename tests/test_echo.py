"""The echo peers (`python -m lab.echo`) as a real process, checked with plain sockets on loopback."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.process import ChildProcess

from .conftest import recv_exactly

HOST = "127.0.0.1"
TIMEOUT = 10.0


class Echo(ChildProcess):
    """A running `python -m lab.echo --udp 0 --tcp 0` and the ports it printed."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(
            [sys.executable, "-m", "lab.echo", "--host", HOST, "--udp", "0", "--tcp", "0"],
            r"echo udp listening on 127\.0\.0\.1:(\d+)\s+echo tcp listening on 127\.0\.0\.1:(\d+)",
            log_dir=log_dir,
        )
        udp, tcp = self.start(TIMEOUT).match.groups()
        self.ports = {"udp": int(udp), "tcp": int(tcp)}


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[Echo]:
    server = Echo(str(tmp_path))
    yield server
    server.stop()


def tcp_client(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=TIMEOUT)


def exchange(sock: socket.socket, payload: bytes) -> bytes:
    """Send `payload` (from a thread, so neither side's buffers can deadlock) and read it all back."""
    sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)), daemon=True)
    sender.start()
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    sender.join(TIMEOUT)
    return bytes(received)


def test_udp_datagram_comes_back_byte_exact(echo: Echo) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        payload = bytes(range(256)) * 4
        sock.sendto(payload, (HOST, echo.ports["udp"]))
        data, sender = sock.recvfrom(65536)
        assert data == payload
        assert sender == (HOST, echo.ports["udp"])


def test_tcp_echoes_one_mebibyte_byte_exact(echo: Echo) -> None:
    payload = os.urandom(1024 * 1024)
    with tcp_client(echo.ports["tcp"]) as sock:
        assert exchange(sock, payload) == payload


def test_two_tcp_clients_at_once_each_get_their_own_bytes(echo: Echo) -> None:
    with tcp_client(echo.ports["tcp"]) as first, tcp_client(echo.ports["tcp"]) as second:
        first.sendall(b"first client")
        second.sendall(b"second client")
        assert recv_exactly(second, 13) == b"second client"
        assert recv_exactly(first, 12) == b"first client"
        payloads = {first: os.urandom(200_000), second: os.urandom(200_000)}
        results: dict[socket.socket, bytes] = {}
        threads = [
            threading.Thread(target=lambda s=s: results.__setitem__(s, exchange(s, payloads[s]))) for s in payloads
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 2)
        assert results == payloads


def test_sigterm_exits_zero(echo: Echo) -> None:
    with tcp_client(echo.ports["tcp"]) as sock:  # an open connection must not keep it alive
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        assert echo.stop() == 0
