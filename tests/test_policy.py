"""The destination policy sees through every spelling of an address: IPv6 forms of IPv4, "any" addresses."""

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterator

import pytest

from agent.policy import IPAddress, Policy, RuleSet, matched_as
from engee_client import Agent
from lab.process import AgentProcess

from .conftest import free_port

LOOPBACK_SPELLINGS = [
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "0:0:0:0:0:ffff:127.0.0.1",
    "::FFFF:7F00:0001",
    "0:0:0:0:0:FFFF:7f00:1",
]
"""IPv4-mapped spellings of 127.0.0.1: a dual-stack socket connecting to any of them reaches 127.0.0.1."""


async def _no_names(name: str) -> set[IPAddress]:
    return set()


def refusal(policy: Policy, action: str, ip: str, port: int) -> str | None:
    return asyncio.run(policy.refusal(action, ip, port, _no_names))


@pytest.mark.parametrize("spelling", [*LOOPBACK_SPELLINGS, "64:ff9b::127.0.0.1", "64:ff9b::7f00:1", "127.0.0.1"])
def test_ipv6_spellings_of_an_ipv4_address_are_matched_as_it(spelling: str) -> None:
    address = ipaddress.ip_address(spelling)
    assert matched_as("connect", address) == matched_as("bind", address) == (ipaddress.ip_address("127.0.0.1"),)


@pytest.mark.parametrize(
    "action, spelling, forms",
    [
        ("connect", "0.0.0.0", ["127.0.0.1"]),
        ("connect", "::", ["::1"]),
        ("connect", "::ffff:0.0.0.0", ["127.0.0.1"]),
        ("bind", "0.0.0.0", ["0.0.0.0"]),
        ("bind", "::", ["::", "0.0.0.0"]),
        ("bind", "::ffff:0.0.0.0", ["0.0.0.0"]),
        ("connect", "::1", ["::1"]),
        ("connect", "2001:db8::ffff:7f00:1", ["2001:db8::ffff:7f00:1"]),
    ],
)
def test_any_addresses_are_matched_as_what_they_reach(action: str, spelling: str, forms: list[str]) -> None:
    assert matched_as(action, ipaddress.ip_address(spelling)) == tuple(map(ipaddress.ip_address, forms))


