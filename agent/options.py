"""Socket options and multicast groups by name: the allow-list of the protocol mapped to this OS's constants.

Nothing but these names ever reaches setsockopt, each with its kind and bounds checked first. An
IPv4 name on an IPv6 socket means its IPv6 twin (IP_TTL is IPV6_UNICAST_HOPS there), so a caller
writes one name for both families.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass

IPPROTO_IPV6 = getattr(socket, "IPPROTO_IPV6", 41)


@dataclass(frozen=True)
class Option:
    level: int
    number: int
    flag: bool
    """True/false; else a number within `low..high`."""
    low: int = 0
    high: int = 1
    stream_only: bool = False
    family: socket.AddressFamily | None = None
    """The only family it applies to, if one."""


BUFFER = 64 << 20
"""The largest SO_RCVBUF/SO_SNDBUF asked for (the kernel caps it lower still)."""


def _options() -> dict[str, Option]:
    options = {
        "SO_REUSEADDR": Option(socket.SOL_SOCKET, socket.SO_REUSEADDR, True),
        "SO_BROADCAST": Option(socket.SOL_SOCKET, socket.SO_BROADCAST, True),
        "SO_KEEPALIVE": Option(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True),
        "SO_RCVBUF": Option(socket.SOL_SOCKET, socket.SO_RCVBUF, False, 1, BUFFER),
        "SO_SNDBUF": Option(socket.SOL_SOCKET, socket.SO_SNDBUF, False, 1, BUFFER),
        "TCP_NODELAY": Option(socket.IPPROTO_TCP, socket.TCP_NODELAY, True, stream_only=True),
        "IP_TTL": Option(socket.IPPROTO_IP, socket.IP_TTL, False, 1, 255, family=socket.AF_INET),
        "IP_MULTICAST_TTL": Option(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, False, 0, 255, family=socket.AF_INET),
        "IP_MULTICAST_LOOP": Option(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, True, family=socket.AF_INET),
        "IPV6_V6ONLY": Option(IPPROTO_IPV6, socket.IPV6_V6ONLY, True, family=socket.AF_INET6),
        "IPV6_UNICAST_HOPS": Option(IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, False, 1, 255, family=socket.AF_INET6),
        "IPV6_MULTICAST_HOPS": Option(IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, False, 0, 255, family=socket.AF_INET6),
        "IPV6_MULTICAST_LOOP": Option(IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, True, family=socket.AF_INET6),
    }
    if hasattr(socket, "SO_REUSEPORT"):
        options["SO_REUSEPORT"] = Option(socket.SOL_SOCKET, socket.SO_REUSEPORT, True)
    return options


OPTIONS = _options()
IPV6_TWINS = {
    "IP_TTL": "IPV6_UNICAST_HOPS",
    "IP_MULTICAST_TTL": "IPV6_MULTICAST_HOPS",
    "IP_MULTICAST_LOOP": "IPV6_MULTICAST_LOOP",
}


def option(sock: socket.socket, name: str) -> Option:
    """The option `name` means on `sock`; OSError when it does not apply to this socket."""
    if sock.family == socket.AF_INET6:
        name = IPV6_TWINS.get(name, name)
    found = OPTIONS.get(name)
    if found is None:
        raise OSError(errno.ENOPROTOOPT, f"{name} is not available on this agent's system")
    if found.family is not None and found.family != sock.family:
        raise OSError(
            errno.ENOPROTOOPT, f"{name} is an option of {found.family.name} sockets, this one is {sock.family.name}"
        )
    if found.stream_only and sock.type != socket.SOCK_STREAM:
        raise OSError(errno.ENOPROTOOPT, f"{name} is an option of SOCK_STREAM sockets, this one is SOCK_DGRAM")
    return found


def set_option(sock: socket.socket, name: str, value: bool | int) -> bool | int:
    """Set `name` to `value` (checked against the option's kind and bounds); returns it as get_option reads it."""
    found = option(sock, name)
    if found.flag:
        if value not in (0, 1):
            raise ValueError(f"{name} is a flag: its value is true or false, not {value!r}")
    elif isinstance(value, bool) or not found.low <= value <= found.high:
        raise ValueError(f"{name} takes a number within {found.low}..{found.high}, not {value!r}")
    sock.setsockopt(found.level, found.number, int(value))
    return get_option(sock, name)


def get_option(sock: socket.socket, name: str) -> bool | int:
    found = option(sock, name)
    value = sock.getsockopt(found.level, found.number)
    return bool(value) if found.flag else value


def membership(sock: socket.socket, group: str, interface: str | None, join: bool) -> None:
    """Join or leave the multicast `group` on `interface` (an IPv4 address or an interface name; none: any)."""
    address = ipaddress.ip_address(group)
    if sock.type != socket.SOCK_DGRAM:
        raise OSError(errno.EOPNOTSUPP, "multicast groups are for SOCK_DGRAM sockets")
    if (address.version == 6) != (sock.family == socket.AF_INET6):
        raise OSError(errno.EAFNOSUPPORT, f"group {group} is IPv{address.version}, the socket is {sock.family.name}")
    if address.version == 4:
        option_number = socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP
        sock.setsockopt(socket.IPPROTO_IP, option_number, _ipv4_request(address.packed, interface))
    else:
        option_number = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
        sock.setsockopt(IPPROTO_IPV6, option_number, address.packed + struct.pack("@I", _index(interface)))


def _ipv4_request(group: bytes, interface: str | None) -> bytes:
    """ip_mreq by the interface's address, or ip_mreqn by its name."""
    if interface is None:
        return group + socket.inet_aton("0.0.0.0")
    try:
        return group + ipaddress.IPv4Address(interface).packed
    except ValueError:
        return group + socket.inet_aton("0.0.0.0") + struct.pack("@i", _index(interface))


def _index(interface: str | None) -> int:
    if interface is None:
        return 0
    if interface.isdigit():
        if int(interface) >= 2**31:
            raise ValueError(f"interface index {interface} is out of range")
        return int(interface)
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        hint = ": an IPv6 group takes the interface's name or index" if ":" in interface else ""
        raise OSError(errno.ENODEV, f"the agent's machine has no interface {interface!r}{hint}") from None
