"""The audit log is one line per event, whatever a caller puts in it: every value is logfmt-quoted."""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.audit import Audit
from engee_client import Agent
from lab.process import AgentProcess
from protocol.models import Address

FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"=\\]+)(?: |$)')


def parse(line: str) -> dict[str, str]:
    """The fields of one logfmt line: all printable, all fields, a quoted value a valid escaped string."""
    assert line.isprintable(), f"unprintable characters in {line!r}"
    fields, at = {}, 0
    for match in FIELD.finditer(line):
        assert match.start() == at, f"stray text at {at} in {line!r}"
        name, value = match.groups()
        assert name not in fields, f"{name} twice in {line!r}"
        fields[name] = ast.literal_eval(value) if value.startswith('"') else value
        at = match.end()
    assert at == len(line), f"stray text at {at} in {line!r}"
    return fields


HOSTILE = [
    "a b",
    "x=1",
    'say "hi"',
    "back\\slash",
    "/v1/x\nforged=1",
    "cr\rlf",
    "tab\t",
    "\x1b[31mred",
    "line\u2028sep",
    "next\x85line",
    "",
    "outcome=ok principal=root",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_caller_chosen_value_cannot_start_a_line_or_forge_a_field(tmp_path: Path, value: str) -> None:
    path = tmp_path / "audit.log"
    audit = Audit(str(path))
    audit.record(value, value, value, 7, Address(host=value, port=1), Address(host="10.1.2.3", port=502))
    audit.record("alice", "connect", "ok", 7, None, Address(host="::1", port=502))
    audit.close()
    hostile, plain = path.read_text().splitlines()
    fields = parse(hostile)
    assert list(fields) == ["time", "principal", "action", "descriptor", "local", "peer", "outcome"]
    assert fields["principal"] == fields["action"] == fields["outcome"] == value
    assert fields["local"] in (f"{value}:1", f"[{value}]:1")
    assert plain.endswith(" principal=alice action=connect descriptor=7 peer=[::1]:502 outcome=ok")  # plain stays bare


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    directory = tmp_path_factory.mktemp("audited")
    process = AgentProcess("--audit-log", str(directory / "audit.log"), log_dir=str(directory))
    process.audit_path = directory / "audit.log"
    with process:
        yield process


def test_a_url_encoded_newline_in_a_refused_path_stays_in_its_line(audited: AgentProcess) -> None:
    reply = httpx.get(audited.url + "/v1/x%0Aforged=1%0D%22x", headers={"Authorization": "Bearer wrong"})
    assert reply.status_code == 401
    lines = [line for line in audited.audit_path.read_text().splitlines() if "forged" in line]
    assert len(lines) == 1
    assert parse(lines[0])["action"] == '/v1/x\nforged=1\r"x'


def test_a_host_name_with_quotes_and_equals_signs_is_quoted(audited: AgentProcess) -> None:
    host = 'peer="forged"=1'
    with (
        Agent(audited.url, token=audited.token) as agent,
        agent.Socket("AF_INET", "SOCK_DGRAM") as sock,
        pytest.raises(OSError),
    ):
        sock.connect(host, 9)
    lines = [parse(line) for line in audited.audit_path.read_text().splitlines() if "forged" in line]
    assert [fields["peer"] for fields in lines if fields["action"] == "connect"] == [f"{host}:9"]


def close_lines(path: Path, descriptor: int) -> list[str]:
    lines = [parse(line) for line in path.read_text().splitlines()]
    return [f["outcome"] for f in lines if f["action"] == "close" and f.get("descriptor") == str(descriptor)]


def test_a_close_that_closed_nothing_is_not_logged_as_ok(audited: AgentProcess) -> None:
    with Agent(audited.url, token=audited.token) as agent:
        sock = agent.Socket("AF_INET", "SOCK_DGRAM")
        sock.close()
        agent.call("close", descriptor=sock.descriptor)  # closed already
        agent.call("close", descriptor=10**6)  # never issued, or another principal's: alike
    assert close_lines(audited.audit_path, sock.descriptor) == ["ok", "not_open: nothing was closed"]
    assert close_lines(audited.audit_path, 10**6) == ["not_open: nothing was closed"]


def test_sockets_closed_at_shutdown_are_logged(tmp_path: Path) -> None:
    audit_path = tmp_path / "audit.log"
    with AgentProcess("--audit-log", str(audit_path), log_dir=str(tmp_path)) as process:
        with Agent(process.url, token=process.token) as agent:
            descriptors = [agent.Socket("AF_INET", kind).descriptor for kind in ("SOCK_DGRAM", "SOCK_STREAM")]
        assert process.stop() == 0
    for descriptor in descriptors:
        assert close_lines(audit_path, descriptor) == ["closed at shutdown"]
