"""Gateway replicas on a real nats-server: the agent linked to replica A, the notebook talking to replica B."""

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest

from engee_client import Agent, AgentOfflineError
from lab.process import AgentProcess, GatewayProcess, NatsServer
from protocol.link import Open, encode

from .conftest import Background

KEY, TOKEN = "lab-key-0123456789abcdef", "user-token-0123456789ab"
CONFIG = f'[agents.lab]\nkey = "{KEY}"\n[agents.idle]\nkey = "{KEY}"\n[users.ann]\ntoken = "{TOKEN}"\nagents = ["lab", "idle"]\n'


@contextmanager
def two_replicas(
    folder: Path, ping: str, agent_knows_both: bool = True, *agent_args: str
) -> Iterator[tuple[GatewayProcess, GatewayProcess, AgentProcess]]:
    """A nats-server, replicas A and B on it, and an agent linked to A (knowing B too, or not)."""
    if shutil.which("nats-server") is None:
        pytest.skip("no nats-server (Debian's nats-server package) to run replicas on")
    config = folder / "gateway.toml"
    config.write_text(CONFIG)
    with NatsServer(log_dir=str(folder)) as bus:
        a = GatewayProcess(str(config), "--nats", bus.url, "--link-ping", ping, log_dir=str(folder)).start()
        b = GatewayProcess(str(config), "--nats", bus.url, "--link-ping", ping, log_dir=str(folder)).start()
        gateways = ("--gateway", a.url, "--gateway", b.url) if agent_knows_both else ("--gateway", a.url)
        agent = AgentProcess(
            *gateways, "--agent-id", "lab", "--agent-key", KEY, *agent_args, log_dir=str(folder)
        ).start()
        try:
            _wait_online(a, "lab")
            yield a, b, agent
        finally:
            agent.stop()
            a.stop()
            b.stop()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess, AgentProcess]]:
    with two_replicas(tmp_path, "1") as started:
        yield started


def _wait_online(gateway: GatewayProcess, agent_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = httpx.get(f"{gateway.url}/agents/{agent_id}/v1/agent", headers={"Authorization": f"Bearer {TOKEN}"})
        if reply.status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"agent {agent_id} is not reachable through {gateway.url}")


def _seed(agent: Agent, messages: int = 200) -> None:
    socket_1 = agent.Socket("AF_INET", "SOCK_DGRAM")
    socket_2 = agent.Socket("AF_INET", "SOCK_DGRAM")
    socket_1.bind("127.0.0.1", 0)
    socket_2.connect(*socket_1.local_address)
    for i in range(1, messages + 1):
        byte_array = list(f"Message {i}".encode())
        socket_2.send(byte_array)
        assert socket_1.receive(1000).data == byte_array
    socket_1.close()
    socket_2.close()


def test_a_notebook_on_one_replica_reaches_an_agent_linked_to_another(
    replicas: tuple[GatewayProcess, GatewayProcess, AgentProcess], transport: str
) -> None:
    a, b, _ = replicas
    assert "agent lab linked" in a.output() and "agent lab linked" not in b.output()
    with Agent(f"{b.url}/agents/lab", token=TOKEN, transport=transport, retry_for=5) as agent:
        _seed(agent)
    with pytest.raises(AgentOfflineError):  # no replica holds its link: "no responders"
        Agent(f"{b.url}/agents/idle", token=TOKEN, transport=transport, retry_for=2).Socket()


def test_every_replicas_status_shows_the_agent_wherever_its_link_is(
    replicas: tuple[GatewayProcess, GatewayProcess, AgentProcess],
) -> None:
    a, b, _ = replicas
    pages = {
        name: {row["agent_id"]: row for row in _status(gateway)["agents"]} for name, gateway in (("a", a), ("b", b))
    }
    here, there = pages["a"]["lab"], pages["b"]["lab"]
    assert here["online"] and here["here"] and there["online"] and not there["here"]
    assert here["since"] == there["since"] and here["since"] > time.time() - 120  # A's link, as A knows it
    assert here["rtt_ms"] is not None and there["rtt_ms"] is not None  # B's goes by way of A
    assert (
        pages["a"]["idle"]
        == pages["b"]["idle"]
        == {"agent_id": "idle", "online": False, "since": None, "calls": 0, "rtt_ms": None, "here": False}
    )


