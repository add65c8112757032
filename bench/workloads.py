"""The two workloads, each written once for the stdlib socket API (direct and RPyC) and once for engee_client.

Every function sets up, times only the measured part with `timed`, cleans up, and returns seconds.
`sockets` is a module with the stdlib socket API: `socket` itself, or RPyC's `conn.modules.socket`,
whose remote socket objects are used exactly like local ones.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from engee_client import Agent

from .delay import DelayLine
from .peers import HOST, Responder, Sink, Source


def timed(body: Callable[[], None]) -> float:
    """Seconds `body()` takes."""
    start = time.perf_counter()
    body()
    return time.perf_counter() - start


def check(got: Any, want: Any, i: int) -> None:
    if got != want:
        raise RuntimeError(f"message {i}: received {got!r}, sent {want!r}")


def seed_loop_sockets(sockets: Any, iterations: int, bound: bool = False) -> float:
    """The seed's UDP example with stdlib-style sockets: send from socket_2, recv(1000) on socket_1.

    With `bound`, `send` and `recv` are looked up once before the loop: for RPyC that saves the
    remote attribute lookup, one of the two round trips of every call.
    """
    socket_1 = sockets.socket(sockets.AF_INET, sockets.SOCK_DGRAM)
    socket_2 = sockets.socket(sockets.AF_INET, sockets.SOCK_DGRAM)
    try:
        socket_1.bind((HOST, 0))
        socket_2.connect(socket_1.getsockname())
        send = socket_2.send if bound else lambda message: socket_2.send(message)
        recv = socket_1.recv if bound else lambda size: socket_1.recv(size)

        def body() -> None:
            for i in range(1, iterations + 1):
                message = f"Message {i}".encode()
                send(message)
                check(recv(1000), message, i)

        return timed(body)
    finally:
        socket_1.close()
        socket_2.close()


def seed_loop_agent(agent: Agent, iterations: int) -> float:
    """The seed's UDP example as written, through the agent: a list of ints out, `.data` back."""
    socket_1 = agent.Socket("AF_INET", "SOCK_DGRAM")
    socket_2 = agent.Socket("AF_INET", "SOCK_DGRAM")
    try:
        socket_1.bind(HOST, 0)
        socket_2.connect(*socket_1.local_address)

        def body() -> None:
            for i in range(1, iterations + 1):
                byte_array = list(f"Message {i}".encode())
                socket_2.send(byte_array)
                check(socket_1.receive(1000).data, byte_array, i)

        return timed(body)
    finally:
        socket_1.close()
        socket_2.close()


def bulk_sockets(sockets: Any, chunk: bytes, count: int, bound: bool = False, delay: float = 0.0) -> float:
    """`count` sendall(chunk) over TCP to a local sink, until the sink has counted every byte; with `delay`,
    through a delay proxy of that many seconds each way."""
    with Sink() as sink, DelayLine(sink.address, delay) as proxy:
        sender = sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM)
        try:
            sender.connect(proxy.address if delay else sink.address)
            sendall = sender.sendall if bound else lambda data: sender.sendall(data)

            def body() -> None:
                for _ in range(count):
                    sendall(chunk)
                sender.close()
                sink.wait(len(chunk) * count)

            return timed(body)
        finally:
            sender.close()


def bulk_agent(agent: Agent, chunk: bytes, count: int) -> float:
    """`count` send(chunk) over TCP through the agent to a local sink, until the sink has counted every byte."""
    with Sink() as sink:
        sender = agent.Socket("AF_INET", "SOCK_STREAM")
        try:
            sender.connect(*sink.address)

            def body() -> None:
                for _ in range(count):
                    sender.send(chunk)
                sender.close()
                sink.wait(len(chunk) * count)

            return timed(body)
        finally:
            sender.close()


def receive_sockets(sockets: Any, chunk: bytes, count: int, delay: float = 0.0) -> float:
    """Receive `count` x len(chunk) bytes over TCP from a local source in recv(len(chunk)) calls; with
    `delay`, through a delay proxy of that many seconds each way."""
    with Source(chunk, count) as source, DelayLine(source.address, delay) as proxy:
        receiver = sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM)
        try:
            receiver.connect(proxy.address if delay else source.address)
            return timed(lambda: _drain(lambda: len(receiver.recv(len(chunk))), len(chunk) * count))
        finally:
            receiver.close()


