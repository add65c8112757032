"""Run a coroutine at once, up to its first real wait, and only then as a task: Python 3.12's eager tasks, for 3.11.

Most calls of the channel finish without waiting (a send that the kernel takes, an is_open): run
eagerly they cost no task, no trip through the event loop and no extra wakeup of the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def eager(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """`coro` run until it first suspends: a done future if it never did, else the task that goes on with it."""
    loop = asyncio.get_running_loop()
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        future: asyncio.Future[T] = loop.create_future()
        future.set_result(done.value)
        return future
    except BaseException as exc:  # noqa: BLE001 - the future carries it, as a task would
        future = loop.create_future()
        future.set_exception(exc)
        return future
    return asyncio.ensure_future(_resume(coro, yielded))


async def _resume(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    result: T = await _Resumed(coro, yielded)
    return result


class _Resumed:
    """An awaitable that goes on with a coroutine which already yielded `yielded` (a future it waits for)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro, self._yielded = coro, yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        yielded = self._yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # noqa: BLE001 - a cancellation of the task, passed on to the coroutine
                try:
                    yielded = self._coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = self._coro.send(sent)
                except StopIteration as done:
                    return done.value
