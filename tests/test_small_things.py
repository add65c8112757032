"""Smaller things a user meets (issue 11, item 8): each against a real agent on loopback where it concerns one."""

import asyncio
import socket
import time

import httpx
import pytest

from engee_client import Agent, AgentUnreachableError, AsyncAgent, DefaultAgent
from lab.process import AgentProcess
from protocol import ErrorCode, ErrorDetail, exception_for
from protocol.errors import detail_from_os_error
from protocol.models import BindRequest, ConnectRequest

from .conftest import free_port


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


# b. the status page's refusals say what is wrong


def test_a_wrong_token_in_the_status_link_is_called_wrong(agent_process: AgentProcess) -> None:
    reply = httpx.get(agent_process.url + "/?token=wrong")
    assert reply.status_code == 401
    assert reply.json()["error"]["message"].startswith("wrong token")


def test_the_status_page_cookie_on_a_call_that_acts_says_it_can_only_look(agent_process: AgentProcess) -> None:
    with httpx.Client(base_url=agent_process.url, follow_redirects=True) as browser:
        assert browser.get(f"/?token={agent_process.token}").status_code == 200
        reply = browser.post("/v1/socket", json={})
    assert reply.status_code == 401
    message = reply.json()["error"]["message"]
    assert "wrong token" not in message
    assert "cookie" in message and "only look" in message and "Authorization: Bearer <token>" in message


def test_a_cookie_python_cannot_parse_is_no_token_not_an_internal_error(agent_process: AgentProcess) -> None:
    reply = httpx.get(agent_process.url + "/v1/status", headers={"Cookie": "a<b=1"})
    assert reply.status_code == 401
    assert reply.json()["error"]["message"].startswith("missing token")


# c. an agent URL without http:// or https:// fails at once


@pytest.mark.parametrize("url", ["127.0.0.1:8700", "localhost:8700", "ftp://127.0.0.1:8700", "http://"])
def test_an_agent_url_without_a_scheme_fails_at_once(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="http:// or https://") as caught:
        Agent(url, token="t")
    assert repr(url) in str(caught.value)
    with pytest.raises(ValueError, match="http:// or https://"):
        AsyncAgent(url, token="t")
    assert time.monotonic() - started < 1


def test_sockets_with_an_agent_url_without_a_scheme_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGEE_AGENT_URL", "127.0.0.1:8700")
    monkeypatch.setenv("ENGEE_AGENT_TOKEN", "t")
    started = time.monotonic()
    with pytest.raises(ValueError, match="'127.0.0.1:8700' .*http:// or https://"):
        DefaultAgent().Socket("AF_INET", "SOCK_DGRAM")
    assert time.monotonic() - started < 1


def test_an_injected_transport_takes_any_url() -> None:
    class Transport:
        url = "inprocess://agent"

    assert Agent("inprocess://agent", transport=Transport()).url == "inprocess://agent"  # type: ignore[arg-type]


# d. a name that does not resolve raises socket.gaierror, as a local socket does


def test_an_unresolvable_name_raises_gaierror(agent: Agent) -> None:
    name = "no-such-host.invalid"  # the reserved TLD never resolves; no traffic leaves for it
    with pytest.raises(socket.gaierror) as local:
        socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
    with agent.Socket() as sock, pytest.raises(socket.gaierror) as caught:
        sock.connect(name, 80)
    assert caught.value.errno == local.value.errno
    message = str(caught.value)
    assert f"connect on descriptor {sock.descriptor} (agent {agent.url}): cannot resolve {name!r}" in message


def test_a_resolver_error_travels_by_name_and_becomes_the_clients_own_number() -> None:
    detail = detail_from_os_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "connect", 3)
    assert detail.errno_name == "EAI_NONAME"
    elsewhere = ErrorDetail(code=ErrorCode.OS_ERROR, message="no such name", errno=11001, errno_name="EAI_NONAME")
    error = exception_for(elsewhere, "connect on descriptor 3 (agent http://lab:8700)")
    assert type(error) is socket.gaierror and error.errno == socket.EAI_NONAME
    assert str(error).endswith("connect on descriptor 3 (agent http://lab:8700): no such name")
    odd = ErrorDetail(code=ErrorCode.OS_ERROR, message="odd", errno=5, errno_name="__doc__")
    assert exception_for(odd, "here").errno == 5  # a name that is not a number of this client's is ignored


