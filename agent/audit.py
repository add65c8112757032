"""The audit log: one line per socket opened, bound, connected, accepted, closed or reaped, and per refused call.

Lines are logfmt: `key=value` pairs, a value with a space, `=`, a quote, a backslash or any
unprintable character (newlines included) written as a double-quoted string with backslash
escapes, so whatever a caller puts in a value, one event is one line and no caller can forge a field.
"""

import logging
import re
import sys
import time

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
        self._log = logging.getLogger(f"engee.audit.{id(self)}")
        self._log.propagate = False
        self._log.setLevel(logging.INFO)
        handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._log.addHandler(handler)

    def record(self, principal: str, action: str, outcome: str, descriptor: int | None = None,
               local: Address | None = None, peer: Address | None = None) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        fields = [("time", stamp), ("principal", principal), ("action", action)]
        if descriptor is not None:
            fields.append(("descriptor", str(descriptor)))
        fields += [(name, _show(address)) for name, address in (("local", local), ("peer", peer)) if address]
        fields.append(("outcome", outcome))
        self._log.info(" ".join(f"{name}={quote(value)}" for name, value in fields))

    def close(self) -> None:
        for handler in self._log.handlers:
            handler.close()


def _show(address: Address) -> str:
    return f"[{address.host}]:{address.port}" if ":" in address.host else f"{address.host}:{address.port}"
