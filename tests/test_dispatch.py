"""The dispatcher in process: the real client and direct calls on one `Dispatcher`, real sockets on loopback.

No agent process and no HTTP: each test builds a dispatcher with the settings it needs and runs
its calls in one `asyncio.run`. The plain-socket peers are non-blocking sockets on the same loop.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.dispatch import Dispatcher
from agent.ledger import Ledger, Outcome
from agent.policy import Policy, RuleSet
from agent.settings import Limits, Principal, Settings
from engee_client import AsyncAgent, AsyncSocket
from protocol import METHODS, AnyMethod, CallId, ErrorCode, ErrorDetail
from protocol import models as m

from .conftest import free_port
from .inprocess import InProcessTransport

T = TypeVar("T")
ALICE = Principal("alice", "a" * 16)
BOB = Principal("bob", "b" * 16)
Make = Callable[..., Dispatcher]


def run(test: Callable[[], Awaitable[T]], limit: float = 30.0) -> T:
    """Run `test()` in a fresh event loop; a hang fails the test instead of stalling the run."""

    async def main() -> T:
        return await asyncio.wait_for(test(), limit)

    return asyncio.run(main())


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    """Dispatchers with the given policy and limits, auditing to tmp_path/audit.log; all closed after the test."""
    made: list[Dispatcher] = []

    def make(policy: Policy | None = None, limits: Limits | None = None) -> Dispatcher:
        settings = Settings(
            principals=(ALICE, BOB),
            policy=policy or Policy(),
            limits=limits or Limits(),
            audit_log=str(tmp_path / "audit.log"),
        )
        made.append(Dispatcher(settings, "test"))
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.close()


async def call(
    dispatcher: Dispatcher,
    method: AnyMethod,
    principal: Principal = ALICE,
    *,
    call_id: CallId | None = None,
    boot: str | None = None,
    **fields: Any,
) -> Outcome:
    """One call of the method table, as an adapter makes it; a caller that stays always gets an outcome."""
    outcome = await dispatcher.dispatch(principal, method, method.request(**fields), call_id, boot)
    assert outcome is not None
    return outcome


def refused(outcome: Outcome, code: ErrorCode) -> ErrorDetail:
    assert isinstance(outcome, ErrorDetail) and outcome.code is code, outcome
    return outcome


async def open_socket(
    dispatcher: Dispatcher, principal: Principal = ALICE, socket_type: str = "SOCK_DGRAM", host: str | None = None
) -> int:
    """A new socket's descriptor; bound to `host`:0 when a host is given."""
    info = await call(dispatcher, METHODS.socket, principal, socket_type=socket_type)
    assert isinstance(info, m.SocketInfo), info
    if host is not None:
        assert isinstance(
            await call(dispatcher, METHODS.bind, principal, descriptor=info.descriptor, host=host, port=0), m.SocketInfo
        )
    return info.descriptor


async def is_open(dispatcher: Dispatcher, descriptor: int, principal: Principal = ALICE) -> bool:
    answer = await call(dispatcher, METHODS.is_open, principal, descriptor=descriptor)
    assert isinstance(answer, m.IsOpenResponse), answer
    return answer.open


async def local_address(dispatcher: Dispatcher, descriptor: int) -> tuple[str, int]:
    info = await call(dispatcher, METHODS.describe, descriptor=descriptor)
    assert isinstance(info, m.SocketInfo) and info.local is not None, info
    return info.local.as_tuple()