def _status(gateway: GatewayProcess) -> dict:
    reply = httpx.get(f"{gateway.url}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_when_the_replica_holding_the_link_dies_the_agent_relinks_and_calls_go_on(
    replicas: tuple[GatewayProcess, GatewayProcess, AgentProcess],
) -> None:
    a, b, _ = replicas
    with Agent(f"{b.url}/agents/lab", token=TOKEN, transport="channel", retry_for=30) as agent:
        sock = agent.Socket("AF_INET", "SOCK_DGRAM")
        sock.bind("127.0.0.1", 0)
        a.stop()  # the replica holding the link: the agent links to B next
        deadline = time.monotonic() + 60
        while True:
            try:
                _seed(agent, 20)
                break
            except AgentOfflineError:
                assert time.monotonic() < deadline, "the calls did not come back"
                time.sleep(0.2)
        assert sock.is_open()  # the socket from before the outage is still there
    assert "agent lab linked" in b.output()


def test_a_request_on_nats_for_a_user_without_the_grant_is_not_answered(
    replicas: tuple[GatewayProcess, GatewayProcess, AgentProcess], tmp_path: Path
) -> None:
    """NATS carries no token: the replica holding the link checks the user's grant again."""
    _, _, agent = replicas
    bus_url = re.search(r"--nats (\S+)", " ".join(replicas[0].argv))
    assert bus_url is not None

    async def ask() -> None:
        client = await nats.connect(bus_url.group(1))
        try:
            opened = Open(0, "mallory", {"kind": "http", "method": "POST", "path": "/v1/socket", "body": b"{}"})
            with pytest.raises(nats.errors.TimeoutError):
                await client.request("engee.agent.lab", encode(opened), timeout=2)
        finally:
            await client.close()

    asyncio.run(ask())
    with Agent(agent.url, token=agent.token, transport="http") as owner:
        assert "gateway:mallory" not in {info.owner for info in owner.sockets(everyone=True)}


def test_a_channel_through_a_replica_that_dies_ends_instead_of_hanging(tmp_path: Path) -> None:
    """The agent knows only replica A; the notebook is on B. A is killed (no goodbye on NATS): B's relayed
    channel misses A's beats and ends, so the notebook hears that the agent is offline, not silence."""
    with two_replicas(tmp_path, "0.5", agent_knows_both=False) as (a, b, _):
        notebook = Agent(f"{b.url}/agents/lab", token=TOKEN, transport="channel", retry_for=2)
        sock = notebook.Socket("AF_INET", "SOCK_DGRAM")
        os.kill(a.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(AgentOfflineError):
            Background(sock.bind, "127.0.0.1", 0).join_result(60)
        assert time.monotonic() - started < 30
        notebook.disconnect()


KILLED = """
import sys, time
from engee_client import Agent
lab = Agent(sys.argv[1], token=sys.argv[2], transport="channel")
device = lab.Socket("AF_INET", "SOCK_DGRAM")
device.bind("127.0.0.1", 0)
print(device.descriptor, flush=True)
time.sleep(60)
"""


def test_a_notebook_killed_mid_channel_on_either_replica_leaves_no_socket_open(tmp_path: Path) -> None:
    """No close frame from a killed notebook: its channel still ends on the agent, and after the link grace the
    sockets it opened are closed, whichever replica it went through."""
    config = tmp_path / "agent.toml"
    config.write_text("[limits]\nlink_grace = 1\n")
    with two_replicas(tmp_path, "1", True, "--config", str(config)) as (a, b, _):
        for replica in (a, b):
            url = f"{replica.url}/agents/lab"
            notebook = subprocess.Popen([sys.executable, "-c", KILLED, url, TOKEN], stdout=subprocess.PIPE, text=True)
            assert notebook.stdout is not None
            descriptor = int(notebook.stdout.readline())
            notebook.send_signal(signal.SIGKILL)
            notebook.wait(10)
            with Agent(url, token=TOKEN, transport="http") as watcher:
                deadline = time.monotonic() + 20
                while _still_open(watcher, descriptor):
                    assert time.monotonic() < deadline, f"through {replica.url}: socket {descriptor} is still open"
                    time.sleep(0.2)


def _still_open(watcher: Agent, descriptor: int) -> bool:
    try:
        return watcher.Socket("AF_INET", "SOCK_DGRAM", descriptor).is_open()
    except OSError:  # EBADF: not open
        return False
