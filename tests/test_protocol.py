"""The wire contract on its own: no agent, no network."""

import errno
import subprocess
import sys

import pytest
from pydantic import ValidationError

from protocol import METHODS, PREFIX, ErrorCode, ErrorDetail, exception_for, from_raw, to_bytes, to_raw
from protocol import models as m
from protocol.errors import AgentRestartedError, AuthenticationError, describe_validation


def test_protocol_imports_no_io_framework() -> None:
    code = "import sys, protocol; print(sorted({'fastapi','starlette','httpx','uvicorn','websockets','agent','engee_client','gateway','tap'} & set(sys.modules)))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


ALLOWED = {
    "agent": {"protocol", "tap"},
    "gateway": {"protocol", "tap"},
    "engee_client": {"protocol"},
    "tap": {"protocol"},
}
"""What each package may import of ours: the contract, and the servers the glue they share (which knows neither
server, only the contract's rules: when to spin)."""


@pytest.mark.parametrize("module", ["agent.cli", "engee_client", "gateway.cli", "tap.uvicorn"])
def test_each_package_imports_protocol_and_no_other(module: str) -> None:
    package = module.partition(".")[0]
    others = {"agent", "engee_client", "gateway", "lab", "protocol", "tap"} - {package} - ALLOWED[package]
    code = f"import sys, {module}; print(sorted({others!r} & {{name.partition('.')[0] for name in sys.modules}}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"{package} imports {done.stdout.strip()}"


def test_method_table_covers_the_nine_seed_methods() -> None:
    assert {"socket", "bind", "listen", "accept", "connect", "send", "receive", "is_open", "close"} <= set(
        METHODS.names()
    )
    for method in METHODS:
        assert method.path == f"{PREFIX}/{method.name}"
        assert method.doc
    reads = {"receive", "read_line", "query", "receive_exactly"}
    assert {method.name for method in METHODS if method.blocking} == {"accept", "connect"} | reads
    assert {method.name for method in METHODS if method.raw_request} == {"send", "send_to", "query"}
    assert {method.name for method in METHODS if method.raw_response} == reads


@pytest.mark.parametrize(
    "value", [b"\x00\xffab", bytearray(b"\x00\xffab"), memoryview(b"\x00\xffab"), [0, 255, 97, 98], (0, 255, 97, 98)]
)
def test_to_bytes_accepts_bytes_likes_and_int_sequences(value) -> None:
    assert to_bytes(value) == b"\x00\xffab"


@pytest.mark.parametrize(
    "value, error",
    [
        ("text", TypeError),
        (3.5, TypeError),
        (None, TypeError),
        ([1, "a"], TypeError),
        ([True], TypeError),
        ([256], ValueError),
        ([-1], ValueError),
    ],
)
def test_to_bytes_refuses_everything_else(value, error) -> None:
    with pytest.raises(error, match="message"):
        to_bytes(value)


def test_payload_in_json_is_base64_and_accepts_int_lists() -> None:
    request = m.SendRequest(descriptor=1, data=b"\x00\x01\xff")
    assert request.model_dump_json() == '{"descriptor":1,"data":"AAH/"}'
    assert m.SendRequest.model_validate_json('{"descriptor":1,"data":"AAH/"}').data == b"\x00\x01\xff"
    assert m.SendRequest.model_validate_json('{"descriptor":1,"data":[0,1,255]}').data == b"\x00\x01\xff"


@pytest.mark.parametrize("data", ['"not base64!"', "[1, 256]", '[1, "x"]', "5", "null"])
def test_bad_payload_in_json_is_a_validation_error(data: str) -> None:
    with pytest.raises(ValidationError) as caught:
        m.SendRequest.model_validate_json(f'{{"descriptor":1,"data":{data}}}')
    assert "data" in describe_validation(caught.value)


def test_raw_form_round_trips() -> None:
    response = m.ReceiveResponse(data=b"\x00" * 1000, peer=m.Address(host="127.0.0.1", port=9))
    meta, body = to_raw(response)
    assert body == b"\x00" * 1000 and "data" not in meta
    assert from_raw(m.ReceiveResponse, meta, body) == response


@pytest.mark.parametrize("meta", ["{bad json", "[1]"])
def test_raw_form_refuses_a_bad_meta_header(meta: str) -> None:
    with pytest.raises(ValueError, match="meta header"):
        from_raw(m.SendRequest, meta, b"x")


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"descriptor": 1, "host": "h", "port": 65536}, "port"),
        ({"descriptor": 1, "host": "h", "port": -1}, "port"),
        ({"descriptor": 1, "host": "h", "port": "80"}, "port"),
        ({"descriptor": 0, "host": "h", "port": 80}, "descriptor"),
        ({"descriptor": 1, "host": "", "port": 80}, "host"),
        ({"descriptor": 1, "host": "a b", "port": 80}, "host"),
        ({"descriptor": 1, "host": "h", "port": 80, "extra": 1}, "extra"),
    ],
)
def test_bind_request_bounds(fields: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        m.BindRequest(**fields)
    assert describe_validation(caught.value).startswith(field)


def test_other_bounds() -> None:
    for bad in ({"family": "AF_UNIX"}, {"socket_type": "SOCK_RAW"}):
        with pytest.raises(ValidationError):
            m.SocketRequest(**bad)
    for bufsize in (0, -5, 2**40):
        with pytest.raises(ValidationError):
            m.ReceiveRequest(descriptor=1, bufsize=bufsize)
    for wait in (-1, 61, float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            m.ReceiveRequest(descriptor=1, bufsize=1, wait=wait)


@pytest.mark.parametrize(
    "name, number, expected",
    [
        ("ECONNREFUSED", 111, ConnectionRefusedError),
        ("ECONNRESET", 104, ConnectionResetError),
        ("ETIMEDOUT", 110, TimeoutError),
        ("EPIPE", 32, BrokenPipeError),
        ("ECONNREFUSED", 61, ConnectionRefusedError),  # the agent's OS numbers it differently: the name wins
    ],
)
def test_os_errors_become_the_local_exception(name: str, number: int, expected: type) -> None:
    detail = ErrorDetail(code=ErrorCode.OS_ERROR, message="boom", errno=number, errno_name=name)
    exc = exception_for(detail, "connect on descriptor 3 (agent http://x)")
    assert type(exc) is expected
    assert exc.errno == getattr(errno, name)
    assert "connect on descriptor 3 (agent http://x): boom" in str(exc)


def test_agent_level_errors_have_their_own_types() -> None:
    def raised(code: ErrorCode) -> Exception:
        return exception_for(ErrorDetail(code=code, message="m"), "w")

    assert isinstance(raised(ErrorCode.UNAUTHORIZED), AuthenticationError)
    assert isinstance(raised(ErrorCode.AGENT_RESTARTED), AgentRestartedError)
    assert isinstance(raised(ErrorCode.BAD_REQUEST), ValueError)
    assert isinstance(raised(ErrorCode.PERMISSION_DENIED), PermissionError)
    bad = raised(ErrorCode.BAD_DESCRIPTOR)
    assert isinstance(bad, OSError) and bad.errno == errno.EBADF
    assert all(code.status != 500 for code in ErrorCode if code is not ErrorCode.INTERNAL)
