"""The blocking channel transport: the calling thread does the I/O itself, with no event loop and no thread hop.

Every call's course is `ChannelState.exchange`, the flow the awaited transport drives too. Here a
caller writes its frames to the link and, while it waits, reads the link itself when no other
thread is reading it: one reader at a time, and what it reads for other callers wakes them. So a
call costs its system calls and little more, from many threads at once and inside a Jupyter cell,
where the calling thread already runs an event loop. A keeper thread sends what reading left to
send (pongs), reads the link while no caller has for a while (so pushed data and the agent's pings
never wait for the next call), pings a quiet link and notices a dead one. When the link drops, the
thread that finds out links again with backoff and sends every unanswered call again under its
seq; the agent's ledger runs each at most once. At exit, pipelined sends still in flight are
flushed, or a warning says how many were not.
"""

from __future__ import annotations

import atexit
import secrets
import ssl
import sys
import threading
import time
from typing import Any

import httpx
from pydantic import ValidationError
from websockets.exceptions import InvalidHandshake

from protocol import METHODS, AgentError, AgentUnreachableError, ErrorDetail, ProtocolError
from protocol.channel import CHANNEL_PATH, CLOSE_NORMAL, PING_INTERVAL, SESSION_PARAMETER, FrameError
from protocol.models import AgentInfo

from ..channel import (
    ChannelState,
    ChannelUnavailable,
    Flow,
    Wait,
    channel_url,
    refused_upgrade,
    relink_pause,
    upgrade_refusal,
)
from ..transport import Call, Reply
from ..wire import CONNECT_TIMEOUT, RETRY_FOR, Backoff
from .http import HttpTransport
from .link import Link, LinkClosed

EXIT_FLUSH = 10.0
"""Seconds an exiting process waits for its pipelined sends' answers."""
TICK = 0.5
"""Seconds between the keeper's rounds; a link no caller read for as long is read by the keeper."""


