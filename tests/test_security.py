"""Security against a real agent: principals, browser safety, destination policy, limits, reaping, audit."""

import errno
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engee_client import Agent, AuthenticationError, LimitExceededError
from lab.process import AgentProcess

from .conftest import Background, free_port

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789", "root": "root-token-0123456789"}
CONFIG = f"""
allowed_hosts = ["labpc.example"]
allowed_origins = ["https://notebook.example"]

[principals.alice]
token = "{TOKENS["alice"]}"
[principals.bob]
token = "{TOKENS["bob"]}"
[principals.root]
token = "{TOKENS["root"]}"
admin = true

[policy]
connect_allow = ["127.0.0.0/8", "localhost"]
connect_deny = ["127.0.0.2", "localhost:{{denied_port}}"]
bind_allow = ["127.0.0.0/8"]

[limits]
sockets_per_principal = 4
sockets_total = 9
max_bufsize = 1000
max_body = 4096
waits_total = 2
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    directory = tmp_path_factory.mktemp("secured")
    denied_port = free_port(socket.SOCK_STREAM)
    config = directory / "agent.toml"
    config.write_text(CONFIG.format(denied_port=denied_port))
    process = AgentProcess(
        "--config",
        str(config),
        "--audit-log",
        str(directory / "audit.log"),
        "--deny-connect",
        "127.0.0.1:1",
        log_dir=str(directory),
    )
    process.env.pop("ENGEE_AGENT_TOKEN")  # principals come from the config file only
    process.denied_port = denied_port
    process.audit_path = directory / "audit.log"
    with process:
        yield process


def _principal(secured: AgentProcess, name: str, transport: str) -> Iterator[Agent]:
    with Agent(secured.url, token=TOKENS[name], transport=transport) as agent:
        yield agent
        for info in agent.sockets():
            agent.call("close", descriptor=info.descriptor)
    assert secured.alive()


@pytest.fixture
def alice(secured: AgentProcess, transport: str) -> Iterator[Agent]:
    yield from _principal(secured, "alice", transport)


@pytest.fixture
def bob(secured: AgentProcess, transport: str) -> Iterator[Agent]:
    yield from _principal(secured, "bob", transport)


def test_the_owner_token_is_not_made_when_principals_are_configured(secured: AgentProcess) -> None:
    assert "principals: alice, bob, root" in secured.output()
    with pytest.raises(AuthenticationError):
        Agent(secured.url, token=secured.token).Socket()


def test_a_principal_cannot_see_or_touch_another_principals_socket(alice: Agent, bob: Agent) -> None:
    mine = alice.Socket("AF_INET", "SOCK_DGRAM")
    never_issued = 10**9
    for descriptor in (mine.descriptor, never_issued):
        with pytest.raises(OSError) as caught:
            bob.Socket("AF_INET", "SOCK_DGRAM", descriptor)
        assert caught.value.errno == errno.EBADF
        assert str(caught.value).endswith(f"descriptor {descriptor} is not open")
        assert bob.call("is_open", descriptor=descriptor).open is False
        assert bob.call("close", descriptor=descriptor).closed is False
    assert mine.is_open()
    assert [info.descriptor for info in alice.sockets()] == [mine.descriptor]
    assert bob.sockets() == []


def test_only_an_admin_lists_everyones_sockets(secured: AgentProcess, alice: Agent, bob: Agent) -> None:
    a, b = alice.Socket(), bob.Socket()
    with pytest.raises(PermissionError, match="only an admin"):
        alice.sockets(everyone=True)
    with Agent(secured.url, token=TOKENS["root"]) as root:
        owners = {info.descriptor: info.owner for info in root.sockets(everyone=True)}
    assert owners[a.descriptor] == "alice" and owners[b.descriptor] == "bob"


@pytest.mark.parametrize(
    "host, status",
    [
        ("evil.example", 403),
        ("evil.example:8700", 403),
        ("labpc.example:8700", 200),
        ("localhost", 200),
        ("127.0.0.1:8700", 200),
        ("[::1]:8700", 200),
        ("10.1.2.3", 200),
    ],
)
def test_host_header_guards_against_dns_rebinding(secured: AgentProcess, alice: Agent, host: str, status: int) -> None:
    reply = httpx.get(secured.url + "/v1/agent", headers={"Host": host, "Authorization": f"Bearer {TOKENS['alice']}"})
    assert reply.status_code == status
    if status == 403:
        assert "--allow-host" in reply.json()["error"]["message"]


def test_browser_origins_are_refused_unless_allowed(secured: AgentProcess, alice: Agent) -> None:
    auth = {"Authorization": f"Bearer {TOKENS['alice']}"}
    evil = httpx.post(secured.url + "/v1/socket", json={}, headers={**auth, "Origin": "https://evil.example"})
    assert evil.status_code == 403 and "--allow-origin" in evil.json()["error"]["message"]
    assert alice.sockets() == []  # the refused call created nothing
    preflight = httpx.options(
        secured.url + "/v1/socket",
        headers={
            "Origin": "https://notebook.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.headers["access-control-allow-origin"] == "https://notebook.example"
    allowed = httpx.post(secured.url + "/v1/socket", json={}, headers={**auth, "Origin": "https://notebook.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://notebook.example"


def test_no_cors_unless_origins_are_configured(agent_process: AgentProcess) -> None:
    preflight = httpx.options(
        agent_process.url + "/v1/socket",
        headers={"Origin": "https://notebook.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    reply = httpx.post(
        agent_process.url + "/v1/socket",
        json={},
        headers={"Authorization": f"Bearer {agent_process.token}", "Origin": "https://notebook.example"},
    )
    assert reply.status_code == 403


def test_connect_policy_names_the_rule(secured: AgentProcess, alice: Agent) -> None:
    with alice.Socket("AF_INET", "SOCK_DGRAM") as sock:
        with pytest.raises(PermissionError, match=r"connect to 127\.0\.0\.2:9 is refused by deny rule '127\.0\.0\.2'"):
            sock.connect("127.0.0.2", 9)
        with pytest.raises(PermissionError, match="deny rule '127.0.0.1:1'"):  # from the command line
            sock.connect("127.0.0.1", 1)
    refused = r"connect to \[::1\]:9 matches no allow rule \(127\.0\.0\.0/8, localhost\)"
    with alice.Socket("AF_INET6", "SOCK_DGRAM") as sock6, pytest.raises(PermissionError, match=refused):
        sock6.connect("::1", 9)


def test_policy_is_checked_after_resolution(secured: AgentProcess, alice: Agent) -> None:
    with alice.Socket("AF_INET", "SOCK_DGRAM") as sock:
        # A name rule catches the address it resolves to, and an address rule catches the name.
        with pytest.raises(PermissionError, match=f"deny rule 'localhost:{secured.denied_port}'"):
            sock.connect("127.0.0.1", secured.denied_port)
        with pytest.raises(PermissionError, match="deny rule '127.0.0.1:1'"):
            sock.connect("localhost", 1)
        assert sock.connect("localhost", 9) == 0


def test_bind_policy(alice: Agent) -> None:
    with alice.Socket("AF_INET", "SOCK_DGRAM") as sock:
        with pytest.raises(PermissionError, match=r"bind to 0\.0\.0\.0:0 matches no allow rule \(127\.0\.0\.0/8\)"):
            sock.bind("0.0.0.0", 0)
        sock.bind("127.0.0.1", 0)


def test_socket_limits_per_principal_and_per_agent(secured: AgentProcess, alice: Agent, bob: Agent) -> None:
    for _ in range(4):
        alice.Socket()
    with pytest.raises(LimitExceededError, match="alice has 4 sockets open, the limit sockets_per_principal"):
        alice.Socket()
    for _ in range(4):
        bob.Socket()
    with Agent(secured.url, token=TOKENS["root"]) as root:
        root.Socket()
        with pytest.raises(LimitExceededError, match="the agent has 9 sockets open, its limit sockets_total"):
            root.Socket()
        root.call("close", descriptor=root.sockets()[0].descriptor)


def test_bufsize_and_body_limits(alice: Agent) -> None:
    with alice.Socket("AF_INET", "SOCK_DGRAM") as sock:
        sock.bind("127.0.0.1", 0)
        with pytest.raises(ValueError, match="bufsize 1001 is over the agent's limit max_bufsize = 1000"):
            sock.receive(1001)
        sock.connect(*sock.local_address)
        with pytest.raises(ValueError, match="max_body = 4096"):
            sock.send(b"x" * 5000)
            sock.flush()  # on the channel a send is pipelined: its failure comes with the next call or flush
        assert sock.send(b"x" * 1000) == 1000
        assert len(sock.receive(1000)) == 1000


def test_concurrent_waits_limit(alice: Agent) -> None:
    """Accepts wait on the agent over either transport (a receive over the channel is served by its stream)."""
    quiet = [alice.Socket("AF_INET", "SOCK_STREAM") for _ in range(3)]
    for sock in quiet:
        sock.bind("127.0.0.1", 0)
        sock.listen(1)

    def wait_on(sock):  # the probe below may take a slot first: then try again
        while True:
            try:
                return sock.accept(5.0)
            except LimitExceededError:
                continue
            except TimeoutError:
                return None

    waiting = [Background(wait_on, sock) for sock in quiet[:2]]
    deadline = time.monotonic() + 5
    error = None
    while error is None and time.monotonic() < deadline:  # until both waits have reached the agent
        try:
            quiet[2].accept(timeout=0)
        except LimitExceededError as exc:
            error = exc
        except TimeoutError:
            pass
    assert error is not None and "the limit waits_total" in str(error)
    for background in waiting:
        assert background.join_result() is None


def test_idle_sockets_are_reaped_and_say_so(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[limits]\nidle_timeout = 0.3\n")
    with AgentProcess(
        "--config", str(config), "--audit-log", str(tmp_path / "audit.log"), log_dir=str(tmp_path)
    ) as process:
        agent = Agent(process.url, token=process.token)
        sock = agent.Socket("AF_INET", "SOCK_DGRAM")
        sock.bind("127.0.0.1", 0)
        busy = Background(sock.receive, 10, 2.0)  # a socket with a call waiting is not idle
        assert busy.join_result() is None
        deadline = time.monotonic() + 20
        while agent.call("is_open", descriptor=sock.descriptor).open and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(OSError, match="closed by the agent after .* without a call .limit idle_timeout.") as caught:
            sock.send(b"x")
            sock.flush()  # on the channel a send is pipelined: its failure comes with the next call or flush
        assert caught.value.errno == errno.EBADF
        assert f"action=reap descriptor={sock.descriptor}" in (tmp_path / "audit.log").read_text()


def test_audit_log_has_a_line_per_socket_event_and_refusal(secured: AgentProcess, alice: Agent, bob: Agent) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        sock = alice.Socket()
        sock.connect("127.0.0.1", port)
        sock.close()
    with pytest.raises(PermissionError):
        bob.Socket("AF_INET", "SOCK_DGRAM").connect("127.0.0.2", 9)
    httpx.get(secured.url + "/v1/agent", headers={"Authorization": "Bearer nope"})
    lines = secured.audit_path.read_text().splitlines()
    d = sock.descriptor
    assert any(f"principal=alice action=socket descriptor={d}" in line and "outcome=ok" in line for line in lines)
    assert any(
        f"principal=alice action=connect descriptor={d}" in line and f"peer=127.0.0.1:{port} outcome=ok" in line
        for line in lines
    )
    assert any(f"principal=alice action=close descriptor={d} outcome=ok" in line for line in lines)
    assert any(
        "principal=bob action=connect" in line and 'peer=127.0.0.2:9 outcome="permission_denied: ' in line
        for line in lines
    )
    assert any('principal=- action=/v1/agent outcome="unauthorized: wrong token' in line for line in lines)
    assert all(line.startswith("time=") for line in lines)


def test_one_principal_cannot_hold_every_wait(tmp_path: Path) -> None:
    config = tmp_path / "waits.toml"
    config.write_text(
        "\n".join(f'[principals.{name}]\ntoken = "{TOKENS[name]}"' for name in ("alice", "bob"))
        + "\n[limits]\nwaits_per_principal = 1\nwaits_total = 3\n"
    )
    with (
        AgentProcess("--config", str(config), log_dir=str(tmp_path)) as process,
        Agent(process.url, token=TOKENS["alice"]) as alice,
        Agent(process.url, token=TOKENS["bob"]) as bob,
        alice.Socket("AF_INET", "SOCK_STREAM") as held,
        alice.Socket("AF_INET", "SOCK_STREAM") as more,
        bob.Socket("AF_INET", "SOCK_STREAM") as bobs,
    ):
        for sock in (held, more, bobs):
            sock.bind("127.0.0.1", 0)
            sock.listen(1)
        waiting = Background(held.accept)  # alice's one wait, held until a connection comes
        error = None
        deadline = time.monotonic() + 5
        while error is None and time.monotonic() < deadline:  # until alice's wait has reached the agent
            try:
                more.accept(timeout=0)
            except LimitExceededError as exc:
                error = exc
            except TimeoutError:
                pass
        assert error is not None and "the limit waits_per_principal" in str(error)
        with pytest.raises(TimeoutError):
            bobs.accept(timeout=0.1)  # bob still gets a wait of his own
        with socket.create_connection(held.local_address):
            assert waiting.join_result() > 0
