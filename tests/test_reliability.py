"""Nothing lost or duplicated: call ids, retries through a link that cuts, interrupted calls."""

import os
import secrets
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from engee_client import Agent, ProtocolError
from lab.process import AgentProcess

from .conftest import Background, press_stop_after, recv_exactly
from .faulty_proxy import FaultyProxy


@pytest.fixture
def proxy(agent_process: AgentProcess) -> Iterator[FaultyProxy]:
    upstream = urlsplit(agent_process.url)
    proxy = FaultyProxy((upstream.hostname, upstream.port), cut=0.03, seed=7)
    yield proxy
    proxy.close()


@pytest.fixture
def flaky(proxy: FaultyProxy, agent_process: AgentProcess, transport: str) -> Iterator[Agent]:
    """A client whose every connection to the agent may be cut, mid-request or mid-response."""
    with Agent(proxy.url, token=agent_process.token, retry_for=60, transport=transport) as agent:
        yield agent


def test_megabytes_into_receive_through_a_cutting_link(flaky: Agent, proxy: FaultyProxy) -> None:
    """Again until the link was cut at least once: the channel streams a receive loop in few big frames."""
    for _ in range(20):
        payload = os.urandom(2 << 20)
        with socket.create_server(("127.0.0.1", 0)) as listener, flaky.Socket() as sock:
            sock.connect(*listener.getsockname())
            peer, _ = listener.accept()
            with peer:
                writer = Background(peer.sendall, payload)
                received = bytearray()
                while len(received) < len(payload):
                    chunk = sock.receive(4096)
                    assert chunk is not None, f"stream ended after {len(received)} bytes"
                    received += bytes(chunk)
                writer.join_result()
        assert bytes(received) == payload
        if proxy.cuts:
            break
    assert proxy.cuts > 0


def test_send_in_small_pieces_through_a_cutting_link(flaky: Agent, proxy: FaultyProxy) -> None:
    """Again until the link was cut at least once: the channel carries pipelined sends in few big reads."""
    for _ in range(20):
        payload = os.urandom(2 << 20)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            sock = flaky.Socket()
            sock.connect(*listener.getsockname())
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(60)
                reader = Background(recv_exactly, peer, len(payload) + 1)  # +1: a duplicate would show
                for start in range(0, len(payload), 4096):
                    assert sock.send(payload[start : start + 4096]) == len(payload[start : start + 4096])
                sock.close()
                assert reader.join_result() == payload
        if proxy.cuts:
            break
    assert proxy.cuts > 0


def test_thousands_of_datagrams_through_a_cutting_link(flaky: Agent, proxy: FaultyProxy) -> None:
    with flaky.Socket("AF_INET", "SOCK_DGRAM") as server, flaky.Socket("AF_INET", "SOCK_DGRAM") as client:
        server.bind("127.0.0.1", 0)
        client.connect(*server.local_address)
        for i in range(2000):
            client.send(f"datagram {i}".encode())
            assert bytes(server.receive(100)) == f"datagram {i}".encode()
        assert server.receive(100, timeout=0.2) is None  # nothing duplicated
    assert proxy.cuts > 0