# e. an IPv6 literal in brackets is a host like the same literal without


def test_one_pair_of_brackets_around_an_ipv6_literal_is_accepted() -> None:
    assert BindRequest(descriptor=1, host="[::1]", port=0).host == "::1"
    assert ConnectRequest(descriptor=1, host="[fe80::1%eth0]", port=1).host == "fe80::1%eth0"
    assert BindRequest(descriptor=1, host="[lab.example]", port=0).host == "[lab.example]"  # not a literal: kept


@needs_ipv6
def test_bind_and_connect_take_a_bracketed_ipv6_host(agent: Agent) -> None:
    with agent.Socket("AF_INET6", "SOCK_DGRAM") as server, agent.Socket("AF_INET6", "SOCK_DGRAM") as client:
        server.bind("[::1]", 0)
        assert server.local_address is not None and server.local_address[0] == "::1"
        client.connect("[::1]", server.local_address[1])
        client.send(b"bracketed")
        assert bytes(server.receive(100, timeout=10)) == b"bracketed"


# f. a DNS label over 63 characters is named as such, before any network call


LONG_LABEL = "a" * 64 + ".example"


def test_a_long_dns_label_is_refused_before_any_network_call() -> None:
    dead = Agent(f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}", token="t", retry_for=0)
    for method in ("bind", "connect"):
        with pytest.raises(ValueError, match=r"host: .*64 characters.*a DNS label is 1\.\.63 characters"):
            dead.call(method, descriptor=1, host=LONG_LABEL, port=80)
    with pytest.raises(ValueError, match=r"host: .*0 characters.*a DNS label is 1\.\.63 characters"):
        dead.call("connect", descriptor=1, host="lab..example", port=80)
    with pytest.raises(ValueError, match=r"host: .*too long.*a DNS label is 1\.\.63 characters"):
        dead.call("connect", descriptor=1, host="\u00fc" * 60 + ".example", port=80)  # 60, but longer in ASCII
    with pytest.raises(AgentUnreachableError):  # a trailing dot is a full name, fine: this one goes out
        dead.call("connect", descriptor=1, host="lab.example.", port=80)


def test_the_agent_refuses_a_long_dns_label_naming_the_field(agent_process: AgentProcess, agent: Agent) -> None:
    with agent.Socket() as sock:
        reply = httpx.post(
            agent_process.url + "/v1/connect",
            headers={"Authorization": f"Bearer {agent_process.token}"},
            json={"descriptor": sock.descriptor, "host": LONG_LABEL, "port": 80},
        )
    assert reply.status_code == 422
    assert "a DNS label is 1..63 characters" in reply.json()["error"]["message"]
    assert "host" in reply.json()["error"]["message"]


# g. a wrong message for send names the method, the descriptor and the agent


def test_send_of_a_str_names_the_call(agent: Agent) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as sock:
        prefix = f"send on descriptor {sock.descriptor} (agent {agent.url}): "
        with pytest.raises(TypeError) as caught:
            sock.send("text")
        assert str(caught.value).startswith(prefix) and "encode it first" in str(caught.value)
        with pytest.raises(ValueError) as out_of_range:
            sock.send([300])
        assert str(out_of_range.value).startswith(prefix)


def test_async_send_of_a_str_names_the_call(agent_process: AgentProcess) -> None:
    async def main() -> None:
        async with AsyncAgent(agent_process.url, token=agent_process.token) as lab:
            sock = await lab.Socket("AF_INET", "SOCK_DGRAM")
            async with sock:
                with pytest.raises(TypeError, match=rf"^send on descriptor {sock.descriptor} \(agent "):
                    await sock.send("text")

    asyncio.run(main())
