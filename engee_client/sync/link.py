"""One WebSocket to the agent over a blocking socket, safe to write from many threads while one reads.

websockets' sans-I/O client protocol does the upgrade and the framing; this file moves its bytes.
TLS runs in memory (`ssl.MemoryBIO`), so reading and writing never share an OpenSSL object at the
same time. Writers take `_writing` for the whole of one frame, so frames and TLS records leave in
order; the reader never writes: pongs and TLS records it causes are sent by the next writer or by
`flush`. So a writer blocked on a full socket never stops the reader.
"""

from __future__ import annotations

import math
import os
import select
import socket
import ssl
import struct
import threading
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.speedups import apply_mask
from websockets.uri import parse_uri

from protocol.channel import MAX_FRAME

RECEIVE = 1 << 20
"""Bytes read from the socket at once."""


class LinkClosed(ConnectionError):
    """The link is gone: EOF, a reset, or the agent's close frame."""


class Link:
    """A WebSocket opened with `Link.open`; `send` from any thread, `read` from one at a time."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol, tls: ssl.SSLObject | None) -> None:
        self.sock = sock
        self._protocol = protocol
        self._tls = tls
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._state = threading.Lock()
        """Guards the protocol and TLS objects; never held during I/O."""
        self._writing = threading.Lock()
        self._early: list[Frame] = []
        self._readable = select.poll()  # not select(): it fails past file descriptor 1023
        self._readable.register(sock, select.POLLIN)
        self._masks, self._masks_at = b"", 0
        self._ended = ""

    @classmethod
    def open(
        cls, url: str, headers: dict[str, str], context: ssl.SSLContext | None, timeout: float
    ) -> tuple[Link, Response]:
        """Connect, shake hands (TLS when `context`), upgrade; the link and the agent's 101 response.

        InvalidStatus when the agent answers the upgrade with another status; OSError when it cannot be reached.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            protocol = ClientProtocol(parse_uri(url), max_size=MAX_FRAME)
            link = cls(sock, protocol, None)
            if context is not None:
                link._tls = context.wrap_bio(link._incoming, link._outgoing, server_hostname=host)
                link._handshake_tls()
            request = protocol.connect()
            for name, value in headers.items():
                request.headers[name] = value
            with link._state:
                protocol.send_request(request)
            response = link._upgrade()
            sock.settimeout(None)
            return link, response
        except BaseException:
            sock.close()
            raise

    def send(self, data: bytes) -> None:
        """Send one binary frame (and whatever the reader left to send); LinkClosed when the link is gone.

        Without TLS the frame's header and its masked payload go out with one sendmsg, not joined first:
        a bulk send then costs one copy of its bytes here (the mask), not three."""
        with self._writing:
            with self._state:
                if self._protocol.state is not State.OPEN:
                    raise LinkClosed(self._ended or "the link is closing")
                if self._tls is not None:
                    self._protocol.send_binary(data)
                    parts = [self._pending()]
                else:
                    mask = self._mask()
                    parts = [self._pending(), _binary_header(len(data), mask), apply_mask(data, mask)]
            self._put(parts)

    def _put(self, parts: list[bytes]) -> None:
        """Called with `_writing` held: the bytes on the socket. Cut short by anything (an interrupt amid a
        frame), the link is unusable: it is shut, so the next call links again at once."""
        try:
            _send_all(self.sock, [part for part in parts if part])
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):
                raise LinkClosed(str(exc)) from exc
            raise

    def _mask(self) -> bytes:
        """A fresh masking key from the OS's random source, drawn 1024 keys at a time (one system call, not one
        each). Called with `_writing` held."""
        if self._masks_at == len(self._masks):
            self._masks, self._masks_at = os.urandom(4096), 0
        self._masks_at += 4
        return self._masks[self._masks_at - 4 : self._masks_at]

    def ping(self) -> None:
        with self._writing:
            with self._state:
                if self._protocol.state is not State.OPEN:
                    raise LinkClosed(self._ended or "the link is closing")
                self._protocol.send_ping(b"")
                out = self._pending()
            self._put([out])

    def flush(self) -> None:
        """Send what reading left to send (pongs, TLS records), if no writer is at it: it will send them itself."""
        if not self._writing.acquire(blocking=False):
            return
        try:
            with self._state:
                out = self._pending()
            if out:
                self._put([out])
        finally:
            self._writing.release()

    def read(self, timeout: float | None) -> list[bytes] | None:
        """The binary messages that arrive within `timeout` seconds (None: nothing came); LinkClosed at the end."""
        if self._early:
            frames, self._early = self._early, []
            return self._binaries(frames)
        if self._ended:
            raise LinkClosed(self._ended)
        try:
            wait = -1 if timeout is None else max(0, math.ceil(timeout * 1000))  # ms, rounded up: never a busy loop
            if not self._readable.poll(wait):  # TLS leaves nothing pending: _decrypt takes all
                return None
            data = self.sock.recv(RECEIVE)
        except (OSError, ValueError) as exc:  # ValueError: closed here already
            raise LinkClosed(str(exc)) from exc
        try:
            frames = [event for event in self._take_in(data) if isinstance(event, Frame)]
        except ssl.SSLError as exc:  # a TLS record broken on the way: the link is gone
            raise LinkClosed(str(exc)) from exc
        messages = self._binaries(frames)
        if not data or self._protocol.state is State.CLOSED or self._protocol.close_expected():
            self._ended = "the agent closed the channel" if data else "the connection was closed"
            if not messages:
                raise LinkClosed(self._ended)
        return messages  # what came before the end first: the next read says it ended

    def close(self, code: int | None = None) -> None:
        """Shut the link; with `code`, say so first with a close frame (a client that closes says 1000)."""
        if code is not None and self._writing.acquire(timeout=1):
            try:
                with self._state:
                    if self._protocol.state is State.OPEN:
                        self._protocol.send_close(code)
                    out = self._pending()
                self.sock.sendall(out)
            except OSError:
                pass
            finally:
                self._writing.release()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _take_in(self, data: bytes) -> list[Any]:
        """Feed what the socket gave (b"": its end) to TLS and the protocol; the events it completes."""
        with self._state:
            plain = self._decrypt(data) if self._tls is not None else data
            if data:
                self._protocol.receive_data(plain)
            else:
                self._protocol.receive_eof()
            return self._protocol.events_received()

    def _binaries(self, frames: list[Frame]) -> list[bytes]:
        messages = []
        for frame in frames:
            if frame.opcode is Opcode.BINARY:
                messages.append(bytes(frame.data))
            elif frame.opcode is Opcode.TEXT:
                raise LinkClosed("the agent sent a text frame; the channel speaks binary frames only")
        return messages

    def _pending(self) -> bytes:
        """Called with `_state` held: the bytes to put on the socket now, encrypted when TLS."""
        plain = b"".join(self._protocol.data_to_send())
        if self._tls is None:
            return plain
        if plain:
            self._tls.write(plain)
        return self._outgoing.read()

    def _decrypt(self, data: bytes) -> bytes:
        assert self._tls is not None
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
        chunks = []
        while True:
            try:
                piece = self._tls.read(RECEIVE)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                break
            if not piece:  # the end of the TLS stream
                break
            chunks.append(piece)
        return b"".join(chunks)

    def _handshake_tls(self) -> None:
        assert self._tls is not None
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self._outgoing.read())
                data = self.sock.recv(RECEIVE)
                if not data:
                    raise ConnectionResetError("the connection closed during the TLS handshake") from None
                self._incoming.write(data)
        self.sock.sendall(self._outgoing.read())

    def _upgrade(self) -> Response:
        with self._state:
            out = self._pending()
        self.sock.sendall(out)
        while True:
            data = self.sock.recv(RECEIVE)
            events = self._take_in(data)
            if events:
                response = events[0]
                assert isinstance(response, Response)
                self._early = [event for event in events[1:] if isinstance(event, Frame)]
                if self._protocol.handshake_exc is not None:
                    exc = self._protocol.handshake_exc
                    raise exc if isinstance(exc, InvalidHandshake) else InvalidStatus(response)
                return response
            if not data:
                raise ConnectionResetError("the agent closed the connection during the upgrade")


def _binary_header(length: int, mask: bytes) -> bytes:
    """A final, masked binary frame's header (RFC 6455 section 5.2), as a client sends it."""
    if length < 126:
        return struct.pack("!BB", 0x82, 0x80 | length) + mask
    if length < 65536:
        return struct.pack("!BBH", 0x82, 0x80 | 126, length) + mask
    return struct.pack("!BBQ", 0x82, 0x80 | 127, length) + mask


def _send_all(sock: socket.socket, parts: list[bytes]) -> None:
    sent = sock.sendmsg(parts)
    total = sum(len(part) for part in parts)
    if sent < total:  # cut short (a signal): the rest, the slow way
        sock.sendall(b"".join(parts)[sent:])
