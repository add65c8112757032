"""The spin a server makes after a write (tap/spin.py): it holds nothing up, ends on an arrival, and backs off."""

import asyncio
import socket

import pytest

from tap import spin
from tap.spin import Spin, arrived

pytestmark = pytest.mark.skipif(spin.CPUS < 2, reason="nothing spins on one CPU")


async def _spin_over() -> None:
    while spin._awake._owner is not None:
        await asyncio.sleep(0)


def test_a_spin_holds_up_no_timer_and_no_socket_and_ends_when_a_frame_arrives() -> None:
    """While the loop is kept awake, its timers fire and its sockets are read as ever (the spin still going
    on when they run); a frame on a connection ends the spin at once, however long it might have lasted."""

    async def main() -> list[tuple[str, bool]]:
        loop = asyncio.get_running_loop()
        device, peer = socket.socketpair()
        seen: list[tuple[str, bool]] = []

        def readable() -> None:
            seen.append((device.recv(100).decode(), spin._awake._owner is not None))
            arrived()  # as a tap does for every frame that comes

        with device, peer:
            device.setblocking(False)
            loop.add_reader(device, readable)
            Spin().soon(60.0)  # far longer than the test may take: only the arrival can end it
            loop.call_later(0.01, lambda: seen.append(("timer", spin._awake._owner is not None)))
            loop.call_later(0.02, peer.send, b"frame")
            await asyncio.wait_for(_spin_over(), 10)
            loop.remove_reader(device)
        return seen

    assert asyncio.run(main()) == [("timer", True), ("frame", True)]


def test_spins_that_see_nothing_make_the_next_writes_go_without_one() -> None:
    async def main() -> tuple[list[bool], list[bool]]:
        connection, started = Spin(), []
        for _ in range(8):
            connection.soon(0.001)  # nothing arrives: each spin that runs is a miss
            started.append(spin._awake._owner is connection)
            await asyncio.wait_for(_spin_over(), 10)
        answered, again = Spin(), []
        for _ in range(4):  # a miss, the write it skips, then a spin that sees a frame: the next write spins too
            answered.soon(0.05)
            again.append(spin._awake._owner is answered)
            if len(again) == 3:
                arrived()
            await asyncio.wait_for(_spin_over(), 10)
        return started, again

    started, again = asyncio.run(main())
    assert started == [True, False, True, False, False, False, True, False]  # a miss skips 1 write, then 3, 7...
    assert again == [True, False, True, True]
