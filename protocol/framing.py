"""Framed reads and typed values, as pure rules: what a line or an exact read takes from a byte stream,
and how numbers become bytes. The agent frames what it reads from a socket with these; the client
frames what a channel's stream brought with the same code, so both sides agree byte for byte.
"""

from __future__ import annotations

import struct

MAX_LINE = 64 * 1024
"""The longest line `read_line` returns by default (without its terminator); a longer one is an error."""
MAX_TERMINATOR = 16
"""The longest terminator, in bytes."""

DATATYPES: dict[str, str] = {
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
"""Each datatype's `struct` format character (standard sizes)."""


class Framing:
    """What one framed read waits for, fed bytes as they come: a line ending in `terminator` (at most `limit`
    bytes before it), or exactly `size` bytes. Once `feed` says it is complete, `frame` is the line (without
    its terminator) or the bytes, `used` how many of the bytes fed it took, and `rest` what was fed past it:
    that stays for the next read. A frame found whole in one piece is cut out of it without copying the rest."""

    def __init__(self, *, terminator: bytes | None = None, size: int | None = None, limit: int = MAX_LINE) -> None:
        if (terminator is None) == (size is None):
            raise ValueError("a framing reads either a line or an exact size")
        self.terminator, self.size, self.limit = terminator, size, limit
        self.frame: bytes | None = None
        self.used = 0
        self._got = bytearray()
        self._tail: tuple[bytes | bytearray, int] = (b"", 0)

    @property
    def complete(self) -> bool:
        return self.frame is not None

    @property
    def buffered(self) -> int:
        """Bytes fed so far and not framed yet."""
        return len(self._got)

    @property
    def rest(self) -> bytes:
        """What was fed past the frame (once complete), or everything fed (until then): it goes back first in line."""
        if not self.complete:
            return bytes(self._got)
        data, at = self._tail
        return bytes(data[at:])

    def wants(self) -> int:
        """The most worth reading next: an exact read's remainder; a line's longest possible rest."""
        if self.size is not None:
            return self.size - len(self._got)
        assert self.terminator is not None
        return max(1, self.limit + len(self.terminator) - len(self._got))

    def feed(self, data: bytes, start: int = 0) -> bool:
        """Take in `data[start:]`; whether the frame is complete. ValueError once a line is over its limit
        (then `rest` holds everything fed, to go back to the socket)."""
        if not self._got and self._cut(data, start, start):
            return True
        before = len(self._got)
        self._got += memoryview(data)[start:]
        if self._cut(self._got, 0, max(0, before - len(self.terminator or b"") + 1)):
            return True
        if self.terminator is not None and len(self._got) > self.limit + len(self.terminator) - 1:
            raise ValueError(
                f"no terminator {self.terminator!r} in the first {self.limit} bytes: the line is over max_length; "
                "its bytes stay readable"
            )
        return False

    def incomplete(self) -> str:
        """Why a read that ended at the end of its stream is no frame."""
        want = f"of the {self.size} asked for" if self.size is not None else "and no terminator"
        return f"the peer closed the connection after {len(self._got)} bytes {want}; they stay readable"

    def _cut(self, data: bytes | bytearray, start: int, search: int) -> bool:
        """Whether `data[start:]` holds the whole frame (a terminator looked for from `search` on); if so, cut it."""
        if self.size is not None:
            end = after = start + self.size
            if len(data) < end:
                return False
        else:
            assert self.terminator is not None
            end = data.find(self.terminator, search, start + self.limit + len(self.terminator))
            if end < 0:
                return False
            after = end + len(self.terminator)
        self.frame, self.used, self._tail = bytes(data[start:end]), after - start, (data, after)
        if data is self._got:
            self._got = bytearray()
        return True


def item_size(datatype: str, byte_order: str) -> int:
    """Bytes a `datatype` item takes; ValueError for an unknown datatype or byte order."""
    return struct.calcsize(_order(byte_order) + _format(datatype))


def pack_values(values: list[int] | list[float], datatype: str, byte_order: str) -> bytes:
    """`values` as `datatype` items in `byte_order`; TypeError or ValueError naming the first bad value."""
    code = _order(byte_order) + _format(datatype)
    try:
        return struct.pack(f"{code[0]}{len(values)}{code[1]}", *values)
    except (struct.error, OverflowError, TypeError):
        pass
    for index, value in enumerate(values):  # find the value that did not fit, to name it
        number = code[1] in "fd"
        if isinstance(value, bool) or not isinstance(value, (int, float) if number else int):
            kind = "a number" if number else "an int"
            raise TypeError(f"values[{index}] must be {kind} for {datatype}, not {type(value).__name__}")
        try:
            struct.pack(code, value)
        except (struct.error, OverflowError):
            raise ValueError(f"values[{index}] = {value!r} does not fit in {datatype}") from None
    raise TypeError(f"values must be a sequence of numbers, not {type(values).__name__}")


def unpack_values(data: bytes, datatype: str, byte_order: str) -> list[int] | list[float]:
    """The `datatype` items in `data` (a whole number of them), in `byte_order`."""
    code = _format(datatype)
    count = len(data) // struct.calcsize("<" + code)
    return list(struct.unpack(f"{_order(byte_order)}{count}{code}", data))


def _format(datatype: str) -> str:
    if datatype not in DATATYPES:
        raise ValueError(f"datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    return DATATYPES[datatype]


def _order(byte_order: str) -> str:
    if byte_order not in ("little", "big"):
        raise ValueError(f"byte_order must be 'little' or 'big', not {byte_order!r}")
    return "<" if byte_order == "little" else ">"
