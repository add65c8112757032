"""The audit log: one line per socket opened, bound, connected, accepted, closed or reaped, and per refused call.

Lines are logfmt: `key=value` pairs, a value with a space, `=`, a quote, a backslash or any
unprintable character (newlines included) written as a double-quoted string with backslash
escapes, so whatever a caller puts in a value, one event is one line and no caller can forge a field.
"""

import re
import sys
import time
from typing import TextIO

from protocol.models import Address

AUDITED = frozenset({"socket", "bind", "connect", "accept", "close"})


_BARE = re.compile(r'[^\s="\\]+')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    """`value` bare when it is plain, else double-quoted with backslash escapes, on one line."""
    if _BARE.fullmatch(value) and value.isprintable():
        return value
    return '"' + "".join(_ESCAPES.get(c) or (c if c.isprintable() else ascii(c)[1:-1]) for c in value) + '"'


class Audit:
    """Appends `key=value` lines to a file, or to standard error, whatever the log level."""

    def __init__(self, path: str | None = None) -> None:
        # A file of its own rather than a logger: loggers live in a process-wide registry, where one
        # audit's could outlive it and take a later audit's lines.
        self._out: TextIO = open(path, "a", encoding="utf-8", buffering=1) if path else sys.stderr  # noqa: SIM115

    def record(
        self,
        principal: str,
        action: str,
        outcome: str,
        descriptor: int | None = None,
        local: Address | None = None,
        peer: Address | None = None,
    ) -> None:
        now = time.time()  # one reading for the seconds and the milliseconds, so they never disagree
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        fields = [("time", stamp), ("principal", principal), ("action", action)]
        if descriptor is not None:
            fields.append(("descriptor", str(descriptor)))
        fields += [(name, str(address)) for name, address in (("local", local), ("peer", peer)) if address]
        fields.append(("outcome", outcome))
        self._out.write(" ".join(f"{name}={quote(value)}" for name, value in fields) + "\n")

    def close(self) -> None:
        if self._out is not sys.stderr:
            self._out.close()
