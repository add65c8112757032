"""One WebSocket to the agent over a blocking socket, safe to write from many threads while one reads.

websockets' sans-I/O client protocol does the upgrade and frames what the client sends with TLS;
the frames the agent sends are parsed here (`_messages`), straight from one buffer: a bulk message
is copied once on its way to the caller, not three times.
TLS runs in memory (`ssl.MemoryBIO`), so reading and writing never share an OpenSSL object at the
same time. Writers take `_writing` for the whole of one frame, so frames and TLS records leave in
order; the reader never writes: pongs and TLS records it causes are sent by the next writer or by
`flush`. So a writer blocked on a full socket never stops the reader.
"""

from __future__ import annotations

import math
import os
import select
import selectors
import socket
import ssl
import struct
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.speedups import apply_mask
from websockets.uri import parse_uri

from protocol.channel import MAX_FRAME
from protocol.spin import SpinRule

RECEIVE = 1 << 20
"""Bytes read from the socket at once."""
SPIN = 500e-6
"""Seconds a read polls for the agent's answer before it sleeps (see `_Readable`): long enough for an answer
through a gateway and two replicas on a LAN; the rule stops spinning for a link slower than that."""


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
        self._buffer = bytearray()
        """What came from the agent and is no whole frame yet (or not parsed yet)."""
        self._start = 0
        """Where in `_buffer` the next frame starts (parsed frames are dropped from it now and then, not each)."""
        self._fragments: list[bytes] | None = None
        self._readable = _Readable(sock)
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
        if self._ended:
            raise LinkClosed(self._ended)
        if messages := self._messages():  # whole frames that came with the upgrade
            return messages
        try:
            if not self._readable.wait(timeout):  # TLS leaves nothing pending: _decrypt takes all
                return None
            data = self.sock.recv(RECEIVE)
        except (OSError, ValueError) as exc:  # ValueError: closed here already
            raise LinkClosed(str(exc)) from exc
        try:
            with self._state:
                self._buffer += self._decrypt(data) if self._tls is not None else data
            messages = self._messages()
        except ssl.SSLError as exc:  # a TLS record broken on the way: the link is gone
            raise LinkClosed(str(exc)) from exc
        if not data and not self._ended:
            self._ended = "the connection was closed"
        if self._ended and not messages:
            raise LinkClosed(self._ended)
        return messages  # what came before the end first: the next read says it ended

    def _messages(self) -> list[bytes]:
        """The binary messages the buffer holds whole, parsed (RFC 6455 section 5), and what control frames
        ask: a pong for a ping (sent by the next writer or `flush`), the end for a close."""
        messages: list[bytes] = []
        buffer, start = self._buffer, self._start
        while not self._ended and len(buffer) - start >= 2:
            first, second = buffer[start], buffer[start + 1]
            opcode, length, at = first & 0x0F, second & 0x7F, start + 2
            if length == 126:
                if len(buffer) - start < 4:
                    break
                length, at = int.from_bytes(buffer[at : at + 2]), at + 2
            elif length == 127:
                if len(buffer) - start < 10:
                    break
                length, at = int.from_bytes(buffer[at : at + 8]), at + 8
            if first & 0x70 or second & 0x80:
                raise LinkClosed("the agent sent a frame with reserved bits or a mask: no WebSocket of ours")
            if length > MAX_FRAME:
                raise LinkClosed(f"the agent sent a frame of {length} bytes, over the limit of {MAX_FRAME}")
            if len(buffer) - at < length:
                break
            payload = bytes(buffer[at : at + length])
            start = at + length
            self._frame(first & 0x80 != 0, opcode, payload, messages)
        if start >= len(buffer):
            del buffer[:]
            start = 0
        elif start > RECEIVE:  # now and then, not after every frame: a bulk buffer is not moved for each
            del buffer[:start]
            start = 0
        self._start = start
        return messages

    def _frame(self, fin: bool, opcode: int, payload: bytes, messages: list[bytes]) -> None:
        if opcode == Opcode.BINARY.value or (opcode == Opcode.CONT.value and self._fragments is not None):
            if opcode == Opcode.BINARY.value and self._fragments is not None:
                raise LinkClosed("the agent began a message inside another")
            if fin and self._fragments is None:
                messages.append(payload)
                return
            parts = (self._fragments or []) + [payload]
            if sum(map(len, parts)) > MAX_FRAME:
                raise LinkClosed(f"the agent sent a message over the limit of {MAX_FRAME} bytes")
            self._fragments = None if fin else parts
            if fin:
                messages.append(b"".join(parts))
        elif opcode == Opcode.PING.value:
            with self._state:
                if self._protocol.state is State.OPEN:
                    self._protocol.send_pong(payload)
        elif opcode == Opcode.PONG.value:
            pass  # any frame that arrives tells the keeper the link lives
        elif opcode == Opcode.CLOSE.value:
            with self._state:
                if self._protocol.state is State.OPEN:
                    code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
                    self._protocol.send_close(code if code != 1005 else None)
            self._ended = "the agent closed the channel"
        elif opcode == Opcode.TEXT.value:
            raise LinkClosed("the agent sent a text frame; the channel speaks binary frames only")
        elif opcode == Opcode.CONT.value:
            raise LinkClosed("the agent sent a continuation frame with no message begun")
        else:
            raise LinkClosed(f"the agent sent a frame of opcode {opcode}, which no WebSocket has")

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
        """Send the upgrade request and read the agent's answer: a 101's head goes to websockets, and the frames
        after it are parsed here; a refusal goes to websockets whole, its body too (InvalidStatus names it)."""
        with self._state:
            out = self._pending()
        self.sock.sendall(out)
        received = bytearray()
        while (end := received.find(b"\r\n\r\n")) < 0:
            received += self._receive_plain()
        switching = bytes(received[9:12]) == b"101"
        events = self._feed(bytes(received[: end + 4] if switching else received))
        while not events:  # a refusal's body, read to its end
            data = self._receive_plain(eof_ends=True)
            events = self._feed(data)
            if not data and not events:
                raise ConnectionResetError("the agent closed the connection inside its answer to the upgrade")
        if switching:
            self._buffer += received[end + 4 :]
        response = events[0]
        assert isinstance(response, Response)
        if self._protocol.handshake_exc is not None:
            exc = self._protocol.handshake_exc
            raise exc if isinstance(exc, InvalidHandshake) else InvalidStatus(response)
        return response

    def _receive_plain(self, eof_ends: bool = False) -> bytes:
        data = self.sock.recv(RECEIVE)
        if not data and not eof_ends:
            raise ConnectionResetError("the agent closed the connection during the upgrade")
        with self._state:
            return self._decrypt(data) if self._tls is not None else data

    def _feed(self, data: bytes) -> list[Any]:
        """Give websockets what the upgrade's answer brought (b"": its end); the events it completes."""
        with self._state:
            if data:
                self._protocol.receive_data(data)
            else:
                self._protocol.receive_eof()
            return self._protocol.events_received()


class _Readable:
    """Waits for a socket to be readable: with poll() where there is one (not select(): it fails past file
    descriptor 1023), else with the platform's selector (Windows). With poll, a wait first spins (polls without
    sleeping) for up to `SPIN`, as protocol/spin.py rules: an answer on a fast link is often that close."""

    def __init__(self, sock: socket.socket) -> None:
        self._poll = select.poll() if hasattr(select, "poll") else None
        self._selector = None if self._poll is not None else selectors.DefaultSelector()
        self._spins = SpinRule()
        if self._poll is not None:
            self._poll.register(sock, select.POLLIN)
        else:
            assert self._selector is not None
            self._selector.register(sock, selectors.EVENT_READ)

    def wait(self, timeout: float | None) -> bool:
        if self._poll is None:
            assert self._selector is not None
            return bool(self._selector.select(timeout))
        if timeout != 0 and self._spins.due():
            poll, now = self._poll.poll, time.perf_counter
            until = now() + (SPIN if timeout is None else min(SPIN, timeout))
            while now() < until:
                if poll(0):
                    self._spins.saw(True)
                    return True
            self._spins.saw(False)
        return bool(self._poll.poll(-1 if timeout is None else max(0, math.ceil(timeout * 1000))))  # ms, rounded up


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
