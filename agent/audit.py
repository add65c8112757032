"""The audit log: one line per socket opened, bound, connected, accepted, closed or reaped, and per refused call."""

import logging
import sys
import time

from protocol.models import Address

AUDITED = frozenset({"socket", "bind", "connect", "accept", "close"})


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
        fields = [f"time={stamp}", f"principal={principal}", f"action={action}"]
        if descriptor is not None:
            fields.append(f"descriptor={descriptor}")
        fields += [f"{name}={_show(address)}" for name, address in (("local", local), ("peer", peer)) if address]
        fields.append(f"outcome={outcome}")
        self._log.info(" ".join(fields))

    def close(self) -> None:
        for handler in self._log.handlers:
            handler.close()


def _show(address: Address) -> str:
    return f"[{address.host}]:{address.port}" if ":" in address.host else f"{address.host}:{address.port}"
