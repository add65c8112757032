"""What the blocking and the asyncio client share, free of I/O: every operation, written once.

Each operation of a socket or an agent is a generator, a *flow*: it checks its arguments, yields
each call it needs as `(method, request, boot, seq)`, is sent back that call's `(response, boot)`
(or has the call's exception thrown in where it yielded), and returns the operation's result. An
`Exchange` drives one flow: it numbers each call, and turns each reply into the next step. The
blocking `Agent` sends the calls with `transport.call(...)`, `AsyncAgent` with
`await transport.call(...)`; nothing else differs between the two. (httpx runs its auth flows the
same way.)

Since a flow runs up to its first call before anything is sent, bad arguments raise
TypeError/ValueError before any network call, in both clients.
"""

from __future__ import annotations

import errno
import inspect
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Generator
from typing import Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from protocol import (
    CA_VARIABLE,
    METHODS,
    TOKEN_VARIABLE,
    AgentError,
    AgentRestartedError,
    AnyMethod,
    ErrorDetail,
    IncompleteReadError,
    Method,
    ProtocolError,
    exception_for,
    host_port,
    to_bytes,
)
from protocol.errors import describe_validation, is_type_error, where
from protocol.framing import MAX_LINE, MAX_TERMINATOR, item_size, pack_values, unpack_values
from protocol.models import (
    LONG_POLL,
    AcceptResponse,
    Address,
    AgentInfo,
    ConnectResponse,
    ReceiveResponse,
    Request,
    Response,
    SocketInfo,
)

from .calls import CallLog
from .display import Card
from .display import where as display_where
from .progress import Progress, TransferInterrupted, wanted
from .result import Descriptor, ResultUIntList
from .transport import Call, Reply

CHUNK = 4 * 1024 * 1024
"""A TCP send larger than this goes out in several calls; a stream keeps them in order."""
PIECE = 65536
"""The most one piece of pushed bytes takes at once."""
PIECE_WITH_PROGRESS = 1 << 20
"""A transfer with a bar goes in pieces of this many bytes."""
MAX_EXACT = 1 << 30
"""The most one receive_exactly or read_values takes (in pieces): it is held in memory whole."""
Piece = bytes | str | ResultUIntList
"""What `on_data` hands a callback: bytes of a stream, a line, or a datagram with its sender."""

T = TypeVar("T")
Req = TypeVar("Req", bound=Request)
Resp = TypeVar("Resp", bound=Response)
Waited = TypeVar("Waited", AcceptResponse, ConnectResponse, ReceiveResponse)
"""The answers of blocking methods, which may be `pending`."""
Step = tuple[AnyMethod, Request, "str | None", "int | None"]
"""What a flow yields: a method of the table, its request, the boot id to send, the call's seq (None: a new one)."""
Answer = tuple[Any, "str | None"]
"""What a flow is sent back: the call's response and the agent's boot id."""
Flow = Generator[Step, Answer, T]


def request_for(method: Method[Req, Resp], fields: dict[str, Any], url: str) -> Req:
    """The request of `method`; bad fields raise TypeError or ValueError naming the call."""
    try:
        return method.request(**fields)
    except ValidationError as exc:
        error = TypeError if is_type_error(exc) else ValueError
        raise error(f"{where(method.name, fields.get('descriptor'), url)}: {describe_validation(exc)}") from None


def one_call(
    url: str, method: Method[Req, Resp], boot: str | None = None, seq: int | None = None, /, **fields: Any
) -> Generator[Step, Answer, tuple[Resp, str | None]]:
    """The flow of one call of the table to the agent at `url`: its response and the agent's boot id."""
    request = request_for(method, fields, url)
    return (yield method, request, boot, seq)


