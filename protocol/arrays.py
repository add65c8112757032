"""The one rule for a frame as a msgpack array: a known kind first, then items of the types that kind has.

Both the channel's frames (channel.py) and the gateway link's (link.py) are checked by it.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any, TypeVar

import msgpack

K = TypeVar("K", bound=IntEnum)

Shapes = dict[Any, tuple[type | tuple[type, ...], ...]]
"""Each kind's item types, after the kind itself."""


def checked(items: Any, kinds: type[K], shapes: Shapes, error: type[ValueError], what: str) -> tuple[K, list[Any]]:
    """The kind of `items` and its other items, or `error` naming what is wrong: a `what` is an array whose
    first item is a kind of `kinds`, then one item of the right type for each of its `shapes`."""
    if type(items) is not list or not items or type(items[0]) is not int or items[0] not in shapes:
        names = ", ".join(f"{kind.value} {kind.name.lower()}" for kind in kinds)
        raise error(f"a {what} is an array whose first item is a kind: {names}")
    kind: K = kinds._value2member_map_[items[0]]  # type: ignore[assignment]  # as kinds(...), without its cost
    shape = shapes[kind]
    if len(items) != len(shape) + 1:
        raise error(f"a {kind.name.lower()} frame has {len(shape) + 1} items, not {len(items)}")
    rest = items[1:]
    if not all(map(isinstance, rest, shape)) or bool in map(type, rest):  # in C; a bool is no int here
        for index, (item, types) in enumerate(zip(rest, shape), 1):
            if not isinstance(item, types) or type(item) is bool:
                raise error(f"item {index} of a {kind.name.lower()} frame has the wrong type ({type(item).__name__})")
    return kind, rest


BULK = 4096
"""A payload from this size on is not copied into its frame by `parts`: it stays a part of its own."""


def parts(head: list[Any], payload: bytes, tail: list[Any]) -> list[bytes]:
    """The msgpack array `[*head, payload, *tail]` as parts, byte for byte what msgpack gives, with a bulk
    payload left a part of its own: a megabyte goes from one socket to the next without a copy (writev)."""
    if len(payload) < BULK:
        return [msgpack.packb([*head, payload, *tail], use_bin_type=True)]
    size = len(payload)
    count = len(head) + 1 + len(tail)
    start = bytes((0x90 | count,)) + b"".join(msgpack.packb(item) for item in head)
    start += struct.pack("!BH", 0xC5, size) if size < 65536 else struct.pack("!BI", 0xC6, size)  # bin 16 / bin 32
    return [start, payload, b"".join(msgpack.packb(item) for item in tail)]