def plain(kind: socket.SocketKind) -> socket.socket:
    """A non-blocking Python socket on loopback, for the loop's sock_* calls."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    return sock


def in_process(dispatcher: Dispatcher, principal: Principal = ALICE) -> AsyncAgent:
    return AsyncAgent("inprocess://agent", transport=InProcessTransport(dispatcher, principal))


def test_the_client_exchanges_datagrams_through_the_dispatcher(make: Make) -> None:
    dispatcher = make()

    async def test() -> None:
        async with in_process(dispatcher) as lab:
            assert (await lab.info()).boot_id == dispatcher.boot_id
            server, client = await lab.Socket("AF_INET", "SOCK_DGRAM"), await lab.Socket("AF_INET", "SOCK_DGRAM")
            await server.bind("127.0.0.1", 0)
            assert server.local_address is not None
            await client.connect(*server.local_address)
            assert await client.send(b"ping \x00\xff") == 7
            result = await server.receive(100, timeout=5)
            assert result is not None and bytes(result) == b"ping \x00\xff"
            assert result.address == client.local_address
            assert len(dispatcher.table) == 2

    run(test)


def test_the_client_runs_a_tcp_round_with_a_plain_peer(make: Make) -> None:
    dispatcher = make()

    async def exchange(ours: AsyncSocket, theirs: socket.socket) -> None:
        """Bytes both ways, then our close is the peer's end of stream."""
        loop = asyncio.get_running_loop()
        assert await ours.send(b"hello") == 5
        assert await loop.sock_recv(theirs, 100) == b"hello"
        await loop.sock_sendall(theirs, b"world")
        result = await ours.receive(100, timeout=5)
        assert result is not None and bytes(result) == b"world"
        await ours.close()
        assert await loop.sock_recv(theirs, 100) == b""

    async def test() -> None:
        loop = asyncio.get_running_loop()
        async with in_process(dispatcher) as lab:
            listener = await lab.Socket()  # the agent accepts a plain client
            await listener.bind("127.0.0.1", 0)
            await listener.listen()
            assert listener.local_address is not None
            with plain(socket.SOCK_STREAM) as peer:
                await loop.sock_connect(peer, listener.local_address)
                accepted = await lab.Socket(socket_descriptor=await listener.accept(timeout=5))
                assert accepted.peer_address == peer.getsockname()
                await exchange(accepted, peer)
            with plain(socket.SOCK_STREAM) as server:  # the agent connects to a plain server
                server.listen()
                client = await lab.Socket()
                host, port = server.getsockname()
                await client.connect(host, port, timeout=5)
                conn, _ = await loop.sock_accept(server)
                with conn:
                    conn.setblocking(False)
                    await exchange(client, conn)
            await listener.close()
            assert not await listener.is_open()
            assert len(dispatcher.table) == 0

    run(test)


def test_a_call_id_runs_at_most_once_and_an_acknowledged_answer_is_forgotten(make: Make) -> None:
    dispatcher = make()

    async def test() -> None:
        first = await call(dispatcher, METHODS.socket, call_id=CallId("s1", 1))
        again = await call(dispatcher, METHODS.socket, call_id=CallId("s1", 1))  # a retry: the answer was lost
        assert isinstance(first, m.SocketInfo) and again == first
        assert len(dispatcher.table) == 1
        other = await call(dispatcher, METHODS.socket, call_id=CallId("s1", 2))
        assert isinstance(other, m.SocketInfo) and other.descriptor != first.descriptor
        assert len(dispatcher.table) == 2 and len(dispatcher.ledger) == 2
        await call(dispatcher, METHODS.describe, call_id=CallId("s1", 3, done=2), descriptor=first.descriptor)
        assert len(dispatcher.ledger) == 1  # 1 and 2 are acknowledged; only 3 is kept

    run(test)


def test_a_descriptor_from_another_boot_is_refused_and_nothing_is_done(make: Make) -> None:
    dispatcher = make()

    async def test() -> None:
        descriptor = await open_socket(dispatcher)
        refused(await call(dispatcher, METHODS.close, boot="0" * 32, descriptor=descriptor), ErrorCode.AGENT_RESTARTED)
        assert await is_open(dispatcher, descriptor) and len(dispatcher.table) == 1
        closed = await call(dispatcher, METHODS.close, boot=dispatcher.boot_id, descriptor=descriptor)
        assert closed == m.CloseResponse(closed=True)

    run(test)


def test_principals_see_only_their_own_sockets(make: Make) -> None:
    dispatcher = make()

    async def test() -> None:
        descriptor = await open_socket(dispatcher, ALICE)
        assert await call(dispatcher, METHODS.close, BOB, descriptor=descriptor) == m.CloseResponse(closed=False)
        assert await is_open(dispatcher, descriptor, ALICE) and not await is_open(dispatcher, descriptor, BOB)
        refused(await call(dispatcher, METHODS.describe, BOB, descriptor=descriptor), ErrorCode.BAD_DESCRIPTOR)
        assert await call(dispatcher, METHODS.sockets, BOB) == m.SocketList(sockets=[])

    run(test)