class Exchange(Generic[T]):
    """One flow in progress: the next call to send, and what each reply means for the flow.

    `start`, then `reply` or `fail` for each call sent, until they return None: then `result` holds
    the operation's result. A blocking call cut by an interrupt (KeyboardInterrupt, or a cancelled
    task) is abandoned: the next call cancels it on the agent, which gives what it took back to its
    socket, so the next receive or accept gets it. Any other call just ends.
    """

    __slots__ = ("_call_id", "_calls", "_flow", "_step_sent", "_url", "result")

    def __init__(self, calls: CallLog, url: str, flow: Flow[T]) -> None:
        self._calls, self._url, self._flow = calls, url, flow
        self.result: T

    def start(self) -> Call | None:
        return self._advance(self._flow.send, None)

    def reply(self, reply: Reply) -> Call | None:
        """The reply to the last call: the flow goes on with its response, or with its error raised."""
        self._calls.end(self._call_id)
        outcome = reply.outcome
        if isinstance(outcome, ErrorDetail):
            method, request = self._step_sent[:2]
            error = exception_for(outcome, where(method.name, getattr(request, "descriptor", None), self._url))
            return self._advance(self._flow.throw, error)
        return self._advance(self._flow.send, (outcome, reply.boot))

    def fail(self, exc: BaseException) -> Call | None:
        """The last call raised `exc` (the link failed, or an interrupt): the flow goes on with it raised."""
        if not isinstance(exc, Exception) and self._step_sent[0].blocking:
            self._calls.abandon(self._call_id)
        else:
            self._calls.end(self._call_id, answered=False)
        return self._advance(self._flow.throw, exc)

    def _advance(self, advance: Callable[[Any], Step], value: Any) -> Call | None:
        try:
            step = advance(value)
        except StopIteration as done:
            self.result = done.value
            return None
        method, request, boot, seq = self._step_sent = step
        self._call_id = self._calls.begin(seq)
        return Call(method, request, self._call_id, boot)


class Runs(Protocol):
    """What a socket needs of its agent: its URL, its call log, and a way to run a flow (blocking or awaited)."""

    url: str
    calls: CallLog


