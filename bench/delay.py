"""A userspace delay line for TCP on loopback, for benches: this machine's kernel has no netem qdisc.

`DelayProxy(upstream, delay)` listens on 127.0.0.1 and relays each accepted connection to `upstream`,
delivering every chunk it reads `delay` seconds (one way) after it read it, in order, in both
directions; so `delay=0.010` makes a 20 ms round trip. Reading goes on while earlier chunks are in
flight (no stop-and-wait), up to `window` bytes read and not yet delivered per direction; then reads
pause until deliveries bring it back under. So one direction carries at most `window / delay` bytes
per second, the way a long fat link's window caps its throughput; the default 64 MiB window allows
6400 MiB/s at 10 ms, more than loopback carries here, so only the delay is felt unless `window` is lowered.

An EOF is delivered `delay` after it was read, as a shutdown of the other side's write half, and
both sockets close once both directions have delivered theirs. A reset, or any error, on either
side resets both at once, dropping what is in flight. Not modelled: connection setup (the client's
connect completes at once, without a round trip), loss, jitter and bandwidth. Chunks leave on the
first event-loop wakeup at or after their due time, so delays run a little long: epoll waits in whole
milliseconds, and on the 2-core development VM a 10 ms delay came out 0.25-0.4 ms long per direction;
with `delay=0` a chunk is written as soon as it is read (`python -m bench.delay_check` measures both).

It runs its own asyncio event loop in a background thread, so blocking code can use it::

    with DelayProxy(("127.0.0.1", port), delay=0.010) as proxy:
        client = Agent(proxy.url_for("http"), ...)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import sys
import threading
from collections import deque
from typing import Self

from lab.process import ChildProcess

HOST = "127.0.0.1"
"""The address the proxy listens on."""
WINDOW = 64 << 20
"""Default bound on the bytes read and not yet delivered, per direction."""


def _loopback(upstream: tuple[str, int]) -> tuple[str, int]:
    """`upstream` if its host is a 127.0.0.0/8 or ::1 address; ValueError otherwise."""
    host, port = upstream
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"upstream host must be a loopback address, not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"upstream {host} is not a loopback address (127.0.0.0/8 or ::1)")
    return host, port


class _End(asyncio.Protocol):
    """One of a relayed connection's two sockets: what it reads goes into `outgoing`, what `incoming`
    delivers is written to it."""

    transport: asyncio.Transport
    outgoing: _Pipe
    incoming: _Pipe

    def __init__(self, link: _Link) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.link.made(self)

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.push(None)
        return True  # keep the write half open: the other direction may still be carrying data

    def pause_writing(self) -> None:
        self.incoming.sink_full(True)

    def resume_writing(self) -> None:
        self.incoming.sink_full(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost()

    def reset(self) -> None:
        """Close with an RST rather than a FIN (a zero linger), dropping unsent data."""
        if not self.transport.is_closing():  # after a close the socket may be gone already
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()


class _Pipe:
    """One direction of a relayed connection: a queue of (due time, chunk or None for EOF), drained by
    a timer that writes each chunk to `sink` at its due time."""

    def __init__(self, link: _Link, source: _End, sink: _End) -> None:
        self.link, self.source, self.sink = link, source, sink
        self.loop = link.loop
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.sink_blocked = False
        self.paused = False
        self.eof_read = False
        self.done = False
        source.outgoing = sink.incoming = self

    def push(self, data: bytes | None) -> None:
        """Queue what `source` just read (None: its EOF) for delivery `delay` from now."""
        if data is None:
            self.eof_read = True
        else:
            self.queued += len(data)
        if not self.queue and self.link.delay == 0:
            self._write([data])
            return
        due = self.loop.time() + self.link.delay
        self.queue.append((due, data))
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._deliver)
        self._throttle()

    def _deliver(self) -> None:
        """The timer: write the head of the queue, and whatever else is due with it."""
        chunks = [self.queue.popleft()[1]]
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            chunks.append(self.queue.popleft()[1])
        self.timer = self.loop.call_at(self.queue[0][0], self._deliver) if self.queue else None
        self._write(chunks)

    def _write(self, chunks: list[bytes | None]) -> None:
        eof = chunks[-1] is None
        data = [chunk for chunk in chunks if chunk is not None]
        if data:
            self.sink.transport.writelines(data)
            self.queued -= sum(map(len, data))
        if eof:
            self.sink.transport.write_eof()
            self.done = True
            self.link.finished()
        else:
            self._throttle()

    def sink_full(self, full: bool) -> None:
        """`sink`'s write buffer crossed its high (True) or low (False) water mark."""
        self.sink_blocked = full
        self._throttle()

    def _throttle(self) -> None:
        """Pause reading `source` while the window is full or `sink` cannot keep up; resume after."""
        if self.eof_read:
            return  # reading has stopped for good; resuming it would read the EOF again
        pause = self.queued > self.link.window or self.sink_blocked
        if pause != self.paused:
            self.paused = pause
            if pause:
                self.source.transport.pause_reading()
            else:
                self.source.transport.resume_reading()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class _Link:
    """One relayed connection: the accepted client, the connection to upstream, a pipe each way."""

    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.delay, self.window = proxy.delay, proxy.window
        self.client = _End(self)
        self.server = _End(self)
        self.pipes: tuple[_Pipe, _Pipe] | None = None
        self.ends: list[_End] = []
        """The ends connected so far: the client, then the server."""
        self.connecting: asyncio.Task[None] | None = None
        self.closed = False
        proxy.links.add(self)

    def made(self, end: _End) -> None:
        """`end` is connected; for the client, connect upstream now, reading nothing until then."""
        self.ends.append(end)
        if end is self.client:
            end.transport.pause_reading()
            self.connecting = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: self.server, *self.proxy.upstream)
        except OSError:
            self.reset()
            return
        if self.closed:
            self.server.reset()
            return
        self.pipes = (_Pipe(self, self.client, self.server), _Pipe(self, self.server, self.client))
        self.client.transport.resume_reading()

    def finished(self) -> None:
        """A pipe delivered its EOF; once both have, close both ends (after their buffered data)."""
        if self.pipes is not None and all(pipe.done for pipe in self.pipes):
            self.closed = True
            self.proxy.links.discard(self)
            self.client.transport.close()
            self.server.transport.close()

    def lost(self) -> None:
        """An end's connection is gone: unless both closed normally, a reset or error, so reset both."""
        if not self.closed:
            self.reset()

    def reset(self) -> None:
        """Reset both ends now, dropping whatever is in flight."""
        self.closed = True
        self.proxy.links.discard(self)
        if self.connecting is not None:
            self.connecting.cancel()
        for pipe in self.pipes or ():
            pipe.cancel()
        for end in self.ends:
            end.reset()