def test_the_connect_policy_refuses_and_the_refusal_is_audited(make: Make, tmp_path: Path) -> None:
    dispatcher = make(policy=Policy(connect=RuleSet.parse(deny=["127.0.0.1"])))

    async def test() -> None:
        descriptor = await open_socket(dispatcher)
        detail = refused(
            await call(dispatcher, METHODS.connect, descriptor=descriptor, host="127.0.0.1", port=9),
            ErrorCode.PERMISSION_DENIED,
        )
        assert "127.0.0.1" in detail.message
        info = await call(dispatcher, METHODS.describe, descriptor=descriptor)
        assert isinstance(info, m.SocketInfo) and info.peer is None  # refused before the OS was asked

    run(test)
    lines = [line for line in (tmp_path / "audit.log").read_text().splitlines() if "action=connect" in line]
    assert len(lines) == 1, lines
    assert "principal=alice" in lines[0] and "peer=127.0.0.1:9" in lines[0]
    assert 'outcome="permission_denied: connect to 127.0.0.1:9 is refused by deny rule' in lines[0]


def test_a_principal_cannot_open_more_sockets_than_its_limit(make: Make) -> None:
    dispatcher = make(limits=Limits(sockets_per_principal=2))

    async def test() -> None:
        await open_socket(dispatcher)
        await open_socket(dispatcher)
        detail = refused(await call(dispatcher, METHODS.socket), ErrorCode.LIMIT_EXCEEDED)
        assert "sockets_per_principal" in detail.message
        assert len(dispatcher.table) == 2
        await open_socket(dispatcher, BOB)  # the limit is alice's, not the agent's

    run(test)


def test_a_receive_that_waits_in_vain_answers_pending_and_loses_nothing(make: Make) -> None:
    dispatcher = make()

    async def test() -> None:
        descriptor = await open_socket(dispatcher, host="127.0.0.1")
        started = time.monotonic()
        empty = await call(dispatcher, METHODS.receive, descriptor=descriptor, bufsize=100, wait=0.2)
        assert empty == m.ReceiveResponse(pending=True)
        assert time.monotonic() - started >= 0.19
        with plain(socket.SOCK_DGRAM) as peer:
            await asyncio.get_running_loop().sock_sendto(peer, b"late", await local_address(dispatcher, descriptor))
            await asyncio.sleep(0.1)  # the datagram waits between calls: no left-over wait may take it
            result = await call(dispatcher, METHODS.receive, descriptor=descriptor, bufsize=100, wait=5)
            assert isinstance(result, m.ReceiveResponse) and not result.pending, result
            assert result.data == b"late" and result.peer == m.Address(host="127.0.0.1", port=peer.getsockname()[1])

    run(test)


def test_an_os_error_travels_by_errno_name(make: Make) -> None:
    dispatcher = make()

    async def test() -> None:
        descriptor = await open_socket(dispatcher, socket_type="SOCK_STREAM")
        closed_port = free_port(socket.SOCK_STREAM)
        detail = refused(
            await call(dispatcher, METHODS.connect, descriptor=descriptor, host="127.0.0.1", port=closed_port, wait=5),
            ErrorCode.OS_ERROR,
        )
        assert detail.errno_name == "ECONNREFUSED" and detail.method == "connect" and detail.descriptor == descriptor

    run(test)


def test_closing_the_dispatcher_closes_every_socket_and_wakes_waiting_calls(make: Make) -> None:
    dispatcher = make()

    async def test() -> None:
        waiting = await open_socket(dispatcher, ALICE, host="127.0.0.1")
        await open_socket(dispatcher, BOB, socket_type="SOCK_STREAM", host="127.0.0.1")
        entries = dispatcher.table.entries()
        receive = asyncio.create_task(call(dispatcher, METHODS.receive, descriptor=waiting, bufsize=10, wait=20))
        await asyncio.sleep(0.05)  # the receive is waiting on the socket
        dispatcher.close()
        assert len(dispatcher.table) == 0 and all(entry.sock.fileno() == -1 for entry in entries)
        detail = refused(await asyncio.wait_for(receive, 2), ErrorCode.OS_ERROR)
        assert detail.errno_name == "EBADF"
        refused(await call(dispatcher, METHODS.describe, descriptor=waiting), ErrorCode.BAD_DESCRIPTOR)

    run(test)


