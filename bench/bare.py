"""`python -m bench.bare`: the floor under any two-process design here: bare messages there and back.

A child process runs an asyncio server (uvloop, as the agent does) that answers each length-prefixed
message with itself; the notebook side sends each seed message and blocks until its echo is back,
with nothing else: no framing beyond a length, no checks, no state. What it costs a message is what
the machine charges for two processes taking turns (two wakeups, four system calls), the floor any
design with an agent in another process pays.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import Any, Self

from lab.process import ChildProcess

from .peers import HOST
from .workloads import check, timed

LENGTH = struct.Struct("!I")


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport, self.buffer = transport, b""
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= LENGTH.size and len(self.buffer) >= LENGTH.size + LENGTH.unpack_from(self.buffer)[0]:
            size = LENGTH.size + LENGTH.unpack_from(self.buffer)[0]
            self.transport.write(self.buffer[:size])
            self.buffer = self.buffer[size:]


async def _serve() -> None:
    server = await asyncio.get_running_loop().create_server(_Echo, HOST, 0)
    print(f"bare echo on {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


class BareEcho(ChildProcess):
    """The echo as a child process; `port` once it listens."""

    def __init__(self) -> None:
        super().__init__([sys.executable, "-m", "bench.bare"], r"bare echo on (\d+)")
        self.port = 0

    def __enter__(self) -> Self:
        self.port = int(self.start().match.group(1))
        return self


def seed_loop_bare(port: int, iterations: int) -> float:
    """The seed's messages, each there and back through the echo; seconds."""
    with socket.create_connection((HOST, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def body() -> None:
            for i in range(1, iterations + 1):
                message = f"Message {i}".encode()
                sock.sendall(LENGTH.pack(len(message)) + message)
                echo = b""
                while len(echo) < LENGTH.size + len(message):
                    echo += sock.recv(65536)
                check(echo[LENGTH.size :], message, i)

        return timed(body)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the agent runs on asyncio's own loop then, too
        pass
    asyncio.run(_serve())
