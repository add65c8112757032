"""The channel against a real agent: who may open one, bad frames, and sockets released when a client is gone."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engee_client import Agent
from lab.process import AgentProcess
from protocol.channel import (
    CHANNEL_PATH,
    CLOSE_PROTOCOL,
    CLOSE_UNSUPPORTED,
    CallFrame,
    ErrorFrame,
    HelloFrame,
    ResultFrame,
    decode,
    encode,
)


def channel_url(process: AgentProcess, session: str = "test-session") -> str:
    return process.url.replace("http://", "ws://") + f"{CHANNEL_PATH}?session={session}"


async def upgrade(process: AgentProcess, **headers: str) -> int:
    """The HTTP status the agent answers an upgrade with (101 when it opens the channel)."""
    try:
        async with websockets.connect(channel_url(process), additional_headers=headers) as link:
            decode(await link.recv())
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def test_only_the_bearer_token_opens_a_channel(agent_process: AgentProcess) -> None:
    token = agent_process.token
    assert asyncio.run(upgrade(agent_process, Authorization=f"Bearer {token}")) == 101
    assert asyncio.run(upgrade(agent_process)) == 401
    assert asyncio.run(upgrade(agent_process, Authorization="Bearer wrong")) == 401
    # A web page's WebSocket carries the status page's cookie, never an Authorization header: refused.
    assert asyncio.run(upgrade(agent_process, Cookie=f"engee_token={token}")) == 401
    assert asyncio.run(upgrade(agent_process, Authorization=f"Bearer {token}", Origin="https://evil.example")) == 403
    assert asyncio.run(upgrade(agent_process, Authorization=f"Bearer {token}", Host="evil.example")) == 403


async def exchange(process: AgentProcess, *messages: bytes | str) -> list[object]:
    """Send `messages` on a fresh channel; what comes back (frames, then the close code if it closes)."""
    got: list[object] = []
    headers = {"Authorization": f"Bearer {process.token}"}
    async with websockets.connect(channel_url(process), additional_headers=headers) as link:
        assert isinstance(decode(await link.recv()), HelloFrame)
        for message in messages:
            await link.send(message)
        try:
            while len(got) < len(messages):
                got.append(decode(await asyncio.wait_for(link.recv(), 10)))
        except ConnectionClosed as closed:
            got.append(closed.rcvd.code if closed.rcvd else None)
    return got


def test_bad_frames_get_error_frames_and_the_channel_carries_on(agent_process: AgentProcess) -> None:
    answers = asyncio.run(
        exchange(
            agent_process,
            encode(CallFrame(1, "no_such_method", {})),
            encode(CallFrame(2, "socket", {"family": "AF_UNIX"})),
            encode(CallFrame(3, "bind", {"descriptor": 1, "host": "127.0.0.1", "port": "x"})),
            encode(CallFrame(4, "socket", {"socket_type": "SOCK_DGRAM"})),
        )
    )
    errors = {frame.seq: frame.error for frame in answers if isinstance(frame, ErrorFrame)}
    assert "not a method" in errors[1]["message"] and errors[1]["code"] == "bad_request"
    assert "family" in errors[2]["message"]
    assert "port" in errors[3]["message"]
    assert any(isinstance(frame, ResultFrame) and frame.seq == 4 for frame in answers)  # the channel carried on


@pytest.mark.parametrize("message, code", [(b"\xc1garbage", CLOSE_PROTOCOL), ("text", CLOSE_UNSUPPORTED)])
def test_unparsable_frames_close_the_channel_with_a_documented_code(
    agent_process: AgentProcess, message: bytes | str, code: int
) -> None:
    assert asyncio.run(exchange(agent_process, message)) == [code]
    with Agent(agent_process.url, token=agent_process.token, transport="channel") as agent:
        assert agent.info().protocol_version == 1  # and the agent serves on


@pytest.fixture
def short_grace(tmp_path: Path) -> Iterator[AgentProcess]:
    config = tmp_path / "agent.toml"
    config.write_text("[limits]\nchannel_grace = 0.5\n")
    with AgentProcess("--config", str(config), "--audit-log", str(tmp_path / "audit.log"), log_dir=str(tmp_path)) as p:
        yield p


def test_a_gone_clients_sockets_are_released_after_the_grace_time(short_grace: AgentProcess, tmp_path: Path) -> None:
    gone = Agent(short_grace.url, token=short_grace.token, transport="channel")
    descriptor = gone.Socket("AF_INET", "SOCK_DGRAM").descriptor
    gone.disconnect()  # as a killed notebook: the link is gone and does not come back
    with Agent(short_grace.url, token=short_grace.token, transport="http") as watcher:
        deadline = time.monotonic() + 20
        while watcher.call("is_open", descriptor=descriptor).open and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not watcher.call("is_open", descriptor=descriptor).open
    assert "channel's client was gone" in (tmp_path / "audit.log").read_text()


def test_a_client_that_comes_back_within_the_grace_time_keeps_its_sockets(agent_process: AgentProcess) -> None:
    with Agent(agent_process.url, token=agent_process.token, transport="channel") as agent:
        sock = agent.Socket("AF_INET", "SOCK_DGRAM")
        link = agent.transport.channel._link
        assert link is not None
        asyncio.run_coroutine_threadsafe(link.close(), agent.transport._loop).result(10)
        sock.bind("127.0.0.1", 0)  # the client relinks with its session and goes on
        assert sock.is_open()
        sock.close()
