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


def test_the_cloud_reaches_the_lab_behind_nat_only_through_the_gateway(spaces: dict[str, str], tmp_path: Path) -> None:
    key, token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[agents.lab]\nkey = "{key}"\n[users.engineer]\ntoken = "{token}"\nagents = ["lab"]\n')
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK)

    def inside(role: str) -> list[str]:
        return ["ip", "netns", "exec", spaces[role], sys.executable]

    started: list[ChildProcess] = []
    try:
        for child in (
            ChildProcess(
                [*inside("lab"), "-m", "lab.echo", "--host", DEVICE, "--udp", str(UDP_PORT), "--tcp", str(TCP_PORT)],
                r"echo tcp listening on",
                log_dir=str(tmp_path),
            ),
            ChildProcess(
                [
                    *inside("cloud"),
                    "-m",
                    "gateway",
                    "--host",
                    CLOUD,
                    "--port",
                    str(GATEWAY_PORT),
                    "--config",
                    str(config),
                ],
                r"engee-gateway listening on",
                log_dir=str(tmp_path),
            ),
            ChildProcess(
                [
                    *inside("lab"),
                    "-m",
                    "agent",
                    "--no-listen",
                    "--gateway",
                    f"http://{CLOUD}:{GATEWAY_PORT}",
                    "--agent-id",
                    "lab",
                    "--agent-key",
                    key,
                    "--log-level",
                    "warning",
                ],
                r"linked to the gateway",
                env={"ENGEE_AGENT_TOKEN": secrets.token_urlsafe(16)},
                log_dir=str(tmp_path),
            ),
        ):
            started.append(child)
            child.start(timeout=30)
        args = {
            "lab": LAB,
            "url": f"http://{CLOUD}:{GATEWAY_PORT}/agents/lab",
            "token": token,
            "device": DEVICE,
            "tcp_port": TCP_PORT,
        }
        env = {name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")}
        done = subprocess.run(
            [*inside("cloud"), str(script), json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            cwd=Path(__file__).parent.parent,
        )
        assert done.returncode == 0, f"the notebook failed:\n{done.stdout}\n{done.stderr}"
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["direct"] == "timeout", f"the cloud reached the lab directly: {result}"  # dropped at the router
        assert result["seed"] and result["tcp"], result
        assert result["owner"] == "gateway:engineer"
    except BaseException:
        for child in started:
            print(f"--- {child.argv[4:8]} output:\n{child.output()}")
        raise
    finally:
        for child in reversed(started):
            child.stop()
