"""Request and response models of every Sockets method, with the bounds the agent enforces."""

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from .addresses import host_port
from .framing import MAX_LINE, MAX_TERMINATOR, Framing
from .payload import MAX_PAYLOAD, Payload

Family = Literal["AF_INET", "AF_INET6"]
SocketType = Literal["SOCK_STREAM", "SOCK_DGRAM"]
Descriptor = Annotated[int, Field(ge=1, le=2**53, description="A descriptor issued by the agent.")]


def _unbracketed(value: object) -> object:
    """`[::1]` as `::1`: one pair of brackets around an IPv6 literal, as in a URL, is taken off."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            ipaddress.IPv6Address(value[1:-1])
        except ValueError:
            return value
        return value[1:-1]
    return value


def _dns_labels(host: str) -> str:
    """Every label of a name (what lies between dots; a trailing dot ends a full name) is 1..63 characters,
    also in the ASCII form the agent's resolver looks up, so no IDNA codec error reaches the caller."""
    for label in host.removesuffix(".").split("."):
        if not 1 <= len(label) <= 63:
            raise ValueError(f"{host!r} has a label of {len(label)} characters; a DNS label is 1..63 characters")
    try:
        host.encode("idna")
    except UnicodeError as exc:
        reason = exc.__cause__ or exc
        raise ValueError(f"{host!r} has no ASCII form to look up ({reason}); a DNS label is 1..63 characters") from None
    return host


Host = Annotated[
    str,
    BeforeValidator(_unbracketed),
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[^\x00-\x20]+$",
        description="An IP address (an IPv6 one may be in brackets) or a host name, resolved on the agent.",
    ),
    AfterValidator(_dns_labels),
]
Port = Annotated[int, Field(ge=0, le=65535)]
LONG_POLL = 20.0
"""Seconds one blocking call waits on the agent before it answers `pending`."""
Wait = Annotated[
    float,
    Field(
        ge=0,
        le=60,
        allow_inf_nan=False,
        description="Seconds to wait before answering pending; the client repeats the call.",
    ),
]


class Request(BaseModel):
    """Base of requests: strict types and no unknown fields, so a typo is an error, not a no-op."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Response(BaseModel):
    """Base of responses: unknown fields are ignored, so a newer agent can add some."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Address(Response):
    host: str
    port: int

    def as_tuple(self) -> tuple[str, int]:
        return self.host, self.port

    def __str__(self) -> str:
        return host_port(self.host, self.port)


class DescriptorRequest(Request):
    descriptor: Descriptor


class SocketRequest(Request):
    family: Family = "AF_INET"
    socket_type: SocketType = "SOCK_STREAM"


class SocketInfo(Response):
    descriptor: int
    family: Family
    socket_type: SocketType
    local: Address | None = None
    peer: Address | None = None
    listening: bool = False
    owner: str | None = Field(default=None, description="The principal whose socket it is.")
    dropped: int = Field(default=0, description="Datagrams dropped because a stream's window was full.")
    bytes_in: int = Field(default=0, description="Bytes received on it so far.")
    bytes_out: int = Field(default=0, description="Bytes sent on it so far.")


class ListRequest(Request):
    everyone: bool = Field(default=False, description="Every principal's sockets; admins only.")


class SocketList(Response):
    sockets: list[SocketInfo]


class BindRequest(DescriptorRequest):
    host: Host
    port: Port


class ListenRequest(DescriptorRequest):
    backlog: int = Field(default=128, ge=0, le=65535)


class AcceptRequest(DescriptorRequest):
    wait: Wait = LONG_POLL


class AcceptResponse(Response):
    pending: bool = False
    descriptor: int | None = None
    peer: Address | None = None


class ConnectRequest(DescriptorRequest):
    host: Host
    port: Port
    wait: Wait = LONG_POLL


class ConnectResponse(Response):
    pending: bool = False
    local: Address | None = None
    peer: Address | None = None


class SendRequest(DescriptorRequest):
    data: Payload


class SendResponse(Response):
    sent: int


class SendToRequest(DescriptorRequest):
    data: Payload
    host: Host
    port: Port


