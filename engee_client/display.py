"""How agents, sockets and results show themselves: in Jupyter as HTML, elsewhere as readable text.

Pure formatting of what the caller gathered: the agents and sockets decide what to ask the agent
for (the blocking ones ask live, the awaited ones show what they know without a call).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from protocol.models import SocketInfo

PREVIEW = 16
"""Bytes a result's preview shows."""
COLUMNS = ("descriptor", "socket", "local", "peer", "state", "bytes in", "bytes out")


def preview(data: bytes, width: int = PREVIEW) -> str:
    """`48 65 6c 6c 6f  |Hello|`: the first `width` bytes as hex and as ASCII (dots for the rest)."""
    shown = data[:width]
    text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in shown)
    more = " ..." if len(data) > width else ""
    return f"{shown.hex(' ')}{more}  |{text}{'...' if more else ''}|" if data else "(empty)"


def where(url: str) -> str:
    """An agent's URL as a person reads it: the agent, or the gateway and the agent's id there."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/").split("/")
    if len(path) >= 3 and path[-2] == "agents":
        return f"agent {path[-1]} through gateway {parts.scheme}://{parts.netloc}{'/'.join(path[:-2])}"
    return url


@dataclass(frozen=True)
class Card:
    """One object's display: a title, named facts and (for an agent) its sockets."""

    title: str
    facts: Sequence[tuple[str, str]]
    sockets: Sequence[SocketInfo] | None = None
    """None: not known here (an awaited agent makes no call to display itself)."""

    def text(self) -> str:
        lines = [self.title, *(f"  {name}: {value}" for name, value in self.facts)]
        if self.sockets is not None:
            lines.append(f"  open sockets: {len(self.sockets)}")
            lines += [f"    {'  '.join(row)}" for row in map(socket_row, self.sockets)]
        return "\n".join(lines)

    def html(self) -> str:
        facts = "".join(
            f"<tr><th style='text-align:left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
            for name, value in self.facts
        )
        table = ""
        if self.sockets is not None:
            heads = "".join(f"<th>{html.escape(column)}</th>" for column in COLUMNS)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in socket_row(info)) + "</tr>"
                for info in self.sockets
            )
            table = f"<p>{len(self.sockets)} open socket{'' if len(self.sockets) == 1 else 's'}</p>" + (
                f"<table><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table>" if rows else ""
            )
        return f"<div><strong>{html.escape(self.title)}</strong><table>{facts}</table>{table}</div>"


def socket_row(info: SocketInfo) -> tuple[str, ...]:
    return (
        str(info.descriptor),
        f"{info.family}/{info.socket_type}",
        str(info.local or "-"),
        str(info.peer or "-"),
        "listening" if info.listening else "open",
        str(info.bytes_in),
        str(info.bytes_out),
    )