def test_interrupted_receive_loses_nothing(agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as server, agent.Socket("AF_INET", "SOCK_DGRAM") as client:
        server.bind("127.0.0.1", 0)
        client.connect(*server.local_address)
        press_stop_after(0.5)
        with pytest.raises(KeyboardInterrupt):
            server.receive(100)  # the notebook's stop button, while the agent waits for data
        # The agent's wait is still on: this datagram is taken by the interrupted call ...
        client.send(b"taken while nobody listened")
        # ... and the next receive collects that call's answer instead of losing it.
        assert bytes(server.receive(100, timeout=10)) == b"taken while nobody listened"
        assert server.receive(100, timeout=0.2) is None


@pytest.fixture
def http(agent_process: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent_process.url, headers={"Authorization": f"Bearer {agent_process.token}"}) as client:
        yield client


def test_a_repeated_call_id_runs_once(http: httpx.Client, agent: Agent) -> None:
    first = http.post("/v1/socket", json={}, headers={"X-Engee-Call": "s1.1"}).json()
    again = http.post("/v1/socket", json={}, headers={"X-Engee-Call": "s1.1"}).json()
    assert first == again  # one socket, not two
    fresh = http.post("/v1/socket", json={}, headers={"X-Engee-Call": "s1.2"}).json()
    assert fresh["descriptor"] != first["descriptor"]
    for descriptor in (first["descriptor"], fresh["descriptor"]):
        http.post("/v1/close", json={"descriptor": descriptor})


def test_a_retry_joins_a_running_call_and_acknowledged_answers_are_forgotten(http: httpx.Client, agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as server, agent.Socket("AF_INET", "SOCK_DGRAM") as client:
        server.bind("127.0.0.1", 0)
        client.connect(*server.local_address)
        call = {"descriptor": server.descriptor, "bufsize": 100, "wait": 10}
        session = secrets.token_hex(4)  # each run its own session: the agent is shared
        headers = {"X-Engee-Call": f"{session}.1"}
        waiting = [Background(lambda: http.post("/v1/receive", json=call, headers=headers).json()) for _ in range(2)]
        client.send(b"once")
        answers = [background.join_result() for background in waiting]
        assert answers[0] == answers[1] and answers[0]["data"] == "b25jZQ=="  # both got the one datagram
        client.send(b"twice")
        assert http.post("/v1/receive", json=call, headers=headers).json() == answers[0]  # the same answer again
        acknowledged = {"X-Engee-Call": f"{session}.2 done=1"}
        assert http.post("/v1/receive", json=call, headers=acknowledged).json()["data"] == "dHdpY2U="
        call["wait"] = 0
        assert http.post("/v1/receive", json=call, headers=headers).json()["pending"] is True  # s2.1 was forgotten


@pytest.mark.parametrize("value", ["no-dot", "s.x", "s.1 done=-1", "s.1 done=", "s." + "9" * 40])
def test_bad_call_ids_are_refused(http: httpx.Client, agent: Agent, value: str) -> None:
    reply = http.post("/v1/socket", json={}, headers={"X-Engee-Call": value})
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("kind", ["SOCK_STREAM", "SOCK_DGRAM"])
def test_after_an_interrupted_receive_the_next_keeps_its_own_bufsize(agent: Agent, kind: str) -> None:
    with (
        socket.create_server(("127.0.0.1", 0))
        if kind == "SOCK_STREAM"
        else socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as local,
        agent.Socket("AF_INET", kind) as sock,
    ):
        if kind == "SOCK_STREAM":
            sock.connect(*local.getsockname())
            peer, _ = local.accept()
        else:
            local.bind(("127.0.0.1", 0))
            sock.bind("127.0.0.1", 0)
            local.connect(sock.local_address)
            peer = local
        press_stop_after(0.5)
        with pytest.raises(KeyboardInterrupt):
            sock.receive(1000)  # the agent waits for data; the interrupt leaves that wait running
        peer.send(bytes(range(20)))  # taken by the interrupted call's wait, or still in the kernel
        first = sock.receive(10, timeout=10)
        assert first is not None and bytes(first) == bytes(range(10))  # its own bufsize, not the old call's
        if kind == "SOCK_STREAM":  # the rest stays readable, in order
            second = sock.receive(1000, timeout=10)
            assert second is not None and bytes(second) == bytes(range(10, 20))
        else:  # a datagram is delivered once, cut to bufsize, and says so
            assert first.truncated
        assert sock.receive(1000, timeout=0.2) is None
        if kind == "SOCK_STREAM":
            peer.close()


def test_a_datagram_longer_than_bufsize_is_cut_and_says_so(agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as server, agent.Socket("AF_INET", "SOCK_DGRAM") as client:
        server.bind("127.0.0.1", 0)
        client.connect(*server.local_address)
        client.send(b"0123456789")
        client.send(b"01234")
        cut, whole = server.receive(5, timeout=10), server.receive(5, timeout=10)
        assert cut is not None and bytes(cut) == b"01234" and cut.truncated
        assert whole is not None and bytes(whole) == b"01234" and not whole.truncated


def test_a_call_id_names_one_call(http: httpx.Client, agent: Agent) -> None:
    call_id = f"{secrets.token_hex(4)}.1"  # each run its own session: the agent is shared
    created = http.post("/v1/socket", json={}, headers={"X-Engee-Call": call_id})
    descriptor = created.json()["descriptor"]
    for method, body in [("close", {"descriptor": descriptor}), ("socket", {"socket_type": "SOCK_DGRAM"})]:
        reused = http.post(f"/v1/{method}", json=body, headers={"X-Engee-Call": call_id})
        assert reused.status_code == 409, reused.text  # refused, never answered with the socket call's body
        assert reused.json()["error"]["code"] == "call_id_reused" and call_id in reused.json()["error"]["message"]
    assert http.post("/v1/is_open", json={"descriptor": descriptor}).json()["open"]  # the close did not run
    assert http.post("/v1/socket", json={}, headers={"X-Engee-Call": call_id}).json() == created.json()  # a true retry
    http.post("/v1/close", json={"descriptor": descriptor})


def test_the_client_reports_a_reused_call_id(agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as sock:
        seq = agent.calls.begin().seq
        agent.call("is_open", seq=seq, descriptor=sock.descriptor)
        with pytest.raises(ProtocolError, match="a call id names one call"):
            agent.call("close", seq=seq, descriptor=sock.descriptor)
        assert sock.is_open()