class ChannelTransport:
    """Calls the agent at `url` over its channel, blocking; HTTP when the agent has no channel (with `fallback`)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        verify: bool | str = True,
        retry_for: float = RETRY_FOR,
        pipeline: bool = True,
        ping_interval: float = PING_INTERVAL,
        fallback: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._ws_url = channel_url(self.url)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._tls = _tls_context(verify) if self.url.startswith("https:") else None
        self.retry_for = retry_for
        self.ping_interval = ping_interval
        self.fallback = HttpTransport(url, token, verify=verify, retry_for=retry_for) if fallback else None
        self.state = ChannelState(pipeline=pipeline)
        self._lock = threading.Lock()
        """Guards the state and the fields below; never held during I/O."""
        self._changed = threading.Condition(self._lock)
        self._linking = threading.Lock()
        self._link: Link | None = None
        self._session: str | None = None
        self._reading = False
        self._read_at = 0.0
        self._heard_at = 0.0
        self._pinged_at = 0.0
        self._broken: BaseException | None = None
        """Why the link was given up (or the client closed), once it has been."""
        self._fell_back = False
        self._closed = False
        self._keeper: threading.Thread | None = None
        self._stopped = threading.Event()
        atexit.register(self._at_exit)

    def call(self, call: Call) -> Reply:
        if self._ensure_link(call.call_id.session):
            assert self.fallback is not None
            return self.fallback.call(call)
        reply: Reply = self._drive(self.state.exchange(call), poll=call.method is METHODS.send)
        return reply

    def flush(self, descriptor: int | None = None) -> list[ErrorDetail]:
        if self._fell_back or self._link is None:
            return []
        failures: list[ErrorDetail] = self._drive(self.state.flushing(descriptor))
        return failures

    def identity(self) -> AgentInfo:
        if self._ensure_link(None):
            assert self.fallback is not None
            return self.fallback.identity()
        assert self.state.info is not None
        return self.state.info

    @property
    def kind(self) -> str:
        """What carries the calls, for display."""
        return "http (the agent has no channel)" if self._fell_back else "channel"

    def close(self) -> None:
        if self._closed:
            return
        atexit.unregister(self._at_exit)
        with self._lock:
            self._closed = True
            farewell = self.state.farewell() if self._broken is None else []
        try:
            for data in farewell:
                if self._link is not None:
                    self._link.send(data)
        except OSError:
            pass  # the agent gives back what it kept of the streams either way: from what it last heard
        self._stopped.set()
        self._give_up(AgentUnreachableError(f"{CHANNEL_PATH} (agent {self.url}): the client was closed"))
        if self._link is not None:
            self._link.close(CLOSE_NORMAL)
        if self._keeper is not None:
            self._keeper.join(5)
        if self.fallback is not None:
            self.fallback.close()

    def _drive(self, flow: Flow, poll: bool = False) -> Any:
        """Run a flow of the state under the lock: send what it yields, wait its waits, throw in what went wrong.
        With `poll`, what has arrived is taken in first, so a send knows of a pipelined send that failed."""
        with self._lock:
            if poll and self.state.in_flight() and not self._reading and self._link is not None:
                self._read(0)
            try:
                step = next(flow)
                while True:
                    try:
                        value = self._until(step) if isinstance(step, Wait) else self._send(step)
                    except BaseException as exc:  # noqa: BLE001 - handed to the flow, which cleans up and raises it
                        step = flow.throw(exc)
                    else:
                        step = flow.send(value)
            except StopIteration as done:
                return done.value

    def _until(self, wait: Wait) -> bool:
        """Called with the lock held: until `wait.ready()`, reading the link when nobody else is; False on timeout."""
        deadline = None if wait.timeout is None else time.monotonic() + wait.timeout
        while not wait.ready():
            if self._broken is not None:
                raise self._broken
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._reading or self._link is None:
                self._changed.wait(remaining)
            else:
                self._read(remaining)
        return True

    def _send(self, data: bytes) -> bool:
        """Called with the lock held, which it lets go while it writes. While the link is being replaced it
        waits: the new link first carries every unanswered frame again, then this one (again, if it was among
        them: the agent takes a frame twice as once)."""
        while (link := self._link) is None:
            if self._broken is not None:
                raise self._broken
            self._changed.wait()
        if self._broken is not None:
            raise self._broken
        self._lock.release()
        try:
            link.send(data)
        except OSError:
            self._relink(link)  # which sends this again with every unanswered frame
        finally:
            self._reacquire()
        return True

    def _reacquire(self) -> None:
        """Take the lock back, even through an interrupt (which is raised once the lock is held again)."""
        interrupted: BaseException | None = None
        while True:
            try:
                self._lock.acquire()
                break
            except BaseException as exc:  # noqa: BLE001 - raised below, once the state is whole again
                interrupted = exc
        if interrupted is not None:
            self._reading = False
            self._changed.notify_all()
            raise interrupted

    def _read(self, timeout: float | None) -> None:
        """Called with the lock held: become the reader for one read of the link, then wake the others."""
        link = self._link
        assert link is not None
        self._reading = True
        self._lock.release()
        lost = False
        try:
            messages = link.read(timeout)
        except LinkClosed:
            messages, lost = None, True
        finally:
            self._reading = False  # before the lock is back: an interrupt there must not leave the role taken
            self._reacquire()
            self._read_at = time.monotonic()
        try:
            if messages is not None:
                self._heard_at = self._read_at
                for data in messages:
                    self.state.received(data)
        except FrameError as exc:
            self._lock.release()
            try:
                self._give_up(ProtocolError(f"{CHANNEL_PATH} (agent {self.url}): {exc}"))
            finally:
                self._reacquire()
        finally:
            self._changed.notify_all()
        if lost:
            self._lock.release()
            try:
                self._relink(link)
            finally:
                self._reacquire()

    def _ensure_link(self, session: str | None) -> bool:
        """Link if not linked yet; True when calls go to the HTTP fallback instead."""
        if self._fell_back:
            return True
        if self._closed:
            raise AgentUnreachableError(f"{CHANNEL_PATH} (agent {self.url}): the client was closed")
        if self._link is not None and self._broken is None:
            return False
        with self._linking:
            if self._link is not None and self._broken is None:
                return self._fell_back
            with self._lock:
                self._broken = None  # given up before: try afresh, as a new client would
                self._link = None
                self._session = self._session or session or secrets.token_hex(8)
            try:
                self._link_with_backoff()
            except ChannelUnavailable:
                if self.fallback is None:
                    raise AgentUnreachableError(f"the agent at {self.url} has no channel; use HTTP") from None
                self._fell_back = True
                return True
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name=f"engee channel {self.url}", daemon=True)
                self._keeper.start()
            return False

    def _relink(self, lost: Link | None) -> None:
        """The link `lost` is gone: link again (one thread does; the others find it done), or give up."""
        with self._linking:
            with self._lock:
                if self._link is not lost or self._broken is not None or self._closed:
                    return
                self._link = None  # writers wait for the new link
            if lost is not None:
                lost.close()
            try:
                self._link_with_backoff()
            except (AgentError, OSError, ChannelUnavailable) as exc:
                self._give_up(exc if isinstance(exc, AgentError | OSError) else AgentUnreachableError(str(exc)))

    def _link_with_backoff(self) -> None:
        backoff: Backoff | None = None
        where = f"{CHANNEL_PATH} (agent {self.url})"
        with self._lock:
            due = self.state.answer_due(self.retry_for)  # calls a dropped link carried wait for an agent back
        while True:
            try:
                self._link_once()
                return
            except (FrameError, ValidationError) as exc:  # a hello that is no frame of ours, or no agent's identity
                raise ProtocolError(f"{where}: the agent's hello: {exc}") from None
            except (OSError, InvalidHandshake) as exc:
                if (refusal := upgrade_refusal(exc)) is not None:
                    refused_upgrade(*refusal, where, due)
                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise AgentUnreachableError(f"{where}: cannot reach the agent: {exc}") from exc
                backoff = backoff or Backoff(max(time.monotonic() + self.retry_for, due or 0.0))
                time.sleep(relink_pause(backoff, exc, where, refusal))

    def _link_once(self) -> None:
        url = f"{self._ws_url}?{SESSION_PARAMETER}={self._session}"
        link, _ = Link.open(url, self._headers, self._tls, CONNECT_TIMEOUT)
        try:
            hello = None
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while not hello:
                if (left := deadline - time.monotonic()) <= 0:
                    raise TimeoutError("no hello from the agent")
                hello = link.read(left)
            with self._lock:
                for data in hello:
                    self.state.received(data)
                again = self.state.unanswered()
            for data in again:  # what the last link left unanswered, under the same seqs
                link.send(data)
        except BaseException:
            link.close()
            raise
        with self._lock:
            self._link = link
            self._heard_at = self._read_at = time.monotonic()
            self._pinged_at = 0.0
            self._changed.notify_all()

    def _keep(self) -> None:
        """The keeper: flush what reading left to send, read a link no caller has read lately, ping a quiet one."""
        while not self._stopped.wait(TICK):  # its own event: the callers' notifications do not wake it
            with self._lock:
                link = self._link
                if link is None or self._broken is not None:
                    continue
                now = time.monotonic()
                if not self._reading and now - self._read_at >= TICK:
                    self._read(0)
            self._ping(link, now)

    def _ping(self, link: Link, now: float) -> None:
        try:
            link.flush()
            if self._pinged_at and self._heard_at < self._pinged_at and now - self._pinged_at > self.ping_interval:
                self._relink(link)  # unanswered for a whole interval: dead
            elif now - self._heard_at > self.ping_interval and self._pinged_at <= self._heard_at:
                self._pinged_at = now
                link.ping()
        except OSError:
            self._relink(link)

    def _give_up(self, error: BaseException) -> None:
        """The link is gone for good: every caller waiting for an answer, for room or for the link gets `error`;
        pipelined sends without an answer are failures, raised by the next call on their socket."""
        with self._lock:
            self._broken = error
            self.state.abandon_posted(str(error))
            self._changed.notify_all()

    def _at_exit(self) -> None:
        left = self.state.in_flight()
        if not left or self._closed:
            return
        outcome: list[Any] = []
        flusher = threading.Thread(target=lambda: outcome.append(_attempt(self.flush)), daemon=True)
        flusher.start()
        flusher.join(EXIT_FLUSH)
        result = outcome[0] if outcome else TimeoutError("no answer")
        if isinstance(result, BaseException):
            print(f"engee_client: {left} pipelined sends to {self.url} may not have arrived: {result}", file=sys.stderr)
            return
        for failure in result:
            print(f"engee_client: a pipelined send to {self.url} failed: {failure.message}", file=sys.stderr)


def _attempt(work: Any) -> Any:
    try:
        return work()
    except (AgentError, OSError) as exc:
        return exc


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """The context a wss:// link checks the agent's certificate with, as the HTTP transport's `verify` does."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)
