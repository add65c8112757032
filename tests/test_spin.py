"""The spin a server makes after a write (tap/spin.py): it holds nothing up, ends on an arrival, and backs off."""

import asyncio
import socket

import pytest

from protocol.spin import CPUS
from tap import spin
from tap.spin import Spin, arrived

pytestmark = pytest.mark.skipif(CPUS < 2, reason="nothing spins on one CPU")


def _spinning() -> bool:
    awake = spin._awake.get(asyncio.get_running_loop())
    return awake is not None and awake._owner is not None


def _owner() -> Spin | None:
    awake = spin._awake.get(asyncio.get_running_loop())
    return None if awake is None else awake._owner


async def _spin_over() -> None:
    while _spinning():
        await asyncio.sleep(0)


def test_a_spin_holds_up_no_timer_and_no_socket_and_ends_when_a_frame_arrives() -> None:
    """While the loop is kept awake, its timers fire and its sockets are read as ever (the spin still going
    on when they run); a frame on a connection ends the spin at once, however long it might have lasted."""

    async def main() -> list[tuple[str, bool]]:
        loop = asyncio.get_running_loop()
        device, peer = socket.socketpair()
        seen: list[tuple[str, bool]] = []

        def readable() -> None:
            seen.append((device.recv(100).decode(), _spinning()))
            arrived()  # as a tap does for every frame that comes

        with device, peer:
            device.setblocking(False)
            loop.add_reader(device, readable)
            Spin().soon(60.0)  # far longer than the test may take: only the arrival can end it
            loop.call_later(0.01, lambda: seen.append(("timer", _spinning())))
            loop.call_later(0.02, peer.send, b"frame")
            await asyncio.wait_for(_spin_over(), 10)
            loop.remove_reader(device)
        return seen

    assert asyncio.run(main()) == [("timer", True), ("frame", True)]


def test_a_loop_that_stops_in_the_middle_of_a_spin_leaves_the_next_loop_its_own() -> None:
    """A loop closed while its spin was on (a test's asyncio.run, an agent's shutdown) takes that spin along; the
    next loop spins as ever."""

    async def stop_mid_spin() -> None:
        Spin().soon(0.01)

    asyncio.run(stop_mid_spin())  # ends while the 10 ms spin is on

    async def spin_again() -> bool:
        Spin().soon(0.001)
        started = _spinning()
        await asyncio.wait_for(_spin_over(), 10)
        return started

    assert asyncio.run(spin_again())


def test_spins_that_see_nothing_make_the_next_writes_go_without_one() -> None:
    async def main() -> tuple[list[bool], list[bool]]:
        connection, started = Spin(), []
        for _ in range(8):
            connection.soon(0.001)  # nothing arrives: each spin that runs is a miss
            started.append(_owner() is connection)
            await asyncio.wait_for(_spin_over(), 10)
        answered, again = Spin(), []
        for _ in range(4):  # a miss, the write it skips, then a spin that sees a frame: the next write spins too
            answered.soon(0.05)
            again.append(_owner() is answered)
            if len(again) == 3:
                arrived()
            await asyncio.wait_for(_spin_over(), 10)
        return started, again

    started, again = asyncio.run(main())
    assert started == [True, False, True, False, False, False, True, False]  # a miss skips 1 write, then 3, 7...
    assert again == [True, False, True, True]
