"""The HTTP contract as another client (Julia, curl) sees it."""

import base64
import socket

import httpx
import pytest

from engee_client import Agent, AgentRestartedError
from lab.process import AgentProcess
from protocol import BOOT_HEADER, METHODS

from .conftest import free_port


@pytest.fixture
def http(agent_process: AgentProcess):
    with httpx.Client(base_url=agent_process.url, headers={"Authorization": f"Bearer {agent_process.token}"}) as client:
        yield client


def test_json_path_with_base64_and_int_lists(http: httpx.Client, agent: Agent) -> None:
    server = http.post("/v1/socket", json={"socket_type": "SOCK_DGRAM"}).json()["descriptor"]
    port = http.post("/v1/bind", json={"descriptor": server, "host": "127.0.0.1", "port": 0}).json()["local"]["port"]
    client = http.post("/v1/socket", json={"socket_type": "SOCK_DGRAM"}).json()["descriptor"]
    assert (
        http.post("/v1/connect", json={"descriptor": client, "host": "127.0.0.1", "port": port}).json()["pending"]
        is False
    )
    assert http.post("/v1/send", json={"descriptor": client, "data": [104, 105]}).json() == {"sent": 2}
    assert http.post(
        "/v1/send", json={"descriptor": client, "data": base64.b64encode(b"\x00\xff").decode()}
    ).json() == {"sent": 2}
    first = http.post("/v1/receive", json={"descriptor": server, "bufsize": 10}).json()
    second = http.post("/v1/receive", json={"descriptor": server, "bufsize": 10}).json()
    assert base64.b64decode(first["data"]) == b"hi" and base64.b64decode(second["data"]) == b"\x00\xff"
    empty = http.post("/v1/receive", json={"descriptor": server, "bufsize": 10, "wait": 0}).json()
    assert empty["pending"] is True and empty["data"] == ""
    for descriptor in (server, client):
        assert http.post("/v1/close", json={"descriptor": descriptor}).json() == {"closed": True}
    assert http.post("/v1/close", json={"descriptor": server}).json() == {"closed": False}


@pytest.mark.parametrize(
    "path, body, status, code",
    [
        ("/v1/bind", b'{"descriptor": 1, "host": "127.0.0.1", "port": "80"}', 422, "bad_request"),
        ("/v1/bind", b'{"descriptor": 1}', 422, "bad_request"),
        ("/v1/receive", b'{"descriptor": 1, "bufsize": 99999999999999999999999}', 422, "bad_request"),
        ("/v1/receive", b"not json at all", 422, "bad_request"),
        ("/v1/receive", b"[]", 422, "bad_request"),
        ("/v1/no_such_method", b"{}", 404, "not_found"),
        ("/v1/is_open", b'{"descriptor": 1, "unknown": true}', 422, "bad_request"),
    ],
)
def test_bad_input_gets_a_4xx_error_body(
    http: httpx.Client, agent: Agent, path: str, body: bytes, status: int, code: str
) -> None:
    reply = http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["code"] == code and error["message"]


def test_form_posts_are_refused(http: httpx.Client, agent: Agent) -> None:
    reply = http.post("/v1/socket", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 415 and reply.json()["error"]["code"] == "unsupported_media_type"


def test_oversized_body_is_refused(http: httpx.Client, agent: Agent) -> None:
    reply = http.post(
        "/v1/send/raw",
        content=b"x" * (24 << 20),
        headers={"Content-Type": "application/octet-stream", "X-Engee-Meta": '{"descriptor": 1}'},
    )
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "payload_too_large"


def test_token_is_checked_before_anything_else(agent_process: AgentProcess, agent: Agent) -> None:
    for path in ("/v1/socket", "/v1/no_such_method", "/openapi.json", "/v1/agent"):
        reply = httpx.post(agent_process.url + path, content=b"garbage")
        assert reply.status_code == 401, path
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in reply.json()["error"]["message"]
    assert httpx.get(agent_process.url + "/healthz").json() == {"status": "ok"}


def test_every_response_carries_the_boot_id(http: httpx.Client, agent: Agent) -> None:
    boot = agent.info().boot_id
    assert http.post("/v1/socket", json={}).headers[BOOT_HEADER] == boot
    assert http.post("/v1/close", json={"descriptor": "x"}).headers[BOOT_HEADER] == boot
    assert httpx.get(str(http.base_url) + "/v1/agent").headers[BOOT_HEADER] == boot


def test_openapi_describes_every_method(http: httpx.Client, agent: Agent) -> None:
    """One content type per operation, as generators expect: JSON at /v1/<method>, raw bytes at its /raw."""
    document = http.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for method in METHODS:
        operation = document["paths"][method.path]["post"]
        assert operation["operationId"] == method.name
        assert list(operation["requestBody"]["content"]) == ["application/json"]
        reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert schemas[reference.rsplit("/", 1)[1]]["title"] == method.request.__name__
        assert list(operation["responses"]["200"]["content"]) == ["application/json"]
        assert "401" in operation["responses"] and "422" in operation["responses"]
        if method.raw_path is None:
            assert not method.raw_request and not method.raw_response
            continue
        raw = document["paths"][method.raw_path]["post"]
        assert raw["operationId"] == f"{method.name}_raw"
        body = list(raw["requestBody"]["content"])
        assert body == (["application/octet-stream"] if method.raw_request else ["application/json"])
        if method.raw_request:
            assert [p["name"] for p in raw["parameters"] if p["in"] == "header"] == ["X-Engee-Meta"]
        answer = raw["responses"]["200"]
        assert list(answer["content"]) == (
            ["application/octet-stream"] if method.raw_response else ["application/json"]
        )
        assert ("X-Engee-Meta" in answer.get("headers", {})) == method.raw_response


def test_agent_restart_is_reported_and_new_sockets_work(tmp_path) -> None:
    port = free_port(socket.SOCK_STREAM)
    first = AgentProcess("--port", str(port), log_dir=str(tmp_path)).start()
    try:
        agent = Agent(first.url, token=first.token)
        old = agent.Socket("AF_INET", "SOCK_DGRAM")
        listener = agent.Socket("AF_INET", "SOCK_STREAM")
        listener.bind("127.0.0.1", 0)
        listener.listen(1)
        with socket.create_connection(listener.local_address):
            accepted = listener.accept(timeout=10)
        first.stop()
        second = AgentProcess("--port", str(port), token=first.token, log_dir=str(tmp_path)).start()
        try:
            assert agent.Socket("AF_INET", "SOCK_DGRAM").descriptor == old.descriptor  # the same number, a new socket
            with pytest.raises(AgentRestartedError, match="restarted"):
                old.send(b"must not reach the new socket")
            old.close()  # closing a socket the restart took away is not an error
            while agent.Socket("AF_INET", "SOCK_DGRAM").descriptor < accepted:  # a new socket gets its number
                pass
            with pytest.raises(AgentRestartedError, match="restarted"):  # accept's int remembers the agent's boot
                agent.Socket("AF_INET", "SOCK_STREAM", accepted)
            typed_in = agent.Socket("AF_INET", "SOCK_DGRAM", int(accepted))  # a plain int is taken as it is
            assert typed_in.descriptor == accepted
        finally:
            second.stop()
    finally:
        first.stop()
