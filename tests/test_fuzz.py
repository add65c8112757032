"""Schemathesis fuzzing of a live agent through its own /openapi.json, sandboxed to loopback.

Safety: the fuzzed agent may connect and bind only on loopback (its destination policy), and it
runs in a fresh network namespace that has nothing but `lo` (`unshare --net`), so no fuzzed
connect or send can leave this machine. Its HTTP listener is created here, on the host's
loopback, and handed over as an inherited file descriptor.
"""

import base64
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from protocol import AGENT_PATH, HEALTH_PATH, META_HEADER, METHODS, OCTET_STREAM, PROTOCOL_VERSION

POLICY = [
    "--allow-connect",
    "127.0.0.0/8",
    "--allow-connect",
    "[::1]",
    "--allow-bind",
    "127.0.0.0/8",
    "--allow-bind",
    "[::1]",
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_WAIT = 0.2
"""Blocking calls wait at most this long, so a fuzzed `wait` of up to 60 s cannot stall the run."""
FUZZ = settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)


@dataclass
class SandboxedAgent:
    url: str
    token: str
    process: subprocess.Popen
    log: Path
    namespaced: bool

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _namespace_refusal() -> str | None:
    """Why a loopback-only network namespace cannot be made here, or None when it can."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found"
    probe = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode:
        return f"`unshare --net` failed: {probe.stderr.strip() or probe.returncode}"
    return None


def _interfaces(pid: int) -> list[str]:
    """The network interfaces process `pid` sees."""
    return [line.split(":")[0].strip() for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]]


@pytest.fixture(scope="module")
def sandboxed_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxedAgent]:
    """`python -m agent` with a loopback-only policy, in a loopback-only network namespace when possible."""
    token = secrets.token_urlsafe(24)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.set_inheritable(True)
    fd = listener.fileno()
    agent = [sys.executable, "-m", "agent", "--fd", str(fd), f"--token={token}", *POLICY]
    refusal = _namespace_refusal()
    if refusal is None:
        argv = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *agent]
    else:
        warnings.warn(
            pytest.PytestWarning(
                f"fuzzing the agent with its loopback-only policy but without a network namespace: {refusal}"
            )
        )
        argv = agent
    log = tmp_path_factory.mktemp("fuzz-agent") / "agent.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            pass_fds=[fd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parent.parent,
        )
    listener.close()  # the agent holds its own copy
    sandboxed = SandboxedAgent("", token, process, log, refusal is None)
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"engee-agent listening on (\S+)", sandboxed.output())):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the fuzzed agent did not start:\n{sandboxed.output()}")
            time.sleep(0.05)
        sandboxed.url = match.group(1)
        if sandboxed.namespaced and _interfaces(process.pid) != ["lo"]:
            pytest.fail(f"the fuzzed agent's network namespace has {_interfaces(process.pid)}, not only lo")
        yield sandboxed
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def session(sandboxed_agent: SandboxedAgent) -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.trust_env = False  # never through a proxy from the environment
        http.headers.update(sandboxed_agent.headers)
        yield http


@pytest.fixture(scope="module")
def api_schema(sandboxed_agent: SandboxedAgent, session: requests.Session) -> schemathesis.BaseSchema:
    """The agent's own OpenAPI document, as it serves it."""
    response = session.get(f"{sandboxed_agent.url}/openapi.json", timeout=30)
    response.raise_for_status()
    return schemathesis.openapi.from_dict(response.json(), config=schemathesis.Config())


def _call(session: requests.Session, url: str, method: str, **fields) -> dict:
    response = session.post(f"{url}/v1/{method}", json=fields, timeout=30)
    assert response.status_code == 200, (method, fields, response.text)
    return response.json()


