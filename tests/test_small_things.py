"""Smaller things a user meets (issue 11, item 8): each against a real agent on loopback where it concerns one."""

import socket

import httpx
import pytest

from engee_client import Agent
from lab.process import AgentProcess


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")


# a. IPv6 addresses in the status show in brackets


@needs_ipv6
def test_status_shows_an_ipv6_address_in_brackets(agent_process: AgentProcess, agent: Agent) -> None:
    with agent.Socket("AF_INET6", "SOCK_DGRAM") as sock:
        sock.bind("::1", 0)
        port = sock.local_address[1]
        status = httpx.get(
            agent_process.url + "/v1/status", headers={"Authorization": f"Bearer {agent_process.token}"}
        ).json()
    rows = [row for row in status["sockets"] if row["descriptor"] == sock.descriptor]
    assert rows and rows[0]["local"] == f"[::1]:{port}"