def test_a_flooding_principal_cannot_evict_another_principals_answer(make: Make) -> None:
    dispatcher = make()
    dispatcher.ledger = Ledger(answers_per_principal=50, answers_total=60)

    async def test() -> None:
        alices = CallId("alice-session", 1)
        first = await call(dispatcher, METHODS.socket, call_id=alices)
        for seq in range(1, 200):  # bob never acknowledges: over his own bound, and over the whole agent's
            await call(dispatcher, METHODS.is_open, BOB, call_id=CallId("bob-session", seq), descriptor=1)
        assert len(dispatcher.ledger) <= 60
        assert await call(dispatcher, METHODS.socket, call_id=alices) == first  # kept: the retry gets it again
        assert len(dispatcher.table) == 1  # and the socket call did not run twice

    run(test)


def test_sessions_that_go_away_leave_nothing_in_the_ledger(make: Make) -> None:
    """The ledger's memory is bounded: a session whose calls all went another way (cancelled by its client, evicted
    past the bound) leaves no trace, however many such sessions come; nor do the calls a session made behind one
    that runs on."""
    dispatcher = make()
    dispatcher.ledger = ledger = Ledger(answers_per_principal=50)

    async def test() -> None:
        info = await call(dispatcher, METHODS.socket, call_id=CallId("stays", 1))  # the book stays in use
        assert isinstance(info, m.SocketInfo)
        for number in range(300):
            session = f"gone-{number}"
            await call(dispatcher, METHODS.is_open, call_id=CallId(session, 1), descriptor=1)
            if number % 2:
                dispatcher.cancel(ALICE, session, 1)  # its client gave up on it; the rest are evicted
        waiting = asyncio.ensure_future(  # a receive that waits on: what comes after it cannot be acknowledged
            call(dispatcher, METHODS.receive, call_id=CallId("stays", 2), descriptor=info.descriptor, bufsize=10)
        )
        await asyncio.sleep(0)
        for seq in range(3, 300):  # evicted past the bound, each but the last few
            await call(dispatcher, METHODS.is_open, call_id=CallId("stays", seq, done=1), descriptor=1)
        book = ledger._books[ALICE.name]
        assert len(ledger) <= 50
        assert {(session, seq) for session, seqs in book.sessions.items() for seq in seqs} == set(book.calls)
        waiting.cancel()

    run(test)


def test_a_cancelled_wait_gives_back_what_it_took(make: Make) -> None:
    dispatcher = make()

    async def test() -> None:
        info = await call(dispatcher, METHODS.socket, socket_type="SOCK_STREAM")
        assert isinstance(info, m.SocketInfo)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            await call(
                dispatcher,
                METHODS.connect,
                descriptor=info.descriptor,
                host="127.0.0.1",
                port=listener.getsockname()[1],
            )
            peer, _ = listener.accept()
            with peer:
                waiting = asyncio.ensure_future(
                    call(dispatcher, METHODS.receive, call_id=CallId("s", 1), descriptor=info.descriptor, bufsize=1000)
                )
                peer.send(b"0123456789")
                taken = await waiting  # the client never saw this answer: it was interrupted
                assert isinstance(taken, m.ReceiveResponse) and taken.data == b"0123456789"
                again = await call(
                    dispatcher,
                    METHODS.receive,
                    call_id=CallId("s", 2, cancel=(1,)),
                    descriptor=info.descriptor,
                    bufsize=4,
                    wait=0,
                )
                assert isinstance(again, m.ReceiveResponse) and again.data == b"0123"
                rest = await call(dispatcher, METHODS.receive, descriptor=info.descriptor, bufsize=100, wait=0)
                assert isinstance(rest, m.ReceiveResponse) and rest.data == b"456789"

    run(test)
