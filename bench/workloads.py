"""The two workloads, each written once for the stdlib socket API (direct and RPyC) and once for engee_client.

Every function sets up, times only the measured part with `timed`, cleans up, and returns seconds.
`sockets` is a module with the stdlib socket API: `socket` itself, or RPyC's `conn.modules.socket`,
whose remote socket objects are used exactly like local ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engee_client import Agent

from .delay import DelayProxy
from .peers import HOST, Sink, Source


def timed(body: Callable[[], None]) -> float:
    """Seconds `body()` takes."""
    start = time.perf_counter()
    body()
    return time.perf_counter() - start


def _check(got: Any, want: Any, i: int) -> None:
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
                _check(recv(1000), message, i)

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
                _check(socket_1.receive(1000).data, byte_array, i)

        return timed(body)
    finally:
        socket_1.close()
        socket_2.close()


def bulk_sockets(sockets: Any, chunk: bytes, count: int, bound: bool = False, delay: float = 0.0) -> float:
    """`count` sendall(chunk) over TCP to a local sink, until the sink has counted every byte; with `delay`,
    through a delay proxy of that many seconds each way."""
    with Sink() as sink, DelayProxy(sink.address, delay) as proxy:
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
    with Source(chunk, count) as source, DelayProxy(source.address, delay) as proxy:
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