def receive_agent(agent: Agent, chunk: bytes, count: int) -> float:
    """Receive `count` x len(chunk) bytes through the agent from a local source in receive(len(chunk)) calls."""
    with Source(chunk, count) as source, agent.Socket("AF_INET", "SOCK_STREAM") as receiver:
        receiver.connect(*source.address)
        return timed(lambda: _drain(lambda: len(receiver.receive(len(chunk)) or b""), len(chunk) * count))


def _drain(receive: Callable[[], int], expected: int) -> None:
    got = 0
    while got < expected:
        size = receive()
        if not size:
            raise RuntimeError(f"the source closed after {got} of {expected} bytes")
        got += size


def query_agent(agent: Agent, count: int) -> float:
    """`count` queries (a command line out, an answer line back) to an instrument-like peer, through the agent."""
    with Responder() as responder, agent.Socket() as device:
        device.connect(*responder.address)
        answer = Responder.ANSWER.decode().strip()

        def body() -> None:
            for i in range(count):
                check(device.query("MEAS:VOLT?", terminator="\r\n"), answer, i)

        return timed(body)


def query_sockets(count: int, delay: float = 0.0) -> float:
    """The same queries with a local socket and its file's readline; with `delay`, through a delay proxy."""
    with Responder() as responder, DelayLine(responder.address, delay) as proxy:
        device = socket.create_connection(proxy.address if delay else responder.address)
        device.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with device, device.makefile("rb") as lines:

            def body() -> None:
                for i in range(count):
                    device.sendall(b"MEAS:VOLT?\r\n")
                    check(lines.readline(), Responder.ANSWER, i)

            return timed(body)


SAMPLES = struct.pack("<250000f", *range(250000))
"""A quarter of a million float32 samples; a read_values run takes `count` of them from repeats of this."""


def values_agent(agent: Agent, count: int, convert_here: bool = False) -> float:
    """`read_values(count, "float32")` through the agent; with `convert_here`, receive the bytes in 1 MiB
    receives and convert them in the notebook instead."""
    repeats = count * 4 // len(SAMPLES)
    with Source(SAMPLES, repeats) as source, agent.Socket() as device:
        device.connect(*source.address)

        def body() -> None:
            if convert_here:
                data = bytearray()
                while len(data) < count * 4:
                    data += bytes(device.receive(min(1 << 20, count * 4 - len(data))) or b"")
                values = list(struct.unpack(f"<{count}f", data))
            else:
                values = device.read_values(count, "float32")
            check(values[-1], float((count - 1) % 250000), count)

        return timed(body)


def _lines(count: int) -> bytes:
    return b"".join(b"sample %06d\n" % i for i in range(count))


def lines_sockets(count: int) -> float:
    """`count` lines from a streaming peer, read with a local socket file's readline."""
    with Source(_lines(count), 1) as source:
        device = socket.create_connection(source.address)
        with device, device.makefile("rb") as lines:

            def loop() -> None:
                for i in range(count):
                    check(lines.readline(), b"sample %06d\n" % i, i)

            return timed(loop)


def lines_agent(agent: Agent, count: int, callbacks: bool = True) -> float:
    """`count` lines from a streaming peer: with `callbacks` through on_data, else in a loop of read_line."""
    with Source(_lines(count), 1) as source, agent.Socket() as device:
        device.connect(*source.address)
        if not callbacks:

            def loop() -> None:
                for i in range(count):
                    check(device.read_line(), f"sample {i:06d}", i)

            return timed(loop)
        arrived = threading.Event()
        seen = [0]

        def callback(sock: Any, line: str) -> None:
            seen[0] += 1
            if seen[0] == count:
                arrived.set()

        def body() -> None:
            device.on_data(callback, terminator="\n")
            if not arrived.wait(120):
                raise RuntimeError(f"on_data delivered {seen[0]} of {count} lines")
            device.on_data(None)

        return timed(body)