class SocketCore:
    """A socket that lives on an agent, without I/O: its state, and each of its methods as a flow.

    `Socket` and `AsyncSocket` add the public methods, each running one of these flows on its agent.
    """

    def __init__(self, agent: Runs, info: SocketInfo, boot: str | None) -> None:
        self.agent = agent
        self.descriptor = info.descriptor
        self.family = info.family
        self.socket_type = info.socket_type
        self._boot = boot
        self._closed = False
        self._update(info.local, info.peer)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"local={self.local_address} peer={self.peer_address}"
        return f"<{type(self).__name__} {self.descriptor} {self.family}/{self.socket_type} {state} at {self.agent.url}>"

    def _card(self, info: SocketInfo | None = None) -> Card:
        """What the socket shows: what this client knows, and the agent's live `info` when it was asked."""
        local, peer = (info.local, info.peer) if info else (self.local_address, self.peer_address)
        facts = [
            ("socket", f"{self.family}/{self.socket_type}"),
            ("local", _address_text(local)),
            ("peer", _address_text(peer)),
            ("state", "closed" if self._closed else "listening" if info and info.listening else "open"),
        ]
        if info is not None:
            facts += [("bytes in", str(info.bytes_in)), ("bytes out", str(info.bytes_out))]
            if info.dropped:
                facts.append(("datagrams dropped", str(info.dropped)))
        return Card(f"Socket {self.descriptor}", [*facts, ("agent", display_where(self.agent.url))])

    def _bind_flow(self, host: str, port: int) -> Flow[None]:
        info = yield from self._call(METHODS.bind, host=host, port=port)
        self._update(info.local, info.peer)

    def _listen_flow(self, backlog: int) -> Flow[None]:
        info = yield from self._call(METHODS.listen, backlog=backlog)
        self._update(info.local, info.peer)

    def _accept_flow(self, timeout: float | None) -> Flow[int]:
        descriptor = (yield from self._wait(METHODS.accept, timeout)).descriptor
        if descriptor is None:
            raise ProtocolError(f"{self._where('accept')}: the agent accepted a connection without a descriptor")
        return Descriptor(descriptor, self._boot)

    def _connect_flow(self, host: str, port: int, timeout: float | None) -> Flow[int]:
        result = yield from self._wait(METHODS.connect, timeout, host=host, port=port)
        self._update(result.local, result.peer)
        return 0

    def _send_flow(self, message: Any, progress: bool | None = None) -> Flow[int]:
        data = self._bytes("send", message)
        shown = wanted(progress, len(data))
        if self.socket_type == "SOCK_DGRAM" or (len(data) <= CHUNK and not shown):
            return (yield from self._call(METHODS.send, data=data)).sent
        piece = PIECE_WITH_PROGRESS if shown else CHUNK
        bar = Progress("send", len(data), progress) if shown else None
        sent = 0
        try:
            for start in range(0, len(data), piece):
                done = (yield from self._call(METHODS.send, data=data[start : start + piece])).sent
                sent += done
                if bar:
                    bar.update(done)
        except KeyboardInterrupt as exc:
            raise TransferInterrupted(
                f"{self._where('send')}: interrupted; {sent} of {len(data)} bytes went out "
                f"(and the {piece} in flight may have)",
                sent,
            ) from exc
        finally:
            if bar:
                bar.close()
        return sent

    def _send_to_flow(self, message: Any, host: str, port: int) -> Flow[int]:
        data = self._bytes("send_to", message)
        return (yield from self._call(METHODS.send_to, data=data, host=host, port=port)).sent

    def _write_line_flow(self, text: str, terminator: str | bytes, encoding: str) -> Flow[int]:
        return (yield from self._send_flow(self._line(text, terminator, encoding, "write_line")))

    def _read_line_flow(
        self, terminator: str | bytes, timeout: float | None, encoding: str, max_length: int
    ) -> Flow[str]:
        ending = self._terminator(terminator, encoding, "read_line")
        line = yield from self._framed(
            METHODS.read_line, timeout, terminator=ending.decode("latin-1"), max_length=max_length
        )
        return self._text(line, encoding, "read_line")

    def _query_flow(
        self, text: str, terminator: str | bytes, timeout: float | None, encoding: str, max_length: int
    ) -> Flow[str]:
        data = self._line(text, terminator, encoding, "query")
        ending = self._terminator(terminator, encoding, "query").decode("latin-1")
        answer = yield from self._framed(
            METHODS.query, timeout, METHODS.read_line, data=data, terminator=ending, max_length=max_length
        )
        return self._text(answer, encoding, "query")

    def _receive_exactly_flow(
        self, nbytes: int, timeout: float | None, progress: bool | None = None, method: str = "receive_exactly"
    ) -> Flow[bytes]:
        """Exactly `nbytes`; a large read goes in pieces with a bar, and what it got is never lost: an
        interrupt, a timeout or the end of the stream hands it over in the exception's `data`."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1 or not wanted(progress, nbytes):
            return (yield from self._framed(METHODS.receive_exactly, timeout, nbytes=nbytes))
        if nbytes > MAX_EXACT:
            raise ValueError(f"{self._where(method)}: {nbytes} bytes is over the most one read takes, {MAX_EXACT}")
        deadline = None if timeout is None else time.monotonic() + timeout
        bar, got = Progress(method, nbytes, progress), bytearray()
        try:
            while len(got) < nbytes:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                size = min(PIECE_WITH_PROGRESS, nbytes - len(got))
                got += yield from self._framed(METHODS.receive_exactly, left, nbytes=size)
                bar.update(size)
        except KeyboardInterrupt as exc:
            message = f"{self._where(method)}: interrupted after {len(got)} of {nbytes} bytes, in this error's .data"
            raise TransferInterrupted(message, len(got), bytes(got)) from exc
        except (TimeoutError, EOFError) as exc:
            if got and not (isinstance(exc, OSError) and exc.errno):
                exc.args = (f"{exc.args[0]}; the {len(got)} bytes before it are in this error's .data",)
                exc.data = bytes(got)  # type: ignore[union-attr]
            raise
        finally:
            bar.close()
        return bytes(got)

    def _read_values_flow(
        self, count: int, datatype: str, byte_order: str, timeout: float | None, progress: bool | None = None
    ) -> Flow[list[int] | list[float]]:
        try:
            size = item_size(datatype, byte_order)
        except ValueError as exc:
            raise ValueError(f"{self._where('read_values')}: {exc}") from None
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"{self._where('read_values')}: count must be an int, not {type(count).__name__}")
        if count < 0:
            raise ValueError(f"{self._where('read_values')}: count must be >= 0, not {count}")
        if count == 0:
            return []
        data = yield from self._receive_exactly_flow(count * size, timeout, progress, "read_values")
        return unpack_values(data, datatype, byte_order)

    def _write_values_flow(self, values: Any, datatype: str, byte_order: str) -> Flow[int]:
        try:
            data = pack_values(list(values), datatype, byte_order)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{self._where('write_values')}: {exc}") from None
        return (yield from self._send_flow(data))

    def _bytes_available_flow(self) -> Flow[int]:
        return (yield from self._call(METHODS.bytes_available)).available

    def _set_option_flow(self, name: str, value: bool | int) -> Flow[None]:
        yield from self._call(METHODS.set_option, name=name, value=value)

    def _get_option_flow(self, name: str) -> Flow[bool | int]:
        return (yield from self._call(METHODS.get_option, name=name)).value

    def _shutdown_flow(self, how: str | int) -> Flow[None]:
        how = _SHUTDOWNS.get(how, how) if isinstance(how, int) and not isinstance(how, bool) else how
        info = yield from self._call(METHODS.shutdown, how=how)
        self._update(info.local, info.peer)

    def _group_flow(self, group: str, interface: str | None, join: bool) -> Flow[None]:
        yield from self._call(METHODS.join_group if join else METHODS.leave_group, group=group, interface=interface)

    def _on_data_options(
        self, callback: object, terminator: str | bytes | None, min_bytes: int, encoding: str
    ) -> dict[str, Any]:
        """on_data's arguments checked, as the options of `_piece_flow`."""
        if callback is not None and not callable(callback):
            raise TypeError(
                f"{self._where('on_data')}: callback must be callable or None, not {type(callback).__name__}"
            )
        if terminator is not None:
            self._terminator(terminator, encoding, "on_data")
        if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or not 1 <= min_bytes <= PIECE:
            raise ValueError(f"{self._where('on_data')}: min_bytes must be an int within 1..{PIECE}, not {min_bytes!r}")
        return {"terminator": terminator, "min_bytes": min_bytes, "encoding": encoding}

    def _describe_flow(self) -> Flow[SocketInfo]:
        return (yield from self._call(METHODS.describe))

    def _dropped_flow(self) -> Flow[int]:
        return (yield from self._describe_flow()).dropped

    def _piece_flow(
        self, terminator: str | bytes | None, min_bytes: int, encoding: str, timeout: float | None
    ) -> Flow[Piece | None]:
        """The next piece of what arrives, as `on_data` hands it over: a line (str) when a terminator is set,
        else at least `min_bytes` bytes of a stream, or one datagram with its sender. None when `timeout`
        passed first (nothing taken); EOFError at the end of the stream, once what came before it (a last line
        without its terminator, fewer than `min_bytes` bytes) was handed over as bytes."""
        if self.socket_type == "SOCK_DGRAM":
            return (yield from self._receive_flow(65535, timeout))
        try:
            if terminator is not None:
                return (yield from self._line_piece(terminator, timeout, encoding))
            if min_bytes > 1:
                data = yield from self._framed(METHODS.receive_exactly, timeout, nbytes=min_bytes)
                more = yield from self._receive_flow(PIECE, 0)  # and what else is here already
                return data + bytes(more) if more else data
            result = yield from self._wait(METHODS.receive, timeout, bufsize=PIECE)
        except IncompleteReadError:
            tail = yield from self._receive_flow(PIECE, 0)  # the stream ended inside a piece: its rest
            if tail is None:
                raise
            return bytes(tail)
        except TimeoutError as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the system's ETIMEDOUT, not the wait's end
            return None
        if result.eof:
            raise EOFError(f"{self._where('receive')}: the peer closed the connection")
        return result.data

    def _line_piece(self, terminator: str | bytes, timeout: float | None, encoding: str) -> Flow[Piece | None]:
        """A line as text; one that is no text in `encoding` as its bytes, and one over MAX_LINE as bytes in
        pieces, so a callback is handed everything, and one odd line never stops the rest."""
        ending = self._terminator(terminator, encoding, "on_data").decode("latin-1")
        try:
            line = yield from self._framed(METHODS.read_line, timeout, terminator=ending, max_length=MAX_LINE)
        except ValueError:
            result = yield from self._receive_flow(PIECE, timeout)
            return bytes(result) if result is not None else None
        try:
            return line.decode(encoding)
        except UnicodeError:
            return line

    def _receive_flow(self, bufsize: int, timeout: float | None) -> Flow[ResultUIntList | None]:
        try:
            result = yield from self._wait(METHODS.receive, timeout, bufsize=bufsize)
        except _WaitExpired:
            return None
        if result.eof:
            return None
        return ResultUIntList(result.data, result.peer.as_tuple() if result.peer else None, result.truncated)

    def _is_open_flow(self, socket_descriptor: int | None) -> Flow[bool]:
        if socket_descriptor is None:
            if self._closed:
                return False
            socket_descriptor = self.descriptor
        try:
            # Asked of the agent even for this socket's own descriptor: never refused for being closed here.
            return (
                yield from one_call(self.agent.url, METHODS.is_open, self._boot, None, descriptor=socket_descriptor)
            )[0].open
        except AgentRestartedError:
            return False  # the restart closed every socket of before

    def _close_flow(self) -> Flow[None]:
        if self._closed:
            return
        try:
            yield from self._call(METHODS.close)
        except AgentRestartedError:
            pass  # the restart already closed it
        self._closed = True

    def _update(self, local: Address | None, peer: Address | None) -> None:
        self.local_address = local.as_tuple() if local else None
        self.peer_address = peer.as_tuple() if peer else None

    def _call(self, method: Method[Req, Resp], **fields: Any) -> Flow[Resp]:
        fields.setdefault("descriptor", self.descriptor)
        if self._closed and fields["descriptor"] == self.descriptor:
            raise self._not_open(method.name)
        return (yield from one_call(self.agent.url, method, self._boot, None, **fields))[0]

    def _framed(
        self, method: Method[Req, ReceiveResponse], timeout: float | None, then: AnyMethod | None = None, **fields: Any
    ) -> Flow[bytes]:
        """A framed read's bytes; on timeout, a TimeoutError that says how many came (they stay readable)."""
        if self.socket_type == "SOCK_DGRAM":
            message = f"{self._where(method.name)}: {method.name} reads a stream; on UDP, receive each datagram"
            raise OSError(errno.EOPNOTSUPP, message)
        try:
            result = yield from self._wait(method, timeout, then=then, **fields)
        except _WaitExpired as exc:
            buffered = exc.last.buffered if isinstance(exc.last, ReceiveResponse) else 0
            raise TimeoutError(f"{exc}, with {buffered} bytes read so far; they stay readable") from None
        return result.data

    def _bytes(self, method: str, message: Any) -> bytes:
        try:
            return to_bytes(message)
        except (TypeError, ValueError) as exc:  # "message must be bytes ...: encode it first", and where
            kind = TypeError if isinstance(exc, TypeError) else ValueError
            raise kind(f"{self._where(method)}: {exc}") from None

    def _terminator(self, terminator: str | bytes, encoding: str, method: str) -> bytes:
        ending = (
            self._encoded(terminator, encoding, method, "terminator") if isinstance(terminator, str) else terminator
        )
        if not isinstance(ending, bytes | bytearray) or not 1 <= len(ending) <= MAX_TERMINATOR:
            raise ValueError(
                f"{self._where(method)}: terminator must be 1..{MAX_TERMINATOR} bytes (or a str), not {terminator!r}"
            )
        return bytes(ending)

    def _line(self, text: str, terminator: str | bytes, encoding: str, method: str) -> bytes:
        if not isinstance(text, str):
            raise TypeError(f"{self._where(method)}: text must be a str, not {type(text).__name__}")
        return self._encoded(text, encoding, method, "text") + self._terminator(terminator, encoding, method)

    def _encoded(self, text: str, encoding: str, method: str, what: str) -> bytes:
        try:
            return text.encode(encoding)
        except (UnicodeError, LookupError) as exc:
            raise ValueError(f"{self._where(method)}: {what} {text!r} cannot be encoded as {encoding}: {exc}") from None

    def _text(self, data: bytes, encoding: str, method: str) -> str:
        try:
            return data.decode(encoding)
        except UnicodeError as exc:
            raise ValueError(f"{self._where(method)}: the line {data[:80]!r} is not {encoding}: {exc}") from None

    def _wait(
        self, method: Method[Req, Waited], timeout: float | None, then: AnyMethod | None = None, **fields: Any
    ) -> Flow[Waited]:
        """A blocking call as a series of bounded waits, so no HTTP timeout ever cuts it.

        Interrupted (KeyboardInterrupt, or cancelled in asyncio), the wait is cancelled on the agent with
        the next call, and whatever it took goes back to the socket for the next receive or accept.
        """
        name = method.name
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"{self._where(name)}: timeout must be None or a number of seconds, not {type(timeout).__name__}"
                )
            if not 0 <= timeout < math.inf:
                raise ValueError(
                    f"{self._where(name)}: timeout must be a finite number of seconds >= 0, not {timeout!r}"
                )
        deadline = None if timeout is None else time.monotonic() + timeout
        fields["descriptor"] = self.descriptor
        if self._closed:
            raise self._not_open(name)
        url, boot = self.agent.url, self._boot
        while True:
            fields["wait"] = LONG_POLL if deadline is None else min(LONG_POLL, max(0.0, deadline - time.monotonic()))
            request = request_for(method, fields, url)
            result: Waited = (yield method, request, boot, None)[0]
            if not result.pending:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise _WaitExpired(f"{self._where(name)}: timed out after {timeout} s", result)
            if then is not None:  # what a query sent went once: the rest is waiting for its answer
                method, then = then, None
                fields.pop("data")

    def _not_open(self, method: str) -> OSError:
        """What a call on a socket this client closed raises, without asking the agent: what the agent would."""
        return OSError(errno.EBADF, f"{self._where(method)}: descriptor {self.descriptor} is not open")

    def _where(self, method: str) -> str:
        return where(method, self.descriptor, self.agent.url)