@pytest.fixture
def seeded(sandboxed_agent: SandboxedAgent, session: requests.Session) -> Iterator[list[int]]:
    """Real sockets on the agent, so fuzzed calls reach the OS and not only validation.

    A UDP socket that talks to itself, a TCP listener, a connected TCP pair and a fresh TCP socket.
    """
    url = sandboxed_agent.url

    def new(family: str, socket_type: str) -> int:
        return _call(session, url, "socket", family=family, socket_type=socket_type)["descriptor"]

    udp = new("AF_INET", "SOCK_DGRAM")
    port = _call(session, url, "bind", descriptor=udp, host="127.0.0.1", port=0)["local"]["port"]
    _call(session, url, "connect", descriptor=udp, host="127.0.0.1", port=port, wait=5)
    udp6 = new("AF_INET6", "SOCK_DGRAM")
    _call(session, url, "bind", descriptor=udp6, host="::1", port=0)
    listener = new("AF_INET", "SOCK_STREAM")
    port = _call(session, url, "bind", descriptor=listener, host="127.0.0.1", port=0)["local"]["port"]
    _call(session, url, "listen", descriptor=listener, backlog=8)
    client = new("AF_INET", "SOCK_STREAM")
    assert not _call(session, url, "connect", descriptor=client, host="127.0.0.1", port=port, wait=5)["pending"]
    server = _call(session, url, "accept", descriptor=listener, wait=5)["descriptor"]
    fresh = new("AF_INET", "SOCK_STREAM")
    descriptors = [udp, udp6, listener, client, server, fresh]
    yield descriptors
    for descriptor in descriptors:
        _call(session, url, "close", descriptor=descriptor)


def _steer(case: schemathesis.Case, blocking: bool, descriptor: int | None) -> None:
    """Point a well-formed descriptor at a real socket, and cap how long a blocking call may wait."""
    body = case.body
    if not isinstance(body, dict):
        return
    given_descriptor = body.get("descriptor")
    if descriptor is not None and type(given_descriptor) is int and 1 <= given_descriptor <= 2**53:
        body["descriptor"] = descriptor
    long_wait = "wait" not in body or (type(body["wait"]) in (int, float) and MAX_WAIT < body["wait"] <= 60)
    if blocking and long_wait:  # a missing or long wait becomes short; a wait the agent must refuse stays
        body["wait"] = MAX_WAIT


def _describe(case: schemathesis.Case, response: requests.Response) -> str:
    return (
        f"request: {case.method} {case.path} media_type={case.media_type!r} body={case.body!r}\n"
        f"response: {response.status_code} {response.headers.get('content-type')!r} {response.text[:2000]}"
    )


def _fuzz_once(case: schemathesis.Case, agent: SandboxedAgent, session: requests.Session) -> None:
    response = case.call(base_url=agent.url, session=session, headers=agent.headers, timeout=60)
    try:
        case.validate_response(response, checks=CHECKS, headers=agent.headers)
    except FailureGroup as exc:  # a BaseExceptionGroup: name the request and the whole response
        raise AssertionError(f"{_describe(case, response)}\n{exc}") from exc


def test_agent_is_sandboxed(sandboxed_agent: SandboxedAgent) -> None:
    """The fuzzed agent sees only a loopback interface, in a network namespace of its own."""
    if not sandboxed_agent.namespaced:
        pytest.skip("no network namespace on this machine; the loopback-only policy alone guards the fuzzing")
    pid = sandboxed_agent.process.pid
    assert Path(f"/proc/{pid}/ns/net").readlink() != Path("/proc/self/ns/net").readlink()
    assert _interfaces(pid) == ["lo"]


def test_agent_refuses_to_leave_loopback(sandboxed_agent: SandboxedAgent, session: requests.Session) -> None:
    """The policy alone already refuses a destination off loopback (checked before any packet)."""
    url = sandboxed_agent.url
    descriptor = _call(session, url, "socket", family="AF_INET", socket_type="SOCK_DGRAM")["descriptor"]
    try:
        response = session.post(
            f"{url}/v1/connect", json={"descriptor": descriptor, "host": "192.0.2.1", "port": 9}, timeout=30
        )
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "permission_denied"
    finally:
        _call(session, url, "close", descriptor=descriptor)


KNOWN_DEFECTS: dict[str, str] = {}
"""Method name -> the agent defect the fuzzer finds there (the test is xfail(strict=True) until it is fixed)."""


