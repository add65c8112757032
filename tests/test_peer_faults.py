"""Faults caused by a real peer on loopback: resets, closes, unreachable ports, connects that never finish.

Each test makes the fault with plain Python sockets on 127.0.0.1, checks the exception (or None) the
user sees through the client, and then checks the agent still serves new sockets. Timeouts here are
hang guards, or the parameter under test; nothing asserts how long anything took.
"""

import errno
import select
import socket
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from engee_client import Agent

from .conftest import Background, free_port

HANG_GUARD = 30.0
"""Seconds a background call may take before the test fails instead of hanging."""


def reset_on_close(sock: socket.socket) -> None:
    """SO_LINGER on with a zero timeout: close() sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@contextmanager
def agent_connected_to_plain_peer(agent: Agent) -> Iterator[tuple]:
    """An agent TCP socket connected to a plain loopback peer: yields (agent socket, plain peer)."""
    with socket.create_server(("127.0.0.1", 0)) as listener, agent.Socket() as client:
        listener.settimeout(HANG_GUARD)
        client.connect(*listener.getsockname(), timeout=HANG_GUARD)
        peer, _ = listener.accept()
        with peer:
            yield client, peer


def assert_agent_still_works(agent: Agent) -> None:
    """A fresh pair of agent UDP sockets carries a datagram there and back."""
    with agent.Socket("AF_INET", "SOCK_DGRAM") as server, agent.Socket("AF_INET", "SOCK_DGRAM") as client:
        server.bind("127.0.0.1", 0)
        client.connect(*server.local_address)
        assert client.send(b"still there?") == len(b"still there?")
        request = server.receive(100, timeout=10)
        assert request is not None and bytes(request) == b"still there?"
        server.connect(*request.address)
        server.send(b"yes")
        reply = client.receive(100, timeout=10)
        assert reply is not None and bytes(reply) == b"yes"


def assert_names_the_call(error: OSError, method: str, descriptor: int, agent: Agent) -> None:
    assert f"{method} on descriptor {descriptor} (agent {agent.url})" in str(error)


def test_reset_by_the_peer_raises_connection_reset(agent: Agent) -> None:
    with agent_connected_to_plain_peer(agent) as (client, peer):
        reset_on_close(peer)
        peer.close()
        with pytest.raises(ConnectionResetError) as caught:
            client.receive(100, timeout=HANG_GUARD)  # a timeout would give None and fail the test
        assert caught.value.errno == errno.ECONNRESET
        assert_names_the_call(caught.value, "receive", client.descriptor, agent)
        assert client.is_open()  # the reset ends the connection, not the descriptor
    assert not client.is_open()
    assert_agent_still_works(agent)


def test_reset_of_an_accepted_connection(agent: Agent) -> None:
    """The same fault on the agent's server side: a plain client resets a connection the agent accepted."""
    with agent.Socket() as server:
        server.bind("127.0.0.1", 0)
        server.listen(1)
        with socket.create_connection(server.local_address, timeout=HANG_GUARD) as plain:
            conn = agent.Socket("AF_INET", "SOCK_STREAM", server.accept(timeout=HANG_GUARD))
            reset_on_close(plain)
        with conn:
            with pytest.raises(ConnectionResetError) as caught:
                conn.receive(100, timeout=HANG_GUARD)
            assert caught.value.errno == errno.ECONNRESET
            assert_names_the_call(caught.value, "receive", conn.descriptor, agent)
    assert_agent_still_works(agent)


def test_orderly_close_by_the_peer_gives_none(agent: Agent) -> None:
    with agent_connected_to_plain_peer(agent) as (client, peer):
        peer.sendall(b"last words")
        peer.close()
        # No timeout here: a timeout also answers None, so only end of stream may end these calls.
        first = Background(client.receive, 100).join_result(HANG_GUARD)
        assert first is not None and bytes(first) == b"last words"
        assert Background(client.receive, 100).join_result(HANG_GUARD) is None
        assert Background(client.receive, 100).join_result(HANG_GUARD) is None
        assert client.is_open()
    assert_agent_still_works(agent)


