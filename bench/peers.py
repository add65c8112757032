"""What the workloads talk to: local TCP sink and source threads and an `rpyc_classic` server child process."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path
from typing import Self

from lab.process import ChildProcess

HOST = "127.0.0.1"
"""The only address the bench ever uses."""


class Sink:
    """A loopback TCP server thread: accepts one connection, reads and discards until EOF, counts."""

    def __init__(self, timeout: float = 60.0) -> None:
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(timeout)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self.received = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = bytearray(1 << 20)
        try:
            conn, _ = self._listener.accept()
            with conn:
                conn.settimeout(self._listener.gettimeout())
                while count := conn.recv_into(buffer):
                    self.received += count
        except BaseException as exc:  # reported by wait()
            self._error = exc
        finally:
            self._listener.close()

    def wait(self, expected: int, timeout: float = 60.0) -> None:
        """Until the sender's EOF; raises unless exactly `expected` bytes arrived."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"sink: no EOF after {timeout} s ({self.received} of {expected} bytes)")
        if self._error is not None:
            raise RuntimeError(f"sink failed after {self.received} bytes: {self._error!r}") from self._error
        if self.received != expected:
            raise RuntimeError(f"sink counted {self.received} bytes, expected {expected}")

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _OneConnection:
    """A loopback TCP server thread that accepts one connection and hands it to `serve`."""

    def __init__(self, timeout: float = 60.0) -> None:
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(timeout)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._run, name=f"bench-{type(self).__name__.lower()}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            connection, _ = self._listener.accept()
            with connection:
                self.serve(connection)
        except OSError:
            pass  # the other side went away: its count shows it

    def serve(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Source(_OneConnection):
    """Sends `chunk` `count` times to the one connection, then closes it."""

    def __init__(self, chunk: bytes, count: int, timeout: float = 60.0) -> None:
        self.chunk, self.count = chunk, count
        super().__init__(timeout)

    def serve(self, connection: socket.socket) -> None:
        for _ in range(self.count):
            connection.sendall(self.chunk)


class RpycServer(ChildProcess):
    """`rpyc_classic` as a child process on a free loopback port; `port` is known once it listens."""

    def __init__(self) -> None:
        # `python -m rpyc.cli.rpyc_classic` exits at once (the module has no __main__ guard),
        # so run the console script installed next to this interpreter.
        script = Path(sys.executable).with_name("rpyc_classic")
        super().__init__(
            [sys.executable, str(script), "--host", HOST, "-p", "0"], r"server started on \[[^\]]*\]:(\d+)"
        )
        self.port = 0

    def __enter__(self) -> Self:
        self.port = int(self.start().match.group(1))
        return self


class Responder(_OneConnection):
    """An instrument's command port: one answer line for each line of the one connection."""

    ANSWER = b"+1.234567E+00\r\n"

    def serve(self, connection: socket.socket) -> None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with connection.makefile("rb") as lines:
            while lines.readline():
                connection.sendall(self.ANSWER)