def _method_param(name: str):
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS[name])] if name in KNOWN_DEFECTS else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("name", [_method_param(name) for name in METHODS.names()])
def test_fuzz_method(
    name: str,
    mode: GenerationMode,
    api_schema,
    sandboxed_agent: SandboxedAgent,
    session: requests.Session,
    seeded: list[int],
) -> None:
    """No 5xx, and every answer is documented: status code, content type and body."""
    method = METHODS[name]
    operation = api_schema[method.path]["POST"]

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode), descriptor=st.none() | st.sampled_from(seeded))
    def fuzz(case: schemathesis.Case, descriptor: int | None) -> None:
        _steer(case, method.blocking, descriptor)
        _fuzz_once(case, sandboxed_agent, session)

    fuzz()


@pytest.mark.parametrize("path", [AGENT_PATH, HEALTH_PATH])
def test_fuzz_get(path: str, api_schema, sandboxed_agent: SandboxedAgent, session: requests.Session) -> None:
    """The GET endpoints answer as documented."""
    operation = api_schema[path]["GET"]

    @FUZZ
    @given(case=operation.as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        _fuzz_once(case, sandboxed_agent, session)

    fuzz()


def _validate(api_schema, path: str, http_method: str, response: requests.Response, body=None) -> None:
    """Check a hand-made call's answer against the document, as the fuzzer checks its own."""
    case = (
        api_schema[path][http_method].Case(body=body, media_type="application/json")
        if body is not None
        else api_schema[path][http_method].Case()
    )
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as exc:
        raise AssertionError(f"{_describe(case, response)}\n{exc}") from exc


def _send(session: requests.Session, url: str, descriptor: int, payload: bytes, raw: bool) -> requests.Response:
    if raw:
        return session.post(
            f"{url}/v1/send/raw",
            data=payload,
            timeout=30,
            headers={"Content-Type": OCTET_STREAM, META_HEADER: json.dumps({"descriptor": descriptor})},
        )
    return session.post(
        f"{url}/v1/send", json={"descriptor": descriptor, "data": base64.b64encode(payload).decode()}, timeout=30
    )


def _receive(session: requests.Session, url: str, descriptor: int, bufsize: int, raw: bool) -> tuple[bytes, dict]:
    """One receive call: (the bytes, the other fields), asked for as JSON or as a raw body."""
    response = session.post(
        f"{url}/v1/receive" + ("/raw" if raw else ""),
        json={"descriptor": descriptor, "bufsize": bufsize, "wait": 5},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    if raw:
        assert response.headers["content-type"] == OCTET_STREAM
        return response.content, json.loads(response.headers[META_HEADER])
    fields = response.json()
    return base64.b64decode(fields.pop("data")), fields


def test_fuzz_exchange(sandboxed_agent: SandboxedAgent, session: requests.Session, seeded: list[int]) -> None:
    """Any bytes sent on a real socket come out of its peer unchanged, in JSON or raw, on UDP and TCP."""
    url = sandboxed_agent.url
    udp, _, _, client, server, _ = seeded

    @FUZZ
    @given(payload=st.binary(max_size=4096), raw_send=st.booleans(), raw_receive=st.booleans(), stream=st.booleans())
    def exchange(payload: bytes, raw_send: bool, raw_receive: bool, stream: bool) -> None:
        sender, receiver = (client, server) if stream else (udp, udp)
        response = _send(session, url, sender, payload, raw_send)
        assert response.status_code == 200, response.text
        assert response.json() == {"sent": len(payload)}
        if not stream:
            data, fields = _receive(session, url, receiver, 65536, raw_receive)
            assert data == payload and not fields["pending"] and not fields["eof"]
            return
        received = b""
        for _ in range(len(payload)):  # each call brings at least one byte
            if len(received) == len(payload):
                break
            data, fields = _receive(session, url, receiver, len(payload) - len(received), raw_receive)
            assert not fields["eof"]
            received += data
        assert received == payload

    exchange()


def test_raw_receive_is_documented(
    sandboxed_agent: SandboxedAgent, session: requests.Session, api_schema, seeded: list[int]
) -> None:
    """A receive answered as a raw body (at /v1/receive/raw) matches the document."""
    url, udp = sandboxed_agent.url, seeded[0]
    assert _send(session, url, udp, b"raw", raw=False).status_code == 200
    body = {"descriptor": udp, "bufsize": 16, "wait": 5}
    response = session.post(f"{url}/v1/receive/raw", json=body, timeout=30)
    assert response.status_code == 200 and response.content == b"raw", response.text
    _validate(api_schema, "/v1/receive/raw", "POST", response, body)


@pytest.mark.parametrize("meta", ["[" * 5000, '{"a":' * 1500, "{", "[]", '{"descriptor": true}', "\u00e9"])
def test_bad_raw_meta_is_a_bad_request(
    meta: str, sandboxed_agent: SandboxedAgent, session: requests.Session, api_schema
) -> None:
    """A meta header that is not the call's fields is a documented 422, never a 500."""
    response = session.post(
        f"{sandboxed_agent.url}/v1/send/raw",
        data=b"x",
        timeout=30,
        headers={"Content-Type": OCTET_STREAM, META_HEADER: meta.encode("utf-8")},
    )
    assert response.status_code == 422, response.text
    _validate(api_schema, "/v1/send/raw", "POST", response)


@pytest.mark.parametrize("path", [AGENT_PATH, *(method.path for method in METHODS)])
def test_refusals_are_documented(
    path: str, sandboxed_agent: SandboxedAgent, session: requests.Session, api_schema
) -> None:
    """A call without a token (401) or under a foreign Host name (403) gets an answer the document lists."""
    http_method = "GET" if path == AGENT_PATH else "POST"
    url = f"{sandboxed_agent.url}{path}"
    with requests.Session() as anonymous:
        anonymous.trust_env = False
        unauthorized = anonymous.request(http_method, url, json={}, timeout=30)
    foreign = session.request(http_method, url, json={}, headers={"Host": "rebound.example"}, timeout=30)
    assert (unauthorized.status_code, foreign.status_code) == (401, 403)
    _validate(api_schema, path, http_method, unauthorized)
    _validate(api_schema, path, http_method, foreign)


def test_fuzz_gate_headers(sandboxed_agent: SandboxedAgent, session: requests.Session, api_schema) -> None:
    """Arbitrary Authorization, Host, Origin and boot headers never get a 5xx or an undocumented answer."""
    # visible ASCII and obs-text: what HTTP allows in a field value (DEL makes uvicorn's parser answer 400 itself)
    latin1 = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)
    headers = st.fixed_dictionaries(
        {},
        optional={
            "Authorization": latin1 | st.just(f"Bearer {sandboxed_agent.token}") | latin1.map("Bearer {}".format),
            "Host": latin1 | st.sampled_from(["localhost", "[::1]", "[", "127.0.0.1:1", ":", "LOCALHOST:80"]),
            "Origin": latin1,
            "X-Engee-Boot": latin1,
        },
    )

    @FUZZ
    @given(headers=headers)
    def fuzz(headers: dict[str, str]) -> None:
        with requests.Session() as http:
            http.trust_env = False
            response = http.post(
                f"{sandboxed_agent.url}/v1/sockets",
                json={},
                timeout=30,
                headers={key: value.encode("latin-1") for key, value in headers.items()},
            )
        assert response.status_code < 500, response.text
        _validate(api_schema, "/v1/sockets", "POST", response, {})

    fuzz()


def test_agent_survives_fuzzing(sandboxed_agent: SandboxedAgent, session: requests.Session) -> None:
    """After the fuzz run the agent is alive and still answers GET /v1/agent."""
    assert sandboxed_agent.process.poll() is None, f"the fuzzed agent died:\n{sandboxed_agent.output()}"
    response = session.get(f"{sandboxed_agent.url}{AGENT_PATH}", timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["methods"] == METHODS.names()
    assert response.json()["protocol_version"] == PROTOCOL_VERSION
