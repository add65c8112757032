"""The method table: each Sockets method once. The agent dispatches, routes and documents from it; the client calls from it.

`METHODS.bind` is a `Method[BindRequest, SocketInfo]`, so a checker knows what a call answers;
`METHODS["bind"]` and iteration serve whoever goes by name (the HTTP routes, a channel frame).
Adding a method is one entry here plus one agent operation of the same name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

from . import models as m
from .payload import has_payload
from .version import PREFIX

Req = TypeVar("Req", bound=m.Request)
Resp = TypeVar("Resp", bound=m.Response)


@dataclass(frozen=True)
class Method(Generic[Req, Resp]):
    """One method: its request and response models and one line of doc; named by its place in the table."""

    request: type[Req]
    response: type[Resp]
    doc: str
    name: str = field(default="", compare=False)

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "name", name)

    @property
    def path(self) -> str:
        return f"{PREFIX}/{self.name}"

    @property
    def raw_path(self) -> str | None:
        """Where it takes its payload as a raw octet-stream body, or answers with one; None if it carries no bytes.
        One content type per operation, as code generators expect: JSON at `path`, raw bytes here."""
        return f"{self.path}/raw" if self.raw_request or self.raw_response else None

    @cached_property
    def blocking(self) -> bool:
        """Blocking methods wait at most `wait` seconds and may answer `pending`."""
        return "wait" in self.request.model_fields

    @property
    def raw_request(self) -> bool:
        return has_payload(self.request)

    @property
    def raw_response(self) -> bool:
        return has_payload(self.response)


AnyMethod = Method[Any, Any]


class MethodTable:
    """Every method of the protocol, as typed attributes; also a read-only mapping by name."""

    socket = Method(m.SocketRequest, m.SocketInfo, "Create a socket; returns its descriptor.")
    describe = Method(m.DescriptorRequest, m.SocketInfo, "Family, type and addresses of an open socket.")
    bind = Method(m.BindRequest, m.SocketInfo, "Bind to a local address; port 0 picks a free port.")
    listen = Method(m.ListenRequest, m.SocketInfo, "Listen for incoming TCP connections.")
    accept = Method(m.AcceptRequest, m.AcceptResponse, "Wait for a TCP client; returns the new descriptor.")
    connect = Method(m.ConnectRequest, m.ConnectResponse, "Connect to a peer (TCP) or set the peer (UDP).")
    send = Method(m.SendRequest, m.SendResponse, "Send bytes: all of them on TCP, one datagram on UDP.")
    receive = Method(m.ReceiveRequest, m.ReceiveResponse, "Receive up to bufsize bytes, or one datagram.")
    send_to = Method(
        m.SendToRequest, m.SendResponse, "Send one datagram to an address, from an unconnected UDP socket."
    )
    read_line = Method(m.ReadLineRequest, m.ReceiveResponse, "Receive one line (TCP), without its terminator.")
    query = Method(m.QueryRequest, m.ReceiveResponse, "Send bytes, then receive one line: a question and its answer.")
    receive_exactly = Method(m.ReceiveExactlyRequest, m.ReceiveResponse, "Receive exactly nbytes bytes (TCP).")
    bytes_available = Method(m.DescriptorRequest, m.AvailableResponse, "Bytes that can be read now without waiting.")
    set_option = Method(m.SetOptionRequest, m.OptionResponse, "Set a socket option of the allow-list, by name.")
    get_option = Method(m.OptionRequest, m.OptionResponse, "Get a socket option of the allow-list, by name.")
    shutdown = Method(m.ShutdownRequest, m.SocketInfo, "Shut down reading, writing or both (half-close).")
    join_group = Method(m.GroupRequest, m.GroupResponse, "Join a multicast group (UDP).")
    leave_group = Method(m.GroupRequest, m.GroupResponse, "Leave a multicast group (UDP).")
    is_open = Method(m.IsOpenRequest, m.IsOpenResponse, "Whether a descriptor is open.")
    close = Method(m.DescriptorRequest, m.CloseResponse, "Close a socket; closing twice is not an error.")
    sockets = Method(m.ListRequest, m.SocketList, "The caller's open sockets; an admin may ask for everyone's.")

    def __init__(self) -> None:
        self._by_name: dict[str, AnyMethod] = {
            name: value for name, value in vars(MethodTable).items() if isinstance(value, Method)
        }

    def __getitem__(self, name: str) -> AnyMethod:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> AnyMethod | None:
        """The method called `name`, or None when the table has none."""
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[AnyMethod]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return list(self._by_name)


METHODS = MethodTable()

AGENT_PATH = f"{PREFIX}/agent"
HEALTH_PATH = "/healthz"
