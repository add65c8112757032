"""What calls return besides sockets: the seed's ResultUIntList, and the descriptor `accept` gives."""

import html
from typing import Self

from protocol import host_port

from .display import preview


class Descriptor(int):
    """A descriptor the agent issued (what `accept` returns): an int that remembers the agent's boot id, so
    `Socket(family, type, descriptor)` after an agent restart raises AgentRestartedError instead of wrapping
    whatever new socket now has that number. A plain int typed in by hand carries no boot id and is trusted."""

    boot: str | None

    def __new__(cls, value: int, boot: str | None) -> Self:
        descriptor = super().__new__(cls, value)
        descriptor.boot = boot
        return descriptor


class ResultUIntList:
    """Received bytes; `.data` is them as a list of ints 0..255, as in the seed.

    `bytes(result)` and `len(result)` work too; `.address` is the sender of a datagram, and
    `.truncated` is true when the datagram was longer than bufsize and was cut (as MSG_TRUNC says).
    """

    __slots__ = ("_bytes", "_list", "address", "truncated")

    def __init__(self, data: bytes, address: tuple[str, int] | None = None, truncated: bool = False) -> None:
        self._bytes = data
        self._list: list[int] | None = None
        self.address = address
        self.truncated = truncated

    @property
    def data(self) -> list[int]:
        """Made once, on first use: the common case reads only bytes(result)."""
        if self._list is None:
            self._list = list(self._bytes)
        return self._list

    def __bytes__(self) -> bytes:
        return self._bytes

    def __len__(self) -> int:
        return len(self._bytes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultUIntList):
            return self._bytes == other._bytes
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal by content, and mutable in spirit: not hashable

    def __repr__(self) -> str:
        sender = f" from {host_port(*self.address)}" if self.address else ""
        cut = " (truncated)" if self.truncated else ""
        return f"<ResultUIntList {len(self._bytes)} bytes{sender}{cut}: {preview(self._bytes)}>"

    def _repr_html_(self) -> str:
        return f"<code>{html.escape(repr(self))}</code>"
