"""Where sockets may connect and what they may bind: allow and deny rules, checked after resolution.

A rule is an address part and an optional port part: `10.1.2.0/24`, `10.1.2.3:502`,
`plc.lab:1-1024`, `[fd00::/8]:5000-5999`, `*:53`. A host-name rule matches the addresses the
name resolves to on the agent, so a name cannot dodge an address rule and an address cannot dodge
a name rule.

Before any rule is checked, an address is reduced to the one traffic really reaches (`matched_as`):
an IPv6 spelling of an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) is
that IPv4 address, a connect to `0.0.0.0` or `::` reaches loopback, and a bind to `::` also binds
`0.0.0.0`. Rules written in those IPv6 spellings are reduced the same way.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from protocol import host_port

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Awaitable[set[IPAddress]]]

_RULE = re.compile(
    r"^(?:\[(?P<bracketed>[^\]]+)\]|(?P<plain>[^:\[\]]+|[0-9a-fA-F:]+(?:/\d+)?))(?::(?P<ports>\d+(?:-\d+)?))?$"
)

DEFAULT_CONNECT_DENY = ("169.254.169.254", "[fd00:ec2::254]")
"""Cloud metadata services: on a cloud VM they hand out credentials, and no lab device lives there."""

IPV4_IN_IPV6 = (ipaddress.IPv6Network("::ffff:0:0/96"), ipaddress.IPv6Network("64:ff9b::/96"))
"""IPv6 prefixes whose last 32 bits are the IPv4 address traffic goes to: IPv4-mapped (a dual-stack
socket sends IPv4) and the NAT64 well-known prefix (the network translates to IPv4)."""


def as_ipv4(network: IPNetwork) -> IPNetwork:
    """An IPv6 spelling of IPv4 addresses as those IPv4 addresses; any other network as it is."""
    for prefix in IPV4_IN_IPV6:
        if network.version == 6 and network.subnet_of(prefix):
            return ipaddress.IPv4Network((int(network.network_address) & 0xFFFF_FFFF, network.prefixlen - 96))
    return network


def delivered_to(address: IPAddress) -> IPAddress:
    """The address traffic to `address` really reaches: the IPv4 one an IPv6 spelling stands for."""
    return as_ipv4(ipaddress.ip_network(address)).network_address


def matched_as(action: str, address: IPAddress) -> tuple[IPAddress, ...]:
    """Every address the rules for `action` ("connect" or "bind") to `address` are checked against."""
    reached = delivered_to(address)
    if not reached.is_unspecified:
        return (reached,)
    if action == "connect":  # the kernel delivers a connect to "any" to this host's loopback
        return (ipaddress.ip_address("127.0.0.1" if reached.version == 4 else "::1"),)
    if reached.version == 6:  # a dual-stack wildcard bind takes IPv4 as well
        return (reached, ipaddress.IPv4Address("0.0.0.0"))
    return (reached,)


class PolicyError(ValueError):
    """A rule that cannot be parsed."""


@dataclass(frozen=True)
class Rule:
    """One allow or deny rule: a network or a host name, and a port range."""

    text: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    hostname: str | None = None
    ports: range = range(65536)

    @classmethod
    def parse(cls, text: str) -> Rule:
        text = text.strip()
        if text.count(":") > 1 and "[" not in text:  # a bare IPv6 address or network, no port part
            address, ports = text, None
        else:
            match = _RULE.match(text)
            if not match:
                raise PolicyError(f"rule {text!r}: expected ADDRESS[:PORT[-PORT]], e.g. 10.0.0.0/8:502 or [::1]:1-1024")
            address, ports = match["bracketed"] or match["plain"], match["ports"]
        network, hostname = _address_part(text, address)
        return cls(text, network, hostname, _port_range(text, ports))

    async def matches(self, ip: IPAddress, port: int, resolve: Resolver) -> bool:
        if port not in self.ports:
            return False
        if self.network is not None:
            return ip.version == self.network.version and ip in self.network
        if self.hostname is None:
            return True
        return ip in {delivered_to(address) for address in await resolve(self.hostname)}


def _address_part(text: str, address: str) -> tuple[IPNetwork | None, str | None]:
    if address == "*":
        return None, None
    try:
        return as_ipv4(ipaddress.ip_network(address, strict=False)), None
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", address):
        raise PolicyError(f"rule {text!r}: {address!r} is neither a network (CIDR), an address nor a host name")
    return None, address.lower()


def _port_range(text: str, ports: str | None) -> range:
    if ports is None:
        return range(65536)
    low, _, high = ports.partition("-")
    first, last = int(low), int(high or low)
    if not 0 <= first <= last <= 65535:
        raise PolicyError(f"rule {text!r}: port range {ports} is not within 0..65535 in ascending order")
    return range(first, last + 1)


@dataclass(frozen=True)
class RuleSet:
    """Deny rules win; then, when there are allow rules, one of them must match."""

    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> RuleSet:
        return cls(tuple(map(Rule.parse, allow)), tuple(map(Rule.parse, deny)))

    async def refusal(self, ip: IPAddress, port: int, resolve: Resolver) -> str | None:
        """Why `ip:port` is refused, naming the rule, or None when it is allowed."""
        for rule in self.deny:
            if await rule.matches(ip, port, resolve):
                return f"is refused by deny rule {rule.text!r}"
        if not self.allow:
            return None
        for rule in self.allow:
            if await rule.matches(ip, port, resolve):
                return None
        return f"matches no allow rule ({', '.join(rule.text for rule in self.allow)})"


@dataclass(frozen=True)
class Policy:
    """The rules for connect (and UDP peers) and for bind."""

    connect: RuleSet = field(default_factory=lambda: RuleSet.parse(deny=DEFAULT_CONNECT_DENY))
    bind: RuleSet = field(default_factory=RuleSet)

    async def refusal(self, action: str, ip: str, port: int, resolve: Resolver) -> str | None:
        """Why `action` to `ip:port` is refused, naming what it was matched as and the rule, or None."""
        rules = self.connect if action == "connect" else self.bind
        address = ipaddress.ip_address(ip.split("%")[0])  # drop an IPv6 zone id
        for form in matched_as(action, address):
            if reason := await rules.refusal(form, port, resolve):
                matched = "" if form == address else f" (matched as {host_port(str(form), port)})"
                return f"{action} to {host_port(ip, port)}{matched} {reason}"
        return None