OptionName = Literal[
    "SO_REUSEADDR",
    "SO_REUSEPORT",
    "SO_BROADCAST",
    "SO_KEEPALIVE",
    "SO_RCVBUF",
    "SO_SNDBUF",
    "TCP_NODELAY",
    "IP_TTL",
    "IP_MULTICAST_TTL",
    "IP_MULTICAST_LOOP",
    "IPV6_V6ONLY",
    "IPV6_UNICAST_HOPS",
    "IPV6_MULTICAST_HOPS",
    "IPV6_MULTICAST_LOOP",
]
"""The socket options a caller may set and get, by name; no other option reaches setsockopt."""


class OptionRequest(DescriptorRequest):
    name: OptionName


class SetOptionRequest(OptionRequest):
    value: bool | int = Field(description="true/false for a flag, a number for a size, a TTL or hops.")


class OptionResponse(Response):
    name: str
    value: bool | int


class ShutdownRequest(DescriptorRequest):
    how: Literal["SHUT_RD", "SHUT_WR", "SHUT_RDWR"]


def _multicast(value: str) -> str:
    try:
        group = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"group {value!r} is not an IP address") from None
    if not group.is_multicast:
        raise ValueError(f"{value} is not a multicast group (224.0.0.0/4 or ff00::/8)")
    return value


class GroupRequest(DescriptorRequest):
    group: Annotated[str, Field(max_length=64, description="A multicast group address."), AfterValidator(_multicast)]
    interface: str | None = Field(
        default=None,
        max_length=64,
        description="The local interface: its IPv4 address or its name (IPv6: its name or index); "
        "none lets the system choose.",
    )


class GroupResponse(Response):
    group: str
    interface: str | None = None
    joined: bool = Field(description="True after join_group, false after leave_group.")


class ReceiveRequest(DescriptorRequest):
    bufsize: int = Field(ge=1, le=MAX_PAYLOAD)
    wait: Wait = LONG_POLL


class ReceiveResponse(Response):
    data: Payload = b""
    eof: bool = False
    pending: bool = False
    peer: Address | None = Field(default=None, description="The sender of a datagram.")
    truncated: bool = Field(
        default=False, description="The datagram was longer than bufsize and was cut, as MSG_TRUNC says."
    )
    buffered: int = Field(
        default=0, description="With pending, from a framed read: the bytes it has so far, kept for the next read."
    )


Terminator = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TERMINATOR,
        pattern=r"^[\x00-\xff]+$",
        description="The bytes that end a line, each as the character of the same number (latin-1): "
        '"\\n", "\\r\\n", "\\r", ...',
    ),
]


class ReadLineRequest(DescriptorRequest):
    terminator: Terminator = "\n"
    max_length: int = Field(default=MAX_LINE, ge=1, le=MAX_PAYLOAD, description="The longest line, in bytes.")
    wait: Wait = LONG_POLL

    def framing(self) -> Framing:
        """What this read waits for, framed the same wherever the bytes are (the agent, a client's stream)."""
        return Framing(terminator=self.terminator.encode("latin-1"), limit=self.max_length)


class QueryRequest(ReadLineRequest):
    data: Payload = Field(description="Sent whole first; then a line is read.")


class ReceiveExactlyRequest(DescriptorRequest):
    nbytes: int = Field(ge=1, le=MAX_PAYLOAD)
    wait: Wait = LONG_POLL

    def framing(self) -> Framing:
        return Framing(size=self.nbytes)


class AvailableResponse(Response):
    available: int = Field(description="Bytes readable now on the agent: the socket's and what the agent holds.")
    streamed: int | None = Field(
        default=None, description="The offset a channel's stream of this socket has read up to, if one reads it."
    )


class IsOpenRequest(Request):
    descriptor: int = Field(ge=-(2**63), le=2**63)


class IsOpenResponse(Response):
    open: bool


class CloseResponse(Response):
    closed: bool = Field(description="True when this call closed the socket, false when it was not open.")


class AgentInfo(Response):
    agent_id: str
    boot_id: str
    version: str
    protocol_version: int
    methods: list[str]
    transports: list[str] = Field(default=["http"], description="How to call it: http, channel (/v1/channel).")
    max_bufsize: int | None = Field(default=None, description="The largest bufsize a receive may ask for.")
    read_ahead: int | None = Field(default=None, description="The largest window a channel's stream may grant.")
    idle_timeout: float | None = Field(
        default=None, description="Seconds a socket may go without a call before the agent closes it; 0 never."
    )