class DelayProxy:
    """A TCP relay on 127.0.0.1 to the loopback `upstream`, adding `delay` seconds each way.

    `port` (0: any free one) is where it listens; `address` is (HOST, port); `url_for(scheme)` is
    its URL. `window` bounds the bytes read and not yet delivered, per direction and connection.
    Starts at construction, in its own thread; `close()` (or leaving the `with`) resets any open
    connections and stops it.
    """

    def __init__(self, upstream: tuple[str, int], delay: float, *, window: int = WINDOW, port: int = 0) -> None:
        if delay < 0:
            raise ValueError(f"delay must be at least 0, not {delay}")
        if window < 1:
            raise ValueError(f"window must be at least 1 byte, not {window}")
        self.upstream = _loopback(upstream)
        self.delay = delay
        self.window = window
        self.links: set[_Link] = set()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="delay-proxy", daemon=True)
        self._thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(self._listen(port), self.loop).result()
        except BaseException:
            self._stop()
            raise
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.address: tuple[str, int] = (HOST, self.port)

    async def _listen(self, port: int) -> asyncio.Server:
        return await self.loop.create_server(lambda: _Link(self).client, HOST, port)

    def url_for(self, scheme: str) -> str:
        """`scheme://127.0.0.1:port`, e.g. `url_for("http")` for an HTTP client to go through the proxy."""
        return f"{scheme}://{HOST}:{self.port}"

    def close(self) -> None:
        """Stop listening, reset every relayed connection, stop the thread. Idempotent."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result()
            self._stop()

    async def _shutdown(self) -> None:
        self._server.close()
        for link in list(self.links):
            link.reset()
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let the resets' connection_lost callbacks close the sockets

    def _stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class DelayLine(ChildProcess):
    """A `DelayProxy` in a process of its own: the network between the notebook and the agent must not share
    the notebook's interpreter lock (in a thread of the bench, a busy client would slow its own link down).
    Use it as a context manager; `port`, `address` and `url_for` as the proxy's."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        host, port = _loopback(upstream)
        super().__init__([sys.executable, "-m", "bench.delay", host, str(port), str(delay)], r"delay proxy on (\d+)")
        self.port = 0
        self.address: tuple[str, int] = (HOST, 0)

    def started(self) -> None:
        self.port = int(self.match.group(1))
        self.address = (HOST, self.port)

    def url_for(self, scheme: str) -> str:
        return f"{scheme}://{HOST}:{self.port}"


if __name__ == "__main__":
    proxy = DelayProxy((sys.argv[1], int(sys.argv[2])), float(sys.argv[3]))
    print(f"delay proxy on {proxy.port}", flush=True)
    threading.Event().wait()
