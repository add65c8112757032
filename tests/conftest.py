"""Fixtures: a real agent process on loopback, clients for it, and plain-socket peers."""

import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from engee_client import Agent
from engee_client.sync.socket import Socket
from lab.process import AgentProcess


@pytest.fixture(scope="session")
def agent_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with AgentProcess(log_dir=str(tmp_path_factory.mktemp("agent"))) as process:
        yield process


TRANSPORTS = ("http", "channel")
"""Every client test runs over both: the same behaviour, whatever carries the calls."""


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The transport a client test runs over."""
    return str(request.param)


@pytest.fixture
def agent(agent_process: AgentProcess, transport: str) -> Iterator[Agent]:
    """A client of the shared agent; after the test the agent must still be serving."""
    client = Agent(agent_process.url, token=agent_process.token, transport=transport)
    yield client
    assert agent_process.alive(), f"the agent died:\n{agent_process.output()}"
    assert client.info().protocol_version == 1
    client.disconnect()


@pytest.fixture
def sockets_env(agent_process: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configure `Sockets`/`SOCKET` the way a notebook does: two environment variables."""
    monkeypatch.setenv("ENGEE_AGENT_URL", agent_process.url)
    monkeypatch.setenv("ENGEE_AGENT_TOKEN", agent_process.token)


@contextmanager
def connected_to_peer(agent: Agent) -> Iterator[tuple[Socket, socket.socket]]:
    """A TCP socket on `agent` connected to a plain peer socket here: (agent side, plain side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        client = agent.Socket()
        client.connect(*listener.getsockname())
        plain, _ = listener.accept()
    with plain, client:
        plain.settimeout(30)
        yield client, plain


@pytest.fixture
def connected(agent: Agent) -> Iterator[tuple[Socket, socket.socket]]:
    """An agent TCP socket connected to a plain peer socket: (agent side, plain side)."""
    with connected_to_peer(agent) as pair:
        yield pair


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, have = [], 0
    while have < size:
        chunk = sock.recv(min(1 << 20, size - have))
        if not chunk:
            break
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


class Background(threading.Thread):
    """Runs a function in a thread and keeps its result or exception for `join_result`."""

    def __init__(self, function, *args) -> None:
        super().__init__(daemon=True)
        self.function, self.args = function, args
        self.result = self.error = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.function(*self.args)
        except BaseException as exc:  # handed to the test thread
            self.error = exc

    def join_result(self, timeout: float = 60.0):
        self.join(timeout)
        assert not self.is_alive(), f"{self.function.__name__} did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def press_stop_after(seconds: float) -> threading.Timer:
    """The notebook's stop button: SIGINT to the main thread (the test's) `seconds` from now, as Jupyter sends it.
    It must reach Python's own handler, which raises KeyboardInterrupt: if a handler of something else was left
    installed, or the signal blocked, that is put right first and said on stderr."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        print(f"SIGINT had the handler {signal.getsignal(signal.SIGINT)!r}: Python's own put back", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.SIGINT in signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}):
        print("SIGINT was blocked in the main thread: unblocked", file=sys.stderr)
    timer = threading.Timer(seconds, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    return timer
