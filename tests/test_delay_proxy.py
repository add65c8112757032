"""bench.delay.DelayProxy on loopback, with plain sockets at both ends: bytes, order, delay, EOF, resets."""

import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from bench.delay import DelayProxy

from .conftest import Background, recv_exactly


def serve_one(handle: Callable[[socket.socket], object]) -> tuple[tuple[str, int], Background]:
    """A loopback listener whose one connection `handle` serves in a thread; its address and the thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def run() -> object:
        with listener, listener.accept()[0] as conn:
            conn.settimeout(30)
            return handle(conn)

    return listener.getsockname()[:2], Background(run)


def echo(conn: socket.socket) -> int:
    """Echo until EOF, then close; the number of bytes echoed."""
    total = 0
    while data := conn.recv(1 << 16):
        conn.sendall(data)
        total += len(data)
    return total


def read_all(conn: socket.socket) -> bytes:
    chunks = []
    while data := conn.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


@contextmanager
def echo_behind(delay: float) -> Iterator[tuple[DelayProxy, Background]]:
    """A proxy with `delay` in front of a one-connection echo server, and the server's thread."""
    address, server = serve_one(echo)
    with DelayProxy(address, delay=delay) as proxy:
        yield proxy, server


def connect(proxy: DelayProxy) -> socket.socket:
    conn = socket.create_connection(proxy.address, timeout=30)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


@pytest.mark.parametrize("window", [64 << 20, 1 << 16], ids=["default-window", "64KiB-window"])
def test_bytes_arrive_intact_and_in_order_both_ways(window: int) -> None:
    payload = os.urandom(4 << 20)
    address, server = serve_one(echo)
    with DelayProxy(address, delay=0.01, window=window) as proxy, connect(proxy) as conn:
        sender = Background(lambda: (conn.sendall(payload), conn.shutdown(socket.SHUT_WR)))
        echoed = read_all(conn)
        sender.join_result()
        assert server.join_result() == len(payload)
    assert echoed == payload


def test_a_round_trip_takes_at_least_two_delays() -> None:
    with echo_behind(0.05) as (proxy, _), connect(proxy) as conn:
        start = time.monotonic()
        conn.sendall(b"ping")
        assert recv_exactly(conn, 4) == b"ping"
        assert time.monotonic() - start >= 0.1


def test_messages_in_flight_together_are_not_delayed_one_after_another() -> None:
    messages = [f"message {i:03}|".encode() for i in range(100)]
    with echo_behind(0.05) as (proxy, _), connect(proxy) as conn:
        start = time.monotonic()
        for message in messages:
            conn.sendall(message)
        received = recv_exactly(conn, sum(map(len, messages)))
        elapsed = time.monotonic() - start
    assert received == b"".join(messages)
    assert 0.1 <= elapsed < 10 * 0.05  # stop-and-wait would take 100 round trips


def test_eof_goes_through_each_way_and_the_other_direction_keeps_flowing() -> None:
    def reply_after_eof(conn: socket.socket) -> bytes:
        request = read_all(conn)  # returns once the client's EOF came through the proxy
        conn.sendall(b"reply to " + request)
        return request

    address, server = serve_one(reply_after_eof)
    with DelayProxy(address, delay=0.02) as proxy, connect(proxy) as conn:
        conn.sendall(b"request")
        conn.shutdown(socket.SHUT_WR)
        assert server.join_result() == b"request"
        assert read_all(conn) == b"reply to request"  # then b"": the server's close came through as EOF


def test_a_reset_resets_the_other_side() -> None:
    def reset(conn: socket.socket) -> None:
        assert recv_exactly(conn, 5) == b"hello"
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    address, server = serve_one(reset)
    with DelayProxy(address, delay=0.01) as proxy, connect(proxy) as conn:
        conn.sendall(b"hello")
        server.join_result()
        with pytest.raises(ConnectionResetError):
            conn.recv(100)


def test_an_upstream_that_refuses_resets_the_client() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = unused.getsockname()[:2]  # bound, not listening: connections are refused
        # the reset may come so soon that connect() itself sees it
        with DelayProxy(address, delay=0.01) as proxy, pytest.raises(ConnectionResetError), connect(proxy) as conn:
            conn.recv(100)


def test_close_resets_open_connections_and_can_be_repeated() -> None:
    with echo_behind(0.01) as (proxy, server), connect(proxy) as conn:
        conn.sendall(b"ping")
        assert recv_exactly(conn, 4) == b"ping"
        proxy.close()
        with pytest.raises(ConnectionResetError):
            conn.recv(100)
    proxy.close()
    with pytest.raises(ConnectionResetError):
        server.join_result()


def test_url_and_address() -> None:
    with DelayProxy(("127.0.0.1", 9), delay=0) as proxy:
        assert proxy.address == ("127.0.0.1", proxy.port) and proxy.port > 0
        assert proxy.url_for("http") == f"http://127.0.0.1:{proxy.port}"
        assert (proxy.upstream, proxy.delay, proxy.window) == (("127.0.0.1", 9), 0, 64 << 20)


@pytest.mark.parametrize("host", ["127.0.0.2", "::1"])
def test_any_loopback_upstream_is_accepted(host: str) -> None:
    with DelayProxy((host, 9), delay=0) as proxy:
        assert proxy.upstream == (host, 9)


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "192.168.1.1", "::", "::ffff:127.0.0.1", "localhost", ""])
def test_a_non_loopback_upstream_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        DelayProxy((host, 80), delay=0)


@pytest.mark.parametrize(("delay", "window"), [(-0.001, 1), (0, 0)])
def test_a_negative_delay_or_an_empty_window_is_refused(delay: float, window: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        DelayProxy(("127.0.0.1", 80), delay=delay, window=window)
