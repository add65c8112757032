"""`python -m lab.echo`: UDP and TCP echo peers for trying sockets without hardware.

Like MATLAB's echoudp/echotcpip: every UDP datagram goes back to its sender, every TCP
connection gets its own bytes back until it closes. Runs until SIGTERM or Ctrl+C, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from typing import Any, cast

from protocol import host_port


class UdpEcho(asyncio.DatagramProtocol):
    """Sends each datagram back to the address it came from."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's, though not a subclass

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.transport.sendto(data, addr)


async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo one TCP connection until the peer closes it or it breaks."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass  # a cancel is the shutdown; ending quietly avoids Python 3.11 logging it as an error
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def announce(kind: str, sockname: tuple[Any, ...], role: str = "echo") -> None:
    """Print the banner line that tells a caller the real address: `<role> <kind> listening on HOST:PORT`."""
    print(f"{role} {kind} listening on {host_port(*sockname[:2])}", flush=True)


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (where the loop supports signal handlers)."""
    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C arrives as KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(host: str, udp: int | None, tcp: int | None) -> None:
    """Start the asked-for servers, print their banners and run until stopped."""
    stop = stop_event()
    transport, server = None, None
    try:
        if udp is not None:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(UdpEcho, local_addr=(host, udp))
            announce("udp", transport.get_extra_info("sockname"))
        if tcp is not None:
            server = await asyncio.start_server(echo_stream, host, tcp)
            announce("tcp", server.sockets[0].getsockname())
        await stop.wait()
    finally:
        if transport is not None:
            transport.close()
        if server is not None:
            server.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="engee-echo", description="Echo UDP datagrams and TCP streams back.")
    parser.add_argument("--udp", type=int, metavar="PORT", help="UDP port to echo on (0 picks a free one)")
    parser.add_argument("--tcp", type=int, metavar="PORT", help="TCP port to echo on (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    args = parser.parse_args(argv)
    if args.udp is None and args.tcp is None:
        parser.error("give --udp PORT, --tcp PORT or both")
    for port in (args.udp, args.tcp):
        if port is not None and not 0 <= port <= 65535:
            parser.error(f"port {port} is outside 0..65535")
    return args


def main(argv: list[str] | None = None) -> int:
    """The `engee-echo` entry point; `argv` defaults to sys.argv[1:]."""
    args = parse_args(argv)
    return run_peer("engee-echo", args.host, serve(args.host, args.udp, args.tcp))


def run_peer(program: str, host: str, serving: Coroutine[Any, Any, None]) -> int:
    """Run a peer until SIGTERM or Ctrl+C (exit status 0); 1, with the reason, when it cannot listen."""
    try:
        asyncio.run(serving)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"{program}: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
