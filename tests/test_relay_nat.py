"""The real setting, in network namespaces: the lab behind NAT links out; the cloud reaches it only through the gateway.

    lab namespace                      router namespace                   cloud namespace
    device (10.201.0.1, lab only)      masquerades the lab's traffic;     gateway :8800
    agent --no-listen ── 10.210.0.2 ── 10.210.0.1 | 10.220.0.1 ────────── 10.220.0.2  notebook
                                       drops every connection the cloud opens

The cloud has a route to the lab's network through the router, so nothing but the router's firewall
stops a direct connection, as at a real NAT. The agent dials out to the gateway; the notebook runs
the seed's example and a TCP exchange with the device through the gateway by agent id, and its
direct connection to the lab fails. Every packet stays inside the namespaces the test creates.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.process import ChildProcess

from .test_topology import STRICT, UNSUPPORTED

LAB, LAB_ROUTER, CLOUD_ROUTER, CLOUD = "10.210.0.2", "10.210.0.1", "10.220.0.1", "10.220.0.2"
DEVICE = "10.201.0.1"
GATEWAY_PORT, UDP_PORT, TCP_PORT = 8800, 9000, 9001
FIREWALL = """
table inet lab_nat {
    chain postrouting { type nat hook postrouting priority 100; oifname "rc0" masquerade; }
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "rl0" oifname "rc0" accept
    }
}
"""

NOTEBOOK = textwrap.dedent('''
    """The notebook in the cloud: a direct try at the lab, then the device through the gateway. One JSON line."""
    import errno, json, socket, sys
    from engee_client import Agent

    args = json.loads(sys.argv[1])
    try:
        socket.create_connection((args["lab"], 8700), timeout=2).close()
        direct = "connected"
    except OSError as exc:
        direct = "timeout" if isinstance(exc, TimeoutError) else errno.errorcode.get(exc.errno, str(exc))
    lab = Agent(args["url"], token=args["token"], retry_for=10.0)
    socket_1 = lab.Socket("AF_INET", "SOCK_DGRAM")
    socket_2 = lab.Socket("AF_INET", "SOCK_DGRAM")
    socket_1.bind("127.0.0.1", 0)
    socket_2.connect(*socket_1.local_address)
    seed = all(
        socket_2.send(list(f"Message {i}".encode())) and socket_1.receive(1000).data == list(f"Message {i}".encode())
        for i in range(1, 1001)
    )
    with lab.Socket("AF_INET", "SOCK_STREAM") as s:
        s.connect(args["device"], args["tcp_port"], timeout=5)
        payload = bytes(range(256)) * 64
        s.send(payload)
        echoed = b""
        while len(echoed) < len(payload):
            chunk = s.receive(65536, timeout=10)
            if chunk is None:
                break
            echoed += bytes(chunk)
    print(json.dumps({"direct": direct, "seed": seed, "tcp": echoed == payload, "owner": lab.sockets()[0].owner}))
''')


def _run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")


@pytest.fixture
def spaces() -> Iterator[dict[str, str]]:
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            message = f"no `{tool}` command, so no NAT between network namespaces"
            if os.environ.get(STRICT):
                pytest.fail(f"{message} (${STRICT} is set)")
            pytest.skip(message)
    suffix = secrets.token_hex(3)
    names = {role: f"engee-{role}-{suffix}" for role in ("lab", "router", "cloud")}
    try:
        try:
            for name in names.values():
                _run("ip", "netns", "add", name)
                _run("ip", "-n", name, "link", "set", "lo", "up")
            lab, router, cloud = names["lab"], names["router"], names["cloud"]
            _run("ip", "-n", router, "link", "add", "rl0", "type", "veth", "peer", "name", "lab0", "netns", lab)
            _run("ip", "-n", router, "link", "add", "rc0", "type", "veth", "peer", "name", "cloud0", "netns", cloud)
            for space, device, address in (
                (lab, "lab0", LAB),
                (router, "rl0", LAB_ROUTER),
                (router, "rc0", CLOUD_ROUTER),
                (cloud, "cloud0", CLOUD),
            ):
                _run("ip", "-n", space, "addr", "add", f"{address}/24", "dev", device)
                _run("ip", "-n", space, "link", "set", device, "up")
            _run("ip", "-n", lab, "addr", "add", f"{DEVICE}/32", "dev", "lo")
            _run("ip", "-n", lab, "route", "add", "default", "via", LAB_ROUTER)
            _run("ip", "-n", cloud, "route", "add", "10.210.0.0/24", "via", CLOUD_ROUTER)  # only the firewall stops it
            _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            rules = Path(f"/tmp/{router}.nft")
            rules.write_text(FIREWALL)
            _run("ip", "netns", "exec", router, "nft", "-f", str(rules))
            rules.unlink()
        except RuntimeError as exc:
            if not UNSUPPORTED.search(str(exc)) or os.environ.get(STRICT):
                raise
            pytest.skip(f"cannot make a NAT of network namespaces here: {exc}")
        yield names
    finally:
        for name in names.values():
            if Path(f"/run/netns/{name}").exists():
                done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30)
                for pid in done.stdout.split():
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
                subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


class Setting:
    """The device, the gateway and the linked agent, started in their namespaces."""

    def __init__(self, spaces: dict[str, str], folder: Path) -> None:
        self.spaces, self.folder = spaces, folder
        self.key, self.token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.url = f"http://{CLOUD}:{GATEWAY_PORT}/agents/lab"
        self.started: list[ChildProcess] = []

    def inside(self, role: str) -> list[str]:
        return ["ip", "netns", "exec", self.spaces[role], sys.executable]

    def start(self) -> None:
        gateway_config = self.folder / "gateway.toml"
        gateway_config.write_text(
            f'link_ping = 1.0\n[agents.lab]\nkey = "{self.key}"\n'
            f'[users.engineer]\ntoken = "{self.token}"\nagents = ["lab"]\n'
        )
        agent_config = self.folder / "agent.toml"
        agent_config.write_text("[limits]\nlink_ping = 1.0\n")
        gateway = [*self.inside("cloud"), "-m", "gateway", "--host", CLOUD, "--port", str(GATEWAY_PORT)]
        agent = [*self.inside("lab"), "-m", "agent", "--no-listen", "--config", str(agent_config)]
        for argv, banner in (
            ([*self.inside("lab"), "-m", "lab.echo", "--host", DEVICE, "--tcp", str(TCP_PORT)], r"echo tcp listening"),
            ([*gateway, "--config", str(gateway_config)], r"engee-gateway listening on"),
            (
                [*agent, "--gateway", f"http://{CLOUD}:{GATEWAY_PORT}", "--agent-id", "lab", f"--agent-key={self.key}"],
                r"linked to the gateway",
            ),
        ):
            child = ChildProcess(argv, banner, env={"ENGEE_AGENT_TOKEN": "t" * 20}, log_dir=str(self.folder))
            self.started.append(child)
            child.start(timeout=30)

    def notebook(self, script: str, args: dict[str, object]) -> subprocess.Popen[str]:
        path = self.folder / "notebook.py"
        path.write_text(script)
        env = {name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")}
        return subprocess.Popen(
            [*self.inside("cloud"), str(path), json.dumps({"url": self.url, "token": self.token, **args})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "PYTHONUNBUFFERED": "1"},
            cwd=Path(__file__).parent.parent,
        )

    def report(self) -> None:
        for child in self.started:
            print(f"--- {child.argv[4:8]} output:\n{child.output()}")

    def stop(self) -> None:
        for child in reversed(self.started):
            child.stop()


@pytest.fixture
def setting(spaces: dict[str, str], tmp_path: Path) -> Iterator[Setting]:
    started = Setting(spaces, tmp_path)
    try:
        started.start()
        yield started
    except BaseException:
        started.report()
        raise
    finally:
        started.stop()


def _answer(notebook: subprocess.Popen[str]) -> dict[str, object]:
    assert notebook.stdout is not None
    line = notebook.stdout.readline()
    if not line:
        _, errors = notebook.communicate(timeout=30)
        raise AssertionError(f"the notebook ended: {errors}")
    return json.loads(line)  # type: ignore[no-any-return]


def test_the_cloud_reaches_the_lab_behind_nat_only_through_the_gateway(setting: Setting) -> None:
    notebook = setting.notebook(NOTEBOOK, {"lab": LAB, "device": DEVICE, "tcp_port": TCP_PORT})
    result = _answer(notebook)
    notebook.wait(30)
    assert result["direct"] == "timeout", f"the cloud reached the lab directly: {result}"  # dropped at the router
    assert result["seed"] and result["tcp"], result
    assert result["owner"] == "gateway:engineer"


OUTAGE = textwrap.dedent('''
    """A notebook across an outage of the lab's link: a line of JSON for each step, the next step on a line in."""
    import json, sys, time
    from engee_client import Agent, AgentOfflineError

    args = json.loads(sys.argv[1])
    lab = Agent(args["url"], token=args["token"], retry_for=10.0)
    device = lab.Socket("AF_INET", "SOCK_STREAM")
    device.connect(args["device"], args["tcp_port"], timeout=10)
    device.send(b"before")
    print(json.dumps({"before": bytes(device.receive(100, timeout=10)).decode()}))
    sys.stdin.readline()  # the link is cut now
    started = time.monotonic()
    while time.monotonic() - started < 60:
        try:
            lab.sockets()
        except AgentOfflineError as exc:
            print(json.dumps({"offline_after": time.monotonic() - started, "error": str(exc)}))
            break
        time.sleep(0.2)
    else:
        print(json.dumps({"offline_after": None}))
    sys.stdin.readline()  # the link is back
    started = time.monotonic()
    while True:
        try:
            lab.sockets()
            break
        except AgentOfflineError:
            if time.monotonic() - started > 90:
                raise
            time.sleep(0.2)
    back = time.monotonic() - started
    device.send(b"after")
    print(json.dumps({"back_after": back, "after": bytes(device.receive(100, timeout=10)).decode()}))
''')


def test_a_cut_link_is_offline_fast_and_the_lab_comes_back_with_its_connections(setting: Setting) -> None:
    notebook = setting.notebook(OUTAGE, {"device": DEVICE, "tcp_port": TCP_PORT})
    assert notebook.stdin is not None
    assert _answer(notebook) == {"before": "before"}
    router = setting.spaces["router"]
    _run("ip", "-n", router, "link", "set", "rl0", "down")  # the lab's cable, pulled: nothing says so
    notebook.stdin.write("cut\n")
    notebook.stdin.flush()
    offline = _answer(notebook)
    assert offline["offline_after"] is not None and float(offline["offline_after"]) < 15, offline
    assert "offline" in str(offline["error"])
    _run("ip", "-n", router, "link", "set", "rl0", "up")
    notebook.stdin.write("back\n")
    notebook.stdin.flush()
    back = _answer(notebook)
    assert back["after"] == "after", back  # the TCP connection opened before the cut carries on, both ways
    assert float(back["back_after"]) < 60
    print(
        f"offline after {float(offline['offline_after']):.1f} s; back {float(back['back_after']):.1f} s after the link"
    )
    notebook.wait(30)
