"""Every failure gives the documented exception, a message a user can act on, and a live agent."""

import errno
import socket

import pytest

from engee_client import Agent, AgentUnreachableError, AuthenticationError
from lab.process import AgentProcess

from .conftest import free_port


def test_connect_refused(agent: Agent) -> None:
    port = free_port(socket.SOCK_STREAM)
    with agent.Socket() as client, pytest.raises(ConnectionRefusedError) as caught:
        client.connect("127.0.0.1", port)
    message = str(caught.value)
    assert caught.value.errno == errno.ECONNREFUSED
    assert f"connect on descriptor {client.descriptor}" in message and agent.url in message


def test_unknown_descriptor(agent: Agent) -> None:
    with pytest.raises(OSError) as caught:
        agent.Socket("AF_INET", "SOCK_STREAM", 10**9)
    assert caught.value.errno == errno.EBADF
    assert "descriptor 1000000000 is not open" in str(caught.value)


def test_operations_on_a_closed_socket(agent: Agent) -> None:
    sock = agent.Socket("AF_INET", "SOCK_DGRAM")
    sock.close()
    assert sock.closed and not sock.is_open()
    for call in (lambda: sock.bind("127.0.0.1", 0), lambda: sock.send(b"x"), lambda: sock.receive(10, timeout=0)):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == errno.EBADF
        assert f"descriptor {sock.descriptor} is not open" in str(caught.value)


@pytest.mark.parametrize(
    "args, error, text",
    [
        (("AF_UNIX", "SOCK_STREAM"), ValueError, "family"),
        (("AF_INET", "SOCK_RAW"), ValueError, "socket_type"),
        ((2, "SOCK_STREAM"), ValueError, "family"),
    ],
)
def test_invalid_family_and_type(agent: Agent, args: tuple, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        agent.Socket(*args)


def test_bad_arguments_fail_before_any_network_call(agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as sock:
        with pytest.raises(ValueError, match="port: .*65535"):
            sock.bind("127.0.0.1", 70000)
        with pytest.raises(ValueError, match="port"):
            sock.connect("127.0.0.1", -1)
        with pytest.raises(TypeError, match="port"):
            sock.bind("127.0.0.1", "8888")
        for bufsize in (0, -1):
            with pytest.raises(ValueError, match="bufsize"):
                sock.receive(bufsize)
        for message, error in (("text", TypeError), (3.5, TypeError), ([1, "a"], TypeError), ([300], ValueError)):
            with pytest.raises(error, match="message"):
                sock.send(message)
        with pytest.raises(ValueError, match="timeout"):
            sock.receive(10, timeout=-1)


def test_listen_on_udp(agent: Agent) -> None:
    with (
        agent.Socket("AF_INET", "SOCK_DGRAM") as sock,
        pytest.raises(OSError, match="listen needs a SOCK_STREAM socket") as caught,
    ):
        sock.listen(1)
    assert caught.value.errno == errno.EOPNOTSUPP


def test_accept_on_a_socket_that_is_not_listening(agent: Agent) -> None:
    with agent.Socket() as sock:
        sock.bind("127.0.0.1", 0)
        with pytest.raises(OSError, match="call listen first") as caught:
            sock.accept()
    assert caught.value.errno == errno.EINVAL


def test_unresolvable_host(agent: Agent) -> None:
    with agent.Socket() as sock, pytest.raises(OSError, match="cannot resolve 'no-such-host.invalid'"):
        sock.connect("no-such-host.invalid", 80)


def test_receive_timeout_gives_none_and_loses_nothing(agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as server, agent.Socket("AF_INET", "SOCK_DGRAM") as client:
        server.bind("127.0.0.1", 0)
        assert server.receive(100, timeout=0.2) is None
        client.connect(*server.local_address)
        client.send(b"after the timeout")
        assert bytes(server.receive(100, timeout=10)) == b"after the timeout"


def test_accept_timeout_raises_timeout_error(agent: Agent) -> None:
    with agent.Socket() as server:
        server.bind("127.0.0.1", 0)
        server.listen(1)
        with pytest.raises(TimeoutError, match="accept on descriptor"):
            server.accept(timeout=0.2)


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_and_wrong_token(
    agent_process: AgentProcess, agent: Agent, token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENGEE_AGENT_TOKEN", raising=False)
    if token is None:
        with pytest.raises(Exception, match="no token"):
            Agent(agent_process.url)
        return
    with pytest.raises(AuthenticationError, match="wrong token.*Authorization: Bearer"):
        Agent(agent_process.url, token=token).Socket()


def test_unreachable_agent() -> None:
    dead = Agent(f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}", token="t", retry_for=0.5)
    with pytest.raises(AgentUnreachableError, match="cannot reach the agent"):
        dead.Socket()
