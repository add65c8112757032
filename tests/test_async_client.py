"""The asyncio client against a real agent: the sync API as awaitables, concurrency, errors, cancellation.

Each test runs its own event loop with `asyncio.run` and an `AsyncAgent` of its own; the plain
peers are non-blocking Python sockets driven by the same loop (`loop.sock_*`).
"""

import asyncio
import errno
import inspect
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

from engee_client import (
    Agent,
    AgentUnreachableError,
    AsyncAgent,
    AsyncSocket,
    AuthenticationError,
    ResultUIntList,
    Socket,
)
from lab.process import AgentProcess
from protocol.models import SocketInfo

from .conftest import free_port
from .faulty_proxy import FaultyProxy

T = TypeVar("T")


def run(
    agent_process: AgentProcess, test: Callable[[AsyncAgent], Awaitable[T]], transport: str, limit: float = 120.0
) -> T:
    """Run `test(agent)` in a fresh event loop with an AsyncAgent of the shared agent; the agent must live on."""

    async def main() -> T:
        async with AsyncAgent(agent_process.url, token=agent_process.token, transport=transport) as agent:
            return await asyncio.wait_for(test(agent), limit)

    result = asyncio.run(main())
    assert agent_process.alive(), f"the agent died:\n{agent_process.output()}"
    return result


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    loop, data = asyncio.get_running_loop(), bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, min(1 << 20, size - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def udp_pair(agent: AsyncAgent) -> tuple[AsyncSocket, AsyncSocket]:
    """A bound UDP server and a client connected to it."""
    server, client = await asyncio.gather(agent.Socket("AF_INET", "SOCK_DGRAM"), agent.Socket("AF_INET", "SOCK_DGRAM"))
    await server.bind("127.0.0.1", 0)
    await client.connect(*server.local_address)
    return server, client


def test_the_same_api_as_the_sync_client() -> None:
    for name in ("bind", "listen", "accept", "connect", "send", "receive", "is_open", "close"):
        blocking, awaited = getattr(Socket, name), getattr(AsyncSocket, name)
        assert inspect.iscoroutinefunction(awaited), name
        assert inspect.signature(awaited) == inspect.signature(blocking), name
        assert awaited.__doc__ == blocking.__doc__, name
        assert inspect.iscoroutinefunction(getattr(AsyncAgent, name)), name  # the function style, awaited
        assert not inspect.iscoroutinefunction(getattr(Agent, name)), name
    for name in ("Socket", "sockets", "info", "call", "disconnect"):
        blocking, awaited = getattr(Agent, name), getattr(AsyncAgent, name)
        assert inspect.iscoroutinefunction(awaited), name
        assert inspect.signature(awaited).parameters == inspect.signature(blocking).parameters, name
    # The same parameters, but for the transport, which is awaited in one and blocking in the other.
    awaited, blocking = inspect.signature(AsyncAgent).parameters, inspect.signature(Agent).parameters
    assert list(awaited) == list(blocking)
    assert [p for p in awaited.values() if p.name != "transport"] == [
        p for p in blocking.values() if p.name != "transport"
    ]
    assert (awaited["transport"].annotation, blocking["transport"].annotation) == (
        "AsyncTransport | str | None",
        "Transport | str | None",
    )


def test_seed_loop_with_awaits(agent_process: AgentProcess, transport: str) -> None:
    async def test(agent: AsyncAgent) -> None:
        assert repr(agent) == f"AsyncAgent({agent_process.url!r})"
        assert (await agent.info()).protocol_version == 1
        socket_1 = await agent.Socket("AF_INET", "SOCK_DGRAM")
        await socket_1.bind("127.0.0.1", 0)
        socket_2 = await agent.Socket("AF_INET", "SOCK_DGRAM")
        assert await socket_2.connect(*socket_1.local_address) == 0
        assert repr(socket_1).startswith(f"<AsyncSocket {socket_1.descriptor} AF_INET/SOCK_DGRAM local=")
        mine = {info.descriptor for info in await agent.sockets()}
        assert {socket_1.descriptor, socket_2.descriptor} <= mine
        for i in range(1, 201):
            byte_array = list(f"Message {i}".encode())
            assert await socket_2.send(byte_array) == len(byte_array)
            result = await socket_1.receive(1000)
            assert isinstance(result, ResultUIntList)
            assert result.data == byte_array and result.address == socket_2.local_address
        assert await socket_1.receive(1000, timeout=0.2) is None  # nothing duplicated
        await socket_1.close()
        await socket_2.close()
        assert socket_1.closed and not await socket_1.is_open()
        assert not await socket_2.is_open(socket_1.descriptor)
        await socket_1.close()  # closing twice is fine

    run(agent_process, test, transport)


def test_function_style_and_context_managers(agent_process: AgentProcess, transport: str) -> None:
    async def test(agent: AsyncAgent) -> None:
        async with (
            await agent.Socket("AF_INET", "SOCK_DGRAM") as server,
            await agent.Socket("AF_INET", "SOCK_DGRAM") as client,
        ):
            await agent.bind(server, "127.0.0.1", 0)
            assert await agent.connect(client, *server.local_address) == 0
            assert await agent.send(client, b"function style") == 14
            result = await agent.receive(server, 100)
            assert bytes(result) == b"function style" and len(result) == 14
            assert await agent.is_open(server, server.descriptor) is True
            assert (await agent.call("is_open", descriptor=client.descriptor)).open is True
        assert server.closed and client.closed and not await agent.is_open(client, server.descriptor)
        with Agent(agent_process.url, token=agent_process.token) as blocking, blocking.Socket() as not_async:
            for device in ("not a socket", not_async):
                with pytest.raises(TypeError, match="first argument must be an AsyncSocket"):
                    await agent.bind(device, "127.0.0.1", 0)

    run(agent_process, test, transport)


def test_tcp_with_plain_python_sockets_on_both_sides(agent_process: AgentProcess, transport: str) -> None:
    payload_out, payload_in = os.urandom(1 << 20), os.urandom(1 << 20)

    async def test(agent: AsyncAgent) -> None:
        loop = asyncio.get_running_loop()
        # The agent's socket as the client of a plain server.
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.setblocking(False)
            async with await agent.Socket() as client:
                accepting = asyncio.ensure_future(loop.sock_accept(listener))
                assert await client.connect(*listener.getsockname()) == 0
                plain, address = await accepting
                with plain:
                    assert client.local_address == address and client.peer_address == listener.getsockname()
                    assert await client.send(b"hello") == 5
                    assert await read_exactly(plain, 5) == b"hello"
                    await loop.sock_sendall(plain, b"world")
                    assert bytes(await client.receive(5)) == b"world"
                    # Both directions at once, in one loop: the client's calls never block the plain side.
                    sent, received = await asyncio.gather(
                        client.send(payload_out), read_exactly(plain, len(payload_out))
                    )
                    assert sent == len(payload_out) and received == payload_out

                    async def receive_all() -> bytes:
                        data = bytearray()
                        while len(data) < len(payload_in):
                            chunk = await client.receive(1 << 16)
                            assert chunk is not None, f"stream ended after {len(data)} bytes"
                            data += bytes(chunk)
                        return bytes(data)

                    _, received = await asyncio.gather(loop.sock_sendall(plain, payload_in), receive_all())
                    assert received == payload_in
                assert await client.receive(5) is None  # the plain server closed: end of stream

        # The agent's socket as the server of a plain client.
        async with await agent.Socket("AF_INET", "SOCK_STREAM") as server:
            await server.bind("127.0.0.1", 0)
            await server.listen(5)
            with socket.socket() as plain:
                plain.setblocking(False)
                await loop.sock_connect(plain, server.local_address)
                descriptor = await server.accept(timeout=10)
                conn = await agent.Socket("AF_INET", "SOCK_STREAM", descriptor)
                assert conn.peer_address == plain.getsockname()
                await loop.sock_sendall(plain, b"ping")
                assert bytes(await conn.receive(100)) == b"ping"
                assert await conn.send(list(b"pong")) == 4
                assert await read_exactly(plain, 4) == b"pong"
            assert await conn.receive(100) is None
            await conn.close()
            assert not await server.is_open(descriptor)

    run(agent_process, test, transport)


def test_many_sockets_receive_concurrently(agent_process: AgentProcess, transport: str) -> None:
    async def test(agent: AsyncAgent) -> None:
        sockets = await asyncio.gather(*(agent.Socket("AF_INET", "SOCK_DGRAM") for _ in range(20)))
        await asyncio.gather(*(sock.bind("127.0.0.1", 0) for sock in sockets))
        receiving = asyncio.gather(*(sock.receive(100) for sock in sockets))  # 20 waits on the agent at once
        await asyncio.sleep(0.5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            for index in reversed(range(len(sockets))):
                plain.sendto(f"to socket {index}".encode(), sockets[index].local_address)
            sender = ("127.0.0.1", plain.getsockname()[1])
        results = await receiving
        assert [bytes(result) for result in results] == [f"to socket {i}".encode() for i in range(len(sockets))]
        assert [result.address for result in results] == [sender] * len(sockets)
        await asyncio.gather(*(sock.close() for sock in sockets))

    run(agent_process, test, transport)


def test_a_waiting_receive_never_delays_another_socket(agent_process: AgentProcess, transport: str) -> None:
    async def test(agent: AsyncAgent) -> None:
        quiet, _ = await udp_pair(agent)
        busy, sender = await udp_pair(agent)
        blocked = asyncio.create_task(quiet.receive(100))  # no timeout: 20 s waits on the agent, repeated
        for i in range(20):
            await sender.send(f"datagram {i}".encode())
            # If calls of one AsyncAgent queued behind each other, this would wait behind the 20 s wait.
            result = await busy.receive(100, timeout=5)
            assert result is not None and bytes(result) == f"datagram {i}".encode()
        assert not blocked.done()
        await sender.connect(*quiet.local_address)
        await sender.send(b"wake up")
        assert bytes(await blocked) == b"wake up"

    run(agent_process, test, transport)


def test_errors_are_the_sync_clients(agent_process: AgentProcess, transport: str) -> None:
    async def test(agent: AsyncAgent) -> None:
        async with await agent.Socket() as client:
            with pytest.raises(ConnectionRefusedError) as caught:
                await client.connect("127.0.0.1", free_port(socket.SOCK_STREAM))
            assert caught.value.errno == errno.ECONNREFUSED
            assert f"connect on descriptor {client.descriptor} (agent {agent.url})" in str(caught.value)
        async with await agent.Socket() as server:
            await server.bind("127.0.0.1", 0)
            with pytest.raises(OSError, match="call listen first") as caught:
                await server.accept()
            assert caught.value.errno == errno.EINVAL
            await server.listen(1)
            with pytest.raises(TimeoutError, match="accept on descriptor"):
                await server.accept(timeout=0.2)

        closed = await agent.Socket("AF_INET", "SOCK_DGRAM")
        await closed.close()
        for call in (closed.bind("127.0.0.1", 0), closed.send(b"x"), closed.receive(10, timeout=0)):
            with pytest.raises(OSError) as caught:
                await call
            assert caught.value.errno == errno.EBADF
            assert f"descriptor {closed.descriptor} is not open" in str(caught.value)

        with pytest.raises(OSError) as caught:
            await agent.Socket("AF_INET", "SOCK_STREAM", 10**9)
        assert caught.value.errno == errno.EBADF
        async with await agent.Socket("AF_INET", "SOCK_DGRAM") as udp:
            with pytest.raises(ValueError, match="SOCK_DGRAM, not AF_INET/SOCK_STREAM"):
                await agent.Socket("AF_INET", "SOCK_STREAM", udp.descriptor)
            for bad, error, text in [
                (udp.send("text"), TypeError, "not str: encode it first"),
                (udp.send([1, "a"]), TypeError, "message"),
                (udp.send([300]), ValueError, "message"),
                (udp.bind("127.0.0.1", 70000), ValueError, "port: .*65535"),
                (udp.bind("127.0.0.1", "8888"), TypeError, "port"),
                (udp.receive(0), ValueError, "bufsize"),
                (udp.receive(10, timeout=-1), ValueError, "timeout"),
                (udp.receive(10, timeout="1"), TypeError, "timeout"),
                (agent.Socket("AF_UNIX", "SOCK_STREAM"), ValueError, "family"),
            ]:
                with pytest.raises(error, match=text):
                    await bad

        async with AsyncAgent(agent.url, token="wrong-token", transport=transport) as stranger:
            with pytest.raises(AuthenticationError, match="wrong token"):
                await stranger.Socket()

    run(agent_process, test, transport)


def test_bad_arguments_fail_before_any_network_call() -> None:
    async def test() -> None:
        async with AsyncAgent(f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}", token="t", retry_for=0.5) as dead:
            with pytest.raises(AgentUnreachableError, match="cannot reach the agent"):
                await dead.Socket()
            sock = AsyncSocket(dead, SocketInfo(descriptor=1, family="AF_INET", socket_type="SOCK_DGRAM"), None)
            for bad, error in [
                (sock.send("text"), TypeError),
                (sock.bind("127.0.0.1", -1), ValueError),
                (sock.receive(-1), ValueError),
                (sock.connect("127.0.0.1", 1, timeout=-1), ValueError),
            ]:
                with pytest.raises(error):  # not AgentUnreachableError: nothing was sent
                    await bad
            calls = dead.calls
            assert calls.done_mark() == calls.begin().seq - 1  # and no call was left open: the agent may forget all

    asyncio.run(test())


def test_cancelled_receive_loses_nothing(agent_process: AgentProcess, transport: str) -> None:
    async def test(agent: AsyncAgent) -> None:
        server, client = await udp_pair(agent)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(server.receive(100), 0.5)  # cancelled while the agent waits for data
        # The agent's wait is still on: this datagram is taken by the cancelled call ...
        await client.send(b"taken while nobody listened")
        # ... and the next receive collects that call's answer instead of losing it.
        assert bytes(await server.receive(100, timeout=10)) == b"taken while nobody listened"
        assert await server.receive(100, timeout=0.2) is None

        # Two waits cut by task.cancel(): two datagrams, both collected by the next two receives.
        waiting = [asyncio.create_task(server.receive(100)) for _ in range(2)]
        await asyncio.sleep(0.5)
        for task in waiting:
            task.cancel()
        assert all(
            isinstance(outcome, asyncio.CancelledError)
            for outcome in await asyncio.gather(*waiting, return_exceptions=True)
        )
        await client.send(b"one")
        await client.send(b"two")
        got = [bytes(await server.receive(100, timeout=10)) for _ in range(2)]
        assert sorted(got) == [b"one", b"two"]  # which wait took which depends on their order at the agent
        assert await server.receive(100, timeout=0.2) is None

        # A cancelled accept: the connection that comes next is the next accept's.
        async with await agent.Socket() as listener:
            await listener.bind("127.0.0.1", 0)
            await listener.listen(1)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(listener.accept(), 0.5)
            loop = asyncio.get_running_loop()
            with socket.socket() as plain:
                plain.setblocking(False)
                await loop.sock_connect(plain, listener.local_address)
                conn = await agent.Socket("AF_INET", "SOCK_STREAM", await listener.accept(timeout=10))
                assert conn.peer_address == plain.getsockname()
                await conn.close()

        # A call cancelled halfway that nobody can repeat leaves no call open on the client's side.
        calls = agent.calls
        task = asyncio.create_task(server.is_open())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        call = calls.begin()
        assert calls.done_mark() == call.seq - 1
        calls.end(call)
        await server.close()
        await client.close()

    run(agent_process, test, transport)


def test_datagrams_through_a_cutting_link_arrive_once_in_order(agent_process: AgentProcess, transport: str) -> None:
    """The async transport retries like the sync one: the same call ids again, so nothing is lost or doubled."""
    upstream = urlsplit(agent_process.url)
    proxy = FaultyProxy((upstream.hostname, upstream.port), cut=0.03, seed=11)

    async def test() -> None:
        async with AsyncAgent(proxy.url, token=agent_process.token, retry_for=60, transport=transport) as flaky:
            server, client = await udp_pair(flaky)
            for i in range(500):
                await client.send(f"datagram {i}".encode())
                assert bytes(await server.receive(100)) == f"datagram {i}".encode()
            assert await server.receive(100, timeout=0.2) is None  # nothing duplicated
            await server.close()
            await client.close()

    try:
        asyncio.run(asyncio.wait_for(test(), 120))
    finally:
        proxy.close()
    assert proxy.cuts > 0