@pytest.mark.parametrize(
    "spelling",
    [
        "::ffff:169.254.169.254",
        "::ffff:a9fe:a9fe",
        "0:0:0:0:0:ffff:a9fe:a9fe",
        "::FFFF:A9FE:A9FE",
        "64:ff9b::169.254.169.254",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_the_default_metadata_deny_is_not_dodged_by_an_ipv6_spelling(spelling: str) -> None:
    assert refusal(Policy(), "connect", spelling, 80) == (
        f"connect to [{spelling}]:80 (matched as 169.254.169.254:80) is refused by deny rule '169.254.169.254'"
    )


def test_rules_written_as_ipv6_spellings_match_the_ipv4_form() -> None:
    policy = Policy(connect=RuleSet.parse(deny=["::ffff:10.0.0.0/104", "[64:ff9b::192.0.2.1]:502"]))
    assert (
        refusal(policy, "connect", "10.1.2.3", 80)
        == "connect to 10.1.2.3:80 is refused by deny rule '::ffff:10.0.0.0/104'"
    )
    assert "deny rule '::ffff:10.0.0.0/104'" in refusal(policy, "connect", "::ffff:10.9.9.9", 80)
    assert "deny rule '[64:ff9b::192.0.2.1]:502'" in refusal(policy, "connect", "192.0.2.1", 502)
    assert refusal(policy, "connect", "11.0.0.1", 80) is None
    assert refusal(policy, "connect", "192.0.2.1", 503) is None


def test_allow_rules_let_an_ipv6_spelling_of_an_allowed_address_through() -> None:
    policy = Policy(connect=RuleSet.parse(allow=["127.0.0.0/8"]))
    assert refusal(policy, "connect", "::ffff:127.0.0.1", 9) is None
    assert refusal(policy, "connect", "::ffff:10.0.0.1", 9) == (
        "connect to [::ffff:10.0.0.1]:9 (matched as 10.0.0.1:9) matches no allow rule (127.0.0.0/8)"
    )


def test_a_host_name_rule_catches_the_ipv4_address_its_ipv6_spelling_stands_for() -> None:
    async def resolve(name: str) -> set[IPAddress]:
        return {ipaddress.ip_address("::ffff:10.0.0.1")} if name == "plc.lab" else set()

    policy = Policy(connect=RuleSet.parse(deny=["plc.lab"]))
    assert asyncio.run(policy.refusal("connect", "10.0.0.1", 502, resolve)) == (
        "connect to 10.0.0.1:502 is refused by deny rule 'plc.lab'"
    )


def test_a_wildcard_bind_is_checked_as_both_wildcards() -> None:
    assert refusal(Policy(bind=RuleSet.parse(deny=["0.0.0.0"])), "bind", "::", 0) == (
        "bind to [::]:0 (matched as 0.0.0.0:0) is refused by deny rule '0.0.0.0'"
    )
    assert (
        refusal(Policy(bind=RuleSet.parse(deny=["::"])), "bind", "::", 0)
        == "bind to [::]:0 is refused by deny rule '::'"
    )


@pytest.fixture(scope="module")
def fenced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """An agent denying connects to one loopback port (IPv4 and IPv6) and binds to 0.0.0.0."""
    directory = tmp_path_factory.mktemp("policy")
    port = free_port(socket.SOCK_STREAM)
    process = AgentProcess(
        "--deny-connect",
        f"127.0.0.1:{port}",
        "--deny-connect",
        f"[::1]:{port}",
        "--deny-bind",
        "0.0.0.0",
        "--audit-log",
        str(directory / "audit.log"),
        log_dir=str(directory),
    )
    process.denied_port, process.audit_path = port, directory / "audit.log"
    with process:
        yield process


@pytest.fixture
def client(fenced: AgentProcess, transport: str) -> Iterator[Agent]:
    with Agent(fenced.url, token=fenced.token, transport=transport) as agent:
        yield agent
    assert fenced.alive()


@pytest.mark.parametrize("kind", ["SOCK_STREAM", "SOCK_DGRAM"])
@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_an_ipv6_socket_cannot_dodge_an_ipv4_deny_rule(
    fenced: AgentProcess, client: Agent, kind: str, spelling: str
) -> None:
    port = fenced.denied_port
    asked = f"connect to [::ffff:127.0.0.1]:{port} (matched as 127.0.0.1:{port})"  # as the agent resolves it
    refused = re.escape(f"{asked} is refused by deny rule '127.0.0.1:{port}'")
    with client.Socket("AF_INET6", kind) as sock, pytest.raises(PermissionError, match=refused):
        sock.connect(spelling, port)
    assert asked in fenced.audit_path.read_text()


@pytest.mark.parametrize("family, host, reached", [("AF_INET", "0.0.0.0", "127.0.0.1"), ("AF_INET6", "::", "[::1]")])
def test_connecting_to_any_is_checked_as_loopback(
    fenced: AgentProcess, client: Agent, family: str, host: str, reached: str
) -> None:
    port = fenced.denied_port
    refused = re.escape(f"(matched as {reached}:{port}) is refused by deny rule")
    with client.Socket(family, "SOCK_STREAM") as sock, pytest.raises(PermissionError, match=refused):
        sock.connect(host, port)


@pytest.mark.parametrize("host", ["::", "::ffff:0.0.0.0"])
def test_an_ipv6_wildcard_bind_cannot_dodge_a_deny_on_0_0_0_0(client: Agent, host: str) -> None:
    with client.Socket("AF_INET6", "SOCK_DGRAM") as sock:
        with pytest.raises(
            PermissionError, match=re.escape("(matched as 0.0.0.0:0) is refused by deny rule '0.0.0.0'")
        ):
            sock.bind(host, 0)
        sock.bind("::1", 0)  # a specific address is still fine
