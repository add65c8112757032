"""`python -m bench.delay_check`: what the delay proxy adds, measured on loopback.

For delay 0 and 10 ms (one way): the median round trip of a 1-byte ping-pong through the proxy and
direct; then the throughput of a 64 MiB one-way transfer through a 10 ms proxy and direct.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time

from .delay import DelayProxy
from .peers import HOST, Sink
from .report import MIB

PINGS = 200
BULK = 64 * MIB
CHUNK = MIB


class Echo:
    """A loopback TCP server thread that echoes one connection until its EOF."""

    def __init__(self) -> None:
        self._listener = socket.create_server((HOST, 0))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._run, name="delay-check-echo", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._listener, self._listener.accept()[0] as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)

    def join(self) -> None:
        """Until the echoed connection has ended (its EOF came through)."""
        self._thread.join()


def ping_pong(address: tuple[str, int]) -> float:
    """Median seconds of a 1-byte send and its echo, over PINGS round trips on one fresh connection."""
    times = []
    with socket.create_connection(address) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(PINGS):
            start = time.perf_counter()
            conn.sendall(b"x")
            if conn.recv(1) != b"x":
                raise RuntimeError("the echo did not come back")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def transfer(address: tuple[str, int], sink: Sink, chunk: bytes) -> float:
    """MiB/s of BULK bytes sent in `chunk`s to `address`, until `sink` counted them all."""
    start = time.perf_counter()
    with socket.create_connection(address) as conn:
        for _ in range(BULK // len(chunk)):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        sink.wait(BULK)
    return BULK / MIB / (time.perf_counter() - start)


def main() -> None:
    for delay in (0.0, 0.010):
        echo = Echo()
        direct = ping_pong(echo.address)
        echo.join()
        echo = Echo()
        with DelayProxy(echo.address, delay=delay) as proxy:
            proxied = ping_pong(proxy.address)
            echo.join()  # closing the proxy earlier would reset the EOF still in flight
        print(
            f"ping-pong, delay {delay * 1e3:.0f} ms one way: median round trip {proxied * 1e3:.3f} ms "
            f"through the proxy, {direct * 1e3:.3f} ms direct (added {(proxied - direct - 2 * delay) * 1e3:.3f} ms "
            f"beyond 2 x delay)"
        )
    chunk = os.urandom(CHUNK)
    with Sink() as sink:
        direct_rate = transfer(sink.address, sink, chunk)
    with Sink() as sink, DelayProxy(sink.address, delay=0.010) as proxy:
        proxied_rate = transfer(proxy.address, sink, chunk)
    print(
        f"bulk, {BULK // MIB} MiB one way in {CHUNK // MIB} MiB sends: {proxied_rate:.0f} MiB/s through the proxy "
        f"with delay 10 ms, {direct_rate:.0f} MiB/s direct"
    )


if __name__ == "__main__":
    main()