def _connect_stays_pending(probe: socket.socket, address: tuple, wait: float) -> bool:
    """Start a non-blocking connect; True when it neither completed nor failed within `wait` seconds."""
    probe.setblocking(False)
    code = probe.connect_ex(address)
    if code == 0:
        return False
    assert code in (errno.EINPROGRESS, errno.EAGAIN), f"unexpected connect result {errno.errorcode.get(code, code)}"
    _, writable, _ = select.select([], [probe], [], wait)
    if not writable:
        return True
    error = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    assert error == 0, f"a probe connect to the full listener failed: {errno.errorcode.get(error, error)}"
    return False


@contextmanager
def listener_that_drops_syns() -> Iterator[tuple[str, int]]:
    """A loopback listener with a full accept queue: a further connect stays pending (its SYNs are dropped).

    Linux drops a SYN when the accept queue is full, whatever tcp_syncookies says; with backlog 0
    the queue holds one connection. Nothing ever accepts, so the queue stays full.
    """
    with ExitStack() as stack:
        for backlog in (0, 1):
            listener = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            listener.bind(("127.0.0.1", 0))
            listener.listen(backlog)
            address = listener.getsockname()
            for _ in range(16):  # bounded: the queue is full after one or two connections
                probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                if _connect_stays_pending(probe, address, wait=1.0):
                    yield address
                    return
        try:
            with open("/proc/sys/net/ipv4/tcp_syncookies") as file:
                syncookies = file.read().strip()
        except OSError:
            syncookies = "unknown"
        pytest.skip(
            "every loopback connect to a listener with a full accept queue completed (backlogs 0 and 1, "
            f"16 connects each; tcp_syncookies={syncookies}), so no connect that cannot complete "
            "can be made here"
        )


def test_connect_that_cannot_complete_raises_timeout_after_the_callers_timeout(agent: Agent) -> None:
    with listener_that_drops_syns() as address:
        client = agent.Socket()
        try:
            attempt = Background(client.connect, *address, 1.0)
            with pytest.raises(TimeoutError) as caught:
                attempt.join_result(HANG_GUARD)
            assert_names_the_call(caught.value, "connect", client.descriptor, agent)
            assert client.is_open()
        finally:
            client.close()  # also stops the connect the agent still has under way
        assert not client.is_open()
    assert_agent_still_works(agent)


def test_icmp_port_unreachable_on_connected_udp_raises_connection_refused(agent: Agent) -> None:
    port = free_port(socket.SOCK_DGRAM)  # nothing listens there: loopback answers ICMP port unreachable
    with agent.Socket("AF_INET", "SOCK_DGRAM") as client:
        client.connect("127.0.0.1", port)
        assert client.send(b"anyone?") == len(b"anyone?")
        with pytest.raises(ConnectionRefusedError) as caught:
            client.receive(100, timeout=5)
        assert caught.value.errno == errno.ECONNREFUSED
        assert_names_the_call(caught.value, "receive", client.descriptor, agent)
        assert client.is_open()
    assert_agent_still_works(agent)


def _send_until_it_fails(client, chunk: bytes, attempts: int) -> OSError | None:
    for _ in range(attempts):
        try:
            client.send(chunk)
        except OSError as exc:
            return exc
    return None


@pytest.mark.parametrize("how", ["close", "reset"])
def test_send_to_a_peer_that_went_away_raises(agent: Agent, how: str) -> None:
    with agent_connected_to_plain_peer(agent) as (client, peer):
        if how == "reset":
            reset_on_close(peer)
        peer.close()
        error = Background(_send_until_it_fails, client, bytes(64 << 10), 200).join_result(HANG_GUARD)
        assert error is not None, "200 sends of 64 KiB to a closed peer all succeeded"
        assert isinstance(error, (BrokenPipeError, ConnectionResetError)), f"{type(error).__name__}: {error}"
        assert error.errno in (errno.EPIPE, errno.ECONNRESET)
        assert_names_the_call(error, "send", client.descriptor, agent)
        assert client.is_open()
    assert_agent_still_works(agent)
