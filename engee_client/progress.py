"""Progress of long transfers, shown with `tqdm.auto`: a widget in Jupyter, a bar in a terminal.

`progress=None` (the default) shows a transfer of at least `LARGE` bytes, and only once it has taken
`SLOW` seconds, so quick ones print nothing; `True` always shows it, `False` never.
"""

from __future__ import annotations

from tqdm.auto import tqdm

LARGE = 4 << 20
"""Bytes from which a transfer may be worth a bar."""
SLOW = 1.0
"""Seconds a transfer runs before its bar appears, with the default."""


def wanted(progress: bool | None, total: int) -> bool:
    """Whether a transfer of `total` bytes goes in pieces with a bar (which appears once it is slow)."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, not {type(progress).__name__}")
    return progress is True or (progress is None and total >= LARGE)


class Progress:
    """One transfer's bar; `update` with each piece, `close` at the end, however it ends."""

    def __init__(self, what: str, total: int, progress: bool | None) -> None:
        self._bar = tqdm(
            desc=what,
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            delay=0.0 if progress else SLOW,
            leave=False,
        )

    def update(self, size: int) -> None:
        self._bar.update(size)

    def close(self) -> None:
        self._bar.close()


class TransferInterrupted(KeyboardInterrupt):
    """A long transfer the user interrupted: `done` bytes went through; for a read, `data` holds them (they are
    the caller's now). The socket stays usable."""

    def __init__(self, message: str, done: int, data: bytes = b"") -> None:
        super().__init__(message)
        self.done, self.data = done, data
