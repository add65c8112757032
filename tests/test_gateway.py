"""The relay: an agent links out to a gateway, notebooks reach it there by id, with the client unchanged."""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets.sync.client as ws_client
import websockets.sync.server as ws_server
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engee_client import Agent, AgentError, AgentOfflineError, AsyncAgent, AuthenticationError
from gateway.settings import SettingsError
from gateway.settings import load as load_gateway
from lab.process import AgentProcess, GatewayProcess
from protocol.channel import MAX_FRAME
from protocol.link import AGENT_HEADER, LINK_PATH

from .conftest import Background, connected_to_peer
from .faulty_proxy import FaultyProxy

KEYS = {"lab-7": "lab-7-key-0123456789", "lab-8": "lab-8-key-0123456789", "spare": "spare-key-0123456789"}
TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789"}
CONFIG = f"""
[agents.lab-7]
key = "{KEYS["lab-7"]}"
[agents.lab-8]
key_sha256 = "{__import__("hashlib").sha256(KEYS["lab-8"].encode()).hexdigest()}"
[agents.spare]
key = "{KEYS["spare"]}"
[users.alice]
token = "{TOKENS["alice"]}"
agents = ["lab-7", "lab-8", "spare"]
[users.bob]
token = "{TOKENS["bob"]}"
agents = ["lab-7", "spare"]
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("gateway")
    config = folder / "gateway.toml"
    config.write_text(CONFIG)
    with GatewayProcess(str(config), log_dir=str(folder)) as process:
        yield process


def linked_agent(gateway: GatewayProcess, agent_id: str, folder: Path, *args: str, user: str = "alice") -> AgentProcess:
    """An agent that links out to `gateway` as `agent_id`, started; linked once the gateway answers `user` for it."""
    process = AgentProcess(
        "--gateway", gateway.url, "--agent-id", agent_id, "--agent-key", KEYS[agent_id], *args, log_dir=str(folder)
    ).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reply = httpx.get(f"{gateway.url}/agents/{agent_id}/v1/agent", headers=_bearer(user))
        if reply.status_code == 200:
            return process
        time.sleep(0.1)
    process.stop()
    raise RuntimeError(f"agent {agent_id} did not link:\n{process.output()}")


@pytest.fixture(scope="module")
def lab(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = linked_agent(gateway, "lab-7", tmp_path_factory.mktemp("lab"))
    yield process
    process.stop()


def _bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


def through(gateway: GatewayProcess, transport: str, user: str = "alice", agent_id: str = "lab-7") -> Agent:
    return Agent(f"{gateway.url}/agents/{agent_id}", token=TOKENS[user], transport=transport, retry_for=2)


def test_the_seed_example_runs_through_the_gateway(gateway: GatewayProcess, lab: AgentProcess, transport: str) -> None:
    with through(gateway, transport) as agent:
        socket_1 = agent.Socket("AF_INET", "SOCK_DGRAM")
        socket_2 = agent.Socket("AF_INET", "SOCK_DGRAM")
        socket_1.bind("127.0.0.1", 0)
        socket_2.connect(*socket_1.local_address)
        for i in range(1, 201):
            byte_array = list(f"Message {i}".encode())
            socket_2.send(byte_array)
            assert socket_1.receive(1000).data == byte_array
        socket_1.close()
        socket_2.close()


def test_a_tcp_exchange_through_the_gateway(gateway: GatewayProcess, lab: AgentProcess, transport: str) -> None:
    with through(gateway, transport) as agent, connected_to_peer(agent) as (sock, peer):
        payload = bytes(range(256)) * 4096
        sock.send(payload)
        sock.flush()
        peer.settimeout(10)
        got = bytearray()
        while len(got) < len(payload):
            got += peer.recv(1 << 20)
        assert got == payload
        peer.sendall(b"answer")
        assert bytes(sock.receive(100, timeout=10)) == b"answer"


def test_lab_sockets_through_the_gateway(gateway: GatewayProcess, lab: AgentProcess, transport: str) -> None:
    """The lab-socket methods and pushed data go through a gateway as they do direct."""
    with (
        through(gateway, transport) as agent,
        connected_to_peer(agent) as (sock, peer),
        peer.makefile("rb") as commands,
    ):
        peer.settimeout(10)
        answerer = Background(lambda: commands.readline() and peer.sendall(b"ENGEE,SIM-1\r\nrest"))
        assert sock.query("*IDN?", terminator="\r\n", timeout=10) == "ENGEE,SIM-1"
        answerer.join_result()
        assert sock.receive_exactly(4, timeout=10) == b"rest"
        sock.set_option("TCP_NODELAY", True)
        assert sock.get_option("TCP_NODELAY") is True
        lines: list[str] = []
        three = threading.Event()
        sock.on_data(lambda _, line: lines.append(line) or len(lines) == 3 and three.set(), terminator="\n")
        peer.sendall(b"a\nb\nc\n")
        assert three.wait(30)
        sock.on_data(None)
        assert lines == ["a", "b", "c"]


def test_the_pc_owner_narrows_gateway_users_with_rules_of_their_own(gateway: GatewayProcess, tmp_path: Path) -> None:
    """[gateway_users] in the agent's config: only the users it names are served, each within the agent's policy
    and rules of their own; a user the gateway lets in but the agent does not name is refused."""
    config = tmp_path / "agent.toml"
    config.write_text('[gateway_users.bob]\nconnect_allow = ["127.0.0.1:1-1023"]\n')
    process = linked_agent(gateway, "spare", tmp_path, "--config", str(config), user="bob")
    try:
        for transport in ("http", "channel"):
            with pytest.raises(PermissionError, match="serves no gateway user 'alice'"):
                through(gateway, transport, "alice", "spare").Socket()
            with through(gateway, transport, "bob", "spare") as bob, socket.create_server(("127.0.0.1", 0)) as listener:
                with bob.Socket("AF_INET", "SOCK_DGRAM") as udp:
                    assert udp.connect("127.0.0.1", 9) == 0  # within bob's rules (no packet is sent)
                with bob.Socket() as tcp, pytest.raises(PermissionError, match="a rule for gateway:bob"):
                    tcp.connect(*listener.getsockname(), timeout=5)
    finally:
        process.stop()


def test_an_agent_that_is_not_linked_is_offline_at_once(gateway: GatewayProcess, transport: str) -> None:
    started = time.monotonic()
    with (
        pytest.raises(AgentOfflineError, match="'spare' is offline"),
        through(gateway, transport, agent_id="spare") as a,
    ):
        a.Socket()
    assert time.monotonic() - started < 5  # no retry window spent on an offline answer


def test_who_may_use_an_agent_and_an_unknown_agent_look_the_same(gateway: GatewayProcess, lab: AgentProcess) -> None:
    not_granted = httpx.post(f"{gateway.url}/agents/lab-8/v1/socket", json={}, headers=_bearer("bob"))
    unknown = httpx.post(f"{gateway.url}/agents/nope/v1/socket", json={}, headers=_bearer("bob"))
    assert not_granted.status_code == unknown.status_code == 404
    assert not_granted.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert not_granted.json()["error"]["message"].replace("lab-8", "X") == unknown.json()["error"]["message"].replace(
        "nope", "X"
    )
    with pytest.raises(AgentError, match="no agent .lab-8. for bob"):
        through(gateway, "http", user="bob", agent_id="lab-8").Socket()


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Bearer {KEYS['lab-7']}"}]
)
def test_a_call_needs_a_user_token_not_an_agent_key(
    gateway: GatewayProcess, lab: AgentProcess, headers: dict[str, str]
) -> None:
    reply = httpx.post(f"{gateway.url}/agents/lab-7/v1/socket", json={}, headers=headers)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "unauthorized"
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(
            f"{gateway.url.replace('http', 'ws')}/agents/lab-7/v1/channel?session=s", additional_headers=headers
        )
    assert refused.value.response.status_code == 401
    with pytest.raises(AuthenticationError):
        Agent(f"{gateway.url}/agents/lab-7", token="wrong-token-0123456789", transport="channel").Socket()


@pytest.mark.parametrize(
    "agent_id, key",
    [("lab-7", TOKENS["alice"]), ("lab-7", "wrong-key-0123456789"), ("nope", KEYS["lab-7"]), ("", KEYS["lab-7"])],
)
def test_a_link_needs_the_agents_own_key(gateway: GatewayProcess, lab: AgentProcess, agent_id: str, key: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(
            gateway.url.replace("http", "ws") + LINK_PATH,
            additional_headers={"Authorization": f"Bearer {key}", AGENT_HEADER: agent_id},
        )
    assert refused.value.response.status_code == 401
    with through(gateway, "http") as agent:  # and the real link was not replaced
        assert agent.Socket().is_open()


def test_users_of_one_agent_do_not_see_each_others_sockets(gateway: GatewayProcess, lab: AgentProcess) -> None:
    with through(gateway, "channel", "alice") as alice, through(gateway, "channel", "bob") as bob:
        mine = alice.Socket("AF_INET", "SOCK_DGRAM")
        assert not bob.call("is_open", descriptor=mine.descriptor).open
        assert mine.descriptor not in [info.descriptor for info in bob.sockets()]
        assert [info.owner for info in alice.sockets()] == ["gateway:alice"] * len(alice.sockets())
        with pytest.raises(OSError, match="not open"):
            bob.call("close", descriptor=mine.descriptor)
            bob.call("bind", descriptor=mine.descriptor, host="127.0.0.1", port=0)
        mine.close()


def test_an_agent_without_a_local_port_is_reached_through_the_gateway(gateway: GatewayProcess, tmp_path: Path) -> None:
    process = linked_agent(gateway, "lab-8", tmp_path, "--no-listen")
    try:
        assert "serving no local port" in process.output()
        with through(gateway, "channel", agent_id="lab-8") as agent:
            assert agent.Socket("AF_INET", "SOCK_DGRAM").is_open()
    finally:
        process.stop()


def test_garbage_on_a_link_closes_that_link_only(gateway: GatewayProcess, lab: AgentProcess) -> None:
    with ws_client.connect(
        gateway.url.replace("http", "ws") + LINK_PATH,
        additional_headers={"Authorization": f"Bearer {KEYS['spare']}", AGENT_HEADER: "spare"},
    ) as impostor:
        impostor.send(b"\xc1 not a frame")
        with pytest.raises(Exception, match="4000"):
            impostor.recv(timeout=10)
    with through(gateway, "http") as agent:
        assert agent.Socket().is_open()


@pytest.mark.parametrize("path", ["/agents/../v1/socket", "/agents/lab-7/../../v1/link", "/agents/%2e%2e/v1/agent"])
def test_path_tricks_reach_nothing(gateway: GatewayProcess, lab: AgentProcess, path: str) -> None:
    reply = httpx.post(gateway.url + path, json={}, headers=_bearer("alice"))
    assert reply.status_code in (404, 405) and reply.status_code != 500


@pytest.mark.parametrize("ticket", ["made-up", "a" * 400, "%00"])
def test_a_replica_ticket_nobody_gave_opens_nothing(gateway: GatewayProcess, lab: AgentProcess, ticket: str) -> None:
    """The endpoint replicas splice channels on takes only a ticket it handed out itself (over NATS): any other is
    refused with an error body, and the gateway serves on."""
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(f"{gateway.url.replace('http://', 'ws://')}/v1/replica/{ticket}", open_timeout=10)
    assert refused.value.response.status_code == 404
    assert b"no such relayed channel" in (refused.value.response.body or b"")
    with through(gateway, "http") as agent:
        assert agent.Socket().is_open()


def test_bad_advertise_urls_are_refused_at_start() -> None:
    for url in ("gw-b:8800", "http://gw-b:8800/some/path", "ftp://gw-b"):
        with pytest.raises(SettingsError, match="--advertise"):
            load_gateway(["--nats", "nats://127.0.0.1:4222", "--advertise", url])


def test_a_spin_past_its_bound_or_no_number_is_refused_at_start(tmp_path: Path) -> None:
    assert load_gateway(["--spin", "0"]).spin == 0.0  # never spins
    with pytest.raises(SettingsError, match="spin 1 is outside 0..0.01 seconds"):
        load_gateway(["--spin", "1"])
    config = tmp_path / "gateway.toml"
    config.write_text('spin = "fast"\n')
    with pytest.raises(SettingsError, match="spin 'fast' is not a number of seconds"):
        load_gateway(["--config", str(config)])


def test_a_link_that_drops_makes_calls_offline_and_comes_back(gateway: GatewayProcess, tmp_path: Path) -> None:
    process = linked_agent(gateway, "spare", tmp_path)
    with through(gateway, "http", agent_id="spare") as agent:
        sock = agent.Socket("AF_INET", "SOCK_DGRAM")
        process.stop()
        with pytest.raises(AgentOfflineError):
            sock.bind("127.0.0.1", 0)
        again = linked_agent(gateway, "spare", tmp_path)
        try:
            assert agent.Socket("AF_INET", "SOCK_DGRAM").is_open()
        finally:
            again.stop()


def test_a_call_the_link_dropped_is_sent_again_and_runs_once_when_the_agent_is_back(
    gateway: GatewayProcess, tmp_path: Path, transport: str
) -> None:
    """An accept waits on the agent when its link drops: the client sends it again under its call id until the agent
    is back, and it gets the one connection that came meanwhile (run twice, the second would wait for another)."""
    address = gateway.url.removeprefix("http://").rpartition(":")
    cable = FaultyProxy((address[0], int(address[2])), cut=0.0, seed=0)
    process = AgentProcess(
        "--gateway", cable.url, "--agent-id", "spare", f"--agent-key={KEYS['spare']}", log_dir=str(tmp_path)
    ).start()
    try:
        url = f"{gateway.url}/agents/spare"
        with Agent(url, token=TOKENS["alice"], transport=transport, retry_for=20) as agent:
            _wait_linked(gateway, "spare")
            listener = agent.Socket("AF_INET", "SOCK_STREAM")
            listener.bind("127.0.0.1", 0)
            listener.listen()
            accepting = Background(listener.accept, 30)
            time.sleep(1.0)  # the accept waits on the agent now
            cable.cut_all()  # the link drops with the accept on it
            peer = socket.create_connection(listener.local_address)  # the agent's socket is real: it is kept
            connection = agent.Socket("AF_INET", "SOCK_STREAM", accepting.join_result(40))
            connection.send(b"after the outage")
            assert peer.recv(100) == b"after the outage"
            peer.close()

            async def awaited() -> bytes:  # the same with the asyncio client, on the same agent
                async with AsyncAgent(url, token=TOKENS["alice"], transport=transport, retry_for=20) as aio:
                    server = await aio.Socket("AF_INET", "SOCK_STREAM", listener.descriptor)
                    accepting = asyncio.ensure_future(server.accept(timeout=30))
                    await asyncio.sleep(1.0)
                    cable.cut_all()
                    late = await asyncio.to_thread(socket.create_connection, listener.local_address)
                    accepted = await aio.Socket("AF_INET", "SOCK_STREAM", await accepting)
                    await accepted.send(b"async, after the outage")
                    data = await asyncio.to_thread(late.recv, 100)
                    late.close()
                    return data

            assert asyncio.run(awaited()) == b"async, after the outage"
    finally:
        process.stop()
        cable.close()


def _wait_linked(gateway: GatewayProcess, agent_id: str) -> None:
    deadline = time.monotonic() + 20
    while httpx.get(f"{gateway.url}/agents/{agent_id}/v1/agent", headers=_bearer("alice")).status_code != 200:
        assert time.monotonic() < deadline, f"agent {agent_id} did not link"
        time.sleep(0.1)


def test_the_status_pages_show_the_links(gateway: GatewayProcess, lab: AgentProcess) -> None:
    alices = httpx.get(f"{gateway.url}/v1/status", headers=_bearer("alice")).json()
    rows = {row["agent_id"]: row for row in alices["agents"]}
    assert rows["lab-7"]["online"] and not rows["spare"]["online"] and alices["user"] == "alice"
    assert rows["lab-7"]["rtt_ms"] > 0 and rows["spare"]["rtt_ms"] is None  # a health check over the link
    bobs = httpx.get(f"{gateway.url}/v1/status", headers=_bearer("bob")).json()
    assert [row["agent_id"] for row in bobs["agents"]] == ["lab-7", "spare"]  # only what bob may use
    assert httpx.get(f"{gateway.url}/v1/status").status_code == 401
    agents_own = httpx.get(f"{lab.url}/v1/status", headers={"Authorization": f"Bearer {lab.token}"}).json()
    assert agents_own["link"] == f"linked to {gateway.url}"


def test_an_oversized_channel_message_closes_that_channel_only(gateway: GatewayProcess, lab: AgentProcess) -> None:
    url = f"{gateway.url.replace('http', 'ws')}/agents/lab-7/v1/channel?session=big"
    with ws_client.connect(url, additional_headers=_bearer("alice"), max_size=None) as channel:
        channel.recv(timeout=10)  # the agent's hello
        channel.send(b"\x00" * (MAX_FRAME + 1))
        with pytest.raises(Exception, match="1009"):
            channel.recv(timeout=10)
    with through(gateway, "channel", "bob") as agent:  # the link, and everyone else on it, carry on
        assert agent.Socket().is_open()


@pytest.mark.parametrize("bad", [b"\xc1 not a frame", "a text frame"])
def test_an_agent_closes_a_link_whose_gateway_sends_what_no_gateway_sends(tmp_path: Path, bad: bytes | str) -> None:
    """A 'gateway' that answers the link with garbage, or with a text frame, gets the link closed with 4000 and a
    line in the agent's log; the agent lives on to link again."""
    closes: list[int | None] = []

    def fake_gateway(connection: ws_server.ServerConnection) -> None:
        connection.send(bad)
        try:
            connection.recv(timeout=10)
        except ConnectionClosed:
            closes.append(connection.close_code)

    with ws_server.serve(fake_gateway, "127.0.0.1", 0) as server:
        Background(server.serve_forever)
        url = f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        process = AgentProcess(
            "--gateway", url, "--agent-id", "lab-9", "--agent-key", "k" * 20, log_dir=str(tmp_path)
        ).start()
        try:
            deadline = time.monotonic() + 20
            while not closes and time.monotonic() < deadline:
                time.sleep(0.05)
            assert closes[:1] == [4000]
            assert "a bad frame from the gateway" in process.output()
            assert process.alive()
        finally:
            process.stop()
            server.shutdown()