def _address_text(address: Address | tuple[str, int] | None) -> str:
    if address is None:
        return "-"
    return str(address) if isinstance(address, Address) else host_port(*address)


class _WaitExpired(TimeoutError):
    """The caller's own timeout passed; unlike an OS ETIMEDOUT from the agent, receive answers None."""

    def __init__(self, message: str, last: Response) -> None:
        super().__init__(message)
        self.last = last


_SHUTDOWNS = {0: "SHUT_RD", 1: "SHUT_WR", 2: "SHUT_RDWR"}
"""socket.SHUT_* numbers (the same on every system Python runs on), as the names the agent takes."""


class AgentCore:
    """An agent, without I/O: its URL, its call log, and the agent's own operations as flows.

    `Agent` and `AsyncAgent` add the public methods, running these flows over their transport.
    """

    url: str
    calls: CallLog
    display_name = "Agent"

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.calls = CallLog()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _card(
        self, info: AgentInfo | None, transport: str, rtt: float | None, sockets: list[SocketInfo] | None
    ) -> Card:
        """What the agent shows: where it is, what it runs, how far it is, and its sockets (when asked)."""
        facts = [("where", display_where(self.url)), ("transport", transport)]
        if info is not None:
            facts.insert(0, ("agent id", info.agent_id))
            facts.append(("version", f"{info.version} (protocol {info.protocol_version})"))
        if rtt is not None:
            facts.append(("round trip", f"{rtt * 1000:.2f} ms"))
        return Card(self.display_name, facts, sockets)

    def _socket_flow(
        self, family: str, socket_type: str, socket_descriptor: int
    ) -> Flow[tuple[SocketInfo, str | None]]:
        if socket_descriptor == 0:
            return (yield from one_call(self.url, METHODS.socket, family=family, socket_type=socket_type))
        boot = getattr(socket_descriptor, "boot", None)  # from accept: refused if the agent restarted since
        info, boot = yield from one_call(self.url, METHODS.describe, boot, None, descriptor=int(socket_descriptor))
        if (info.family, info.socket_type) != (family, socket_type):
            raise ValueError(
                f"descriptor {socket_descriptor} on agent {self.url} is "
                f"{info.family}/{info.socket_type}, not {family}/{socket_type}"
            )
        return info, boot

    def _sockets_flow(self, everyone: bool) -> Flow[list[SocketInfo]]:
        return (yield from one_call(self.url, METHODS.sockets, everyone=everyone))[0].sockets

    def _call_flow(
        self, method: AnyMethod | str, boot: str | None, seq: int | None, fields: dict[str, Any]
    ) -> Flow[Any]:
        if isinstance(method, str):
            if method not in METHODS:
                raise ValueError(f"{method!r} is not a method of the agent (methods: {', '.join(METHODS.names())})")
            method = METHODS[method]
        return (yield from one_call(self.url, method, boot, seq, **fields))[0]


