"""`python -m lab.instrument`: a simulated lab instrument, for the compose demo and the examples.

- A line-based command port (TCP), SCPI-like: one answer per command line, each ending in `\r\n`.
  `*IDN?` answers the identity, `MEAS?` (or `MEAS:VOLT?`) the present reading, `CURV? <count>` a
  binary block of `count` float32 big-endian samples (`#<digits><length><bytes>`, IEEE 488.2),
  anything else `ERR unknown command`. With `--fragment` every answer goes out a few bytes at a
  time, as a slow serial bridge sends it.
- A telemetry port (UDP): a datagram `SUBSCRIBE <count>` gets `count` samples sent back to its
  sender at `--rate` samples a second, each a little-endian `<Idd`: sequence number, time (s),
  value (a sine with noise). `STOP` ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import struct
import sys
import time
from typing import Any, cast

from .echo import announce, run_peer, stop_event

Address = tuple[Any, ...]
"""A peer's socket address, as asyncio gives it."""

IDENTITY = "ENGEE,SIM-1,0001,1.0"
SAMPLE = struct.Struct("<Idd")
"""One telemetry sample: sequence number, seconds since start, value."""
MAX_SAMPLES = 100_000


def reading(t: float) -> float:
    return math.sin(2 * math.pi * 0.5 * t) + random.gauss(0, 0.05)


TERMINATOR = b"\r\n"
MAX_CURVE = 1_000_000


def curve(count: int) -> bytes:
    """`count` samples of a ramp, float32 big-endian, as an IEEE 488.2 definite-length block."""
    data = struct.pack(f">{count}f", *(i / 4 for i in range(count)))
    length = str(len(data)).encode()
    return b"#" + str(len(length)).encode() + length + data


def answer(command: str, started: float) -> bytes:
    words = command.split()
    if command == "*IDN?":
        return IDENTITY.encode()
    if command in ("MEAS?", "MEAS:VOLT?"):
        return f"{reading(time.monotonic() - started):.6f}".encode()
    if words[:1] == ["CURV?"] and len(words) == 2 and words[1].isdigit() and int(words[1]) <= MAX_CURVE:
        return curve(int(words[1]))
    return b"ERR unknown command"


async def command_port(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, started: float, fragment: bool
) -> None:
    """Answer one line per command line until the client closes."""
    try:
        while line := await reader.readline():
            reply = answer(line.strip().decode("ascii", "replace").upper(), started) + TERMINATOR
            for start in range(0, len(reply), 3 if fragment else len(reply)):
                writer.write(reply[start : start + (3 if fragment else len(reply))])
                await writer.drain()
                if fragment:
                    await asyncio.sleep(0.001)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


class Telemetry(asyncio.DatagramProtocol):
    """Streams samples to each subscriber."""

    def __init__(self, rate: float, started: float) -> None:
        self.rate, self.started = rate, started
        self.streams: dict[Address, asyncio.Task[None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's, though not a subclass

    def datagram_received(self, data: bytes, addr: Address) -> None:
        words = data.decode("ascii", "replace").split()
        if addr in self.streams:
            self.streams.pop(addr).cancel()
        if words[:1] == ["SUBSCRIBE"]:
            count = int(words[1]) if len(words) > 1 and words[1].isdigit() else 100
            self.streams[addr] = asyncio.ensure_future(self.stream(addr, min(count, MAX_SAMPLES)))

    async def stream(self, addr: Address, count: int) -> None:
        for seq in range(count):
            t = time.monotonic() - self.started
            self.transport.sendto(SAMPLE.pack(seq, t, reading(t)), addr)
            await asyncio.sleep(1 / self.rate)
        self.streams.pop(addr, None)


async def serve(host: str, tcp: int, udp: int, rate: float, fragment: bool = False) -> None:
    started, stop = time.monotonic(), stop_event()
    server = await asyncio.start_server(lambda r, w: command_port(r, w, started, fragment), host, tcp)
    announce("tcp", server.sockets[0].getsockname(), "instrument")
    transport, telemetry = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Telemetry(rate, started), local_addr=(host, udp)
    )
    announce("udp", transport.get_extra_info("sockname"), "instrument")
    try:
        await stop.wait()
    finally:
        for task in telemetry.streams.values():
            task.cancel()
        transport.close()
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engee-instrument", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--tcp", type=int, default=5025, help="command port (default 5025; 0 picks one)")
    parser.add_argument("--udp", type=int, default=5026, help="telemetry port (default 5026; 0 picks one)")
    parser.add_argument("--rate", type=float, default=200.0, help="telemetry samples a second (default 200)")
    parser.add_argument("--fragment", action="store_true", help="send each answer a few bytes at a time")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 10_000:
        parser.error("--rate must be within (0, 10000]")
    return run_peer("engee-instrument", args.host, serve(args.host, args.tcp, args.udp, args.rate, args.fragment))


if __name__ == "__main__":
    sys.exit(main())