def report(message: str, traceback_too: bool = False) -> None:
    """Say on stderr what went wrong where no caller can be told: in an on_data callback, or its reader."""
    print(f"engee_client: {message}", file=sys.stderr)
    if traceback_too:
        traceback.print_exc()


def raise_failures(failures: list[ErrorDetail], url: str) -> None:
    """Raise the first failure of pipelined sends that `flush` found, as the exception its error maps to."""
    if failures:
        first = failures[0]
        raise exception_for(first, where(first.method or "send", first.descriptor, url))


def credentials(url: str, token: str | None, verify: bool | str | None) -> tuple[str, bool | str]:
    """The token and the certificate check for the agent at `url`, from the arguments or the environment."""
    token = token or os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise AgentError(f"no token for the agent at {url}: pass token=... or set {TOKEN_VARIABLE}")
    if verify is None:
        verify = os.environ.get(CA_VARIABLE) or True
    return token, verify


COMPOSED = ("write_line", "read_values", "write_values", "on_data")
"""Socket methods made of the table's methods in the client, offered in the function style as well."""


def add_function_style(agent_type: type[AgentCore], socket_type: type[SocketCore]) -> None:
    """Give `agent_type` the seed's function style, `agent.bind(device, ...)`, for each method `socket_type` has.

    The functions are coroutine functions where the socket's methods are.
    """
    for name in (*METHODS.names(), *COMPOSED):
        if hasattr(socket_type, name) and name not in ("socket", "describe"):
            setattr(agent_type, name, _function_style(name, socket_type))


def _function_style(name: str, socket_type: type[SocketCore]) -> Callable[..., Any]:
    kind = socket_type.__name__
    wrong = f"{name}: the first argument must be {'an' if kind[0] in 'AEIOU' else 'a'} {kind}, not "

    def blocking(self: AgentCore, device: SocketCore, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(device, socket_type):
            raise TypeError(wrong + type(device).__name__)
        return getattr(device, name)(*args, **kwargs)

    async def awaited(self: AgentCore, device: SocketCore, *args: Any, **kwargs: Any) -> Any:
        return await blocking(self, device, *args, **kwargs)

    method = awaited if inspect.iscoroutinefunction(getattr(socket_type, name)) else blocking
    method.__name__ = name
    method.__doc__ = f"`{name}(device, ...)`, the same as `device.{name}(...)`: {getattr(socket_type, name).__doc__}"
    return method
