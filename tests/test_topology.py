"""The direct setting (one LAN), proven with processes in network namespaces instead of containers.

(docker-compose.yml now describes the relay setting, which tests/test_relay_nat.py runs in namespaces.)

    cloud namespace                      lab namespace
    notebook  ── veth 10.200.0.2 ─── 10.200.0.1 ──  agent (:8700)
                                                     device (echo, 10.201.0.1:9000 udp, :9001 tcp)

The device listens on 10.201.0.1, an address of the lab namespace only (the compose file's internal
"lab" network); the cloud namespace has the veth and nothing else, so it has no route there. The
notebook tries to reach the device directly and fails, then reaches it through the agent, byte for
byte, over UDP and TCP. Every packet stays inside the two namespaces the test creates; both are
deleted afterwards, with every process in them.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.process import ChildProcess

LAB_ADDRESS, CLOUD_ADDRESS = "10.200.0.1", "10.200.0.2"
"""The two ends of the veth pair: the lab PC as the cloud sees it, and the notebook."""
DEVICE_ADDRESS = "10.201.0.1"
"""The device's address: on the lab side only, like the compose file's internal network."""
AGENT_PORT, UDP_PORT, TCP_PORT = 8700, 9000, 9001
STRICT = "ENGEE_REQUIRE_NETNS"
"""Set (as .ci/run does) to fail instead of skipping when the machine cannot make namespaces."""
UNSUPPORTED = re.compile(
    r"not permitted|permission denied|not supported|unknown device type|"
    r"no such file or directory|cannot (?:create|open|mount)|invalid argument",
    re.IGNORECASE,
)

NOTEBOOK = textwrap.dedent('''
    """The notebook: what it reaches directly, then the device through the agent. Prints one JSON line."""
    import errno, json, socket, sys

    def probe(host, port, kind):
        """Whether a plain socket here reaches host:port (UDP: an answer comes back; TCP: it connects)."""
        try:
            if kind == "tcp":
                socket.create_connection((host, port), timeout=2).close()
                return {"target": f"{host}:{port}/tcp", "reached": True, "error": None}
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.settimeout(2)
                udp.connect((host, port))
                udp.send(b"probe")
                answer = udp.recv(64)
                return {"target": f"{host}:{port}/udp", "reached": answer == b"probe", "error": None}
        except OSError as exc:
            name = "timeout" if isinstance(exc, TimeoutError) else errno.errorcode.get(exc.errno, str(exc))
            return {"target": f"{host}:{port}/{kind}", "reached": False, "error": name}

    def through_agent(url, token, device, udp_port, tcp_port, payload):
        from engee_client import Agent
        lab = Agent(url, token=token, retry_for=5.0)
        got = {}
        with lab.Socket("AF_INET", "SOCK_DGRAM") as s:
            s.connect(device, udp_port, timeout=5)
            s.send(payload)
            answer = s.receive(65535, timeout=10)
            got["udp"] = None if answer is None else {"data": bytes(answer).hex(), "sender": list(answer.address)}
        with lab.Socket("AF_INET", "SOCK_STREAM") as s:
            s.connect(device, tcp_port, timeout=5)
            s.send(payload)
            data = b""
            while len(data) < len(payload):
                answer = s.receive(len(payload) - len(data), timeout=10)
                if answer is None:
                    break
                data += bytes(answer)
            got["tcp"] = {"data": data.hex(), "peer": list(s.peer_address)}
        got["agent_sockets_left"] = len(lab.sockets())
        lab.disconnect()
        return got

    args = json.loads(sys.argv[1])
    interfaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
    result = {"interfaces": sorted(interfaces),
              "probes": [probe(host, port, kind) for host, port, kind in args["probes"]]}
    if args.get("agent"):
        result["via_agent"] = through_agent(args["agent"], args["token"], args["device"], args["udp_port"],
                                            args["tcp_port"], bytes.fromhex(args["payload"]))
    print(json.dumps(result))
''')


def _skip_or_fail(reason: str) -> None:
    if os.environ.get(STRICT):
        pytest.fail(f"{reason} (${STRICT} is set: this machine must run the namespace test)")
    pytest.skip(reason)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")


@dataclass
class Namespaces:
    lab: str
    cloud: str

    def run(self, name: str) -> list[str]:
        """The prefix that runs a command inside namespace `name`."""
        return ["ip", "netns", "exec", name]

    def pids(self, name: str) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30)
        return [int(pid) for pid in done.stdout.split()]

    def holds(self, name: str, pid: int) -> bool:
        """Whether process `pid` lives in namespace `name`."""
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{name}").st_ino


def _setup(lab: str, cloud: str) -> None:
    """Both namespaces with lo up, the veth pair between them, and the device's lab-only address."""
    for name in (lab, cloud):
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
    # Both ends are made inside the namespaces, so nothing ever appears in the host's namespace.
    _ip("-n", lab, "link", "add", "lab0", "type", "veth", "peer", "name", "cloud0", "netns", cloud)
    _ip("-n", lab, "addr", "add", f"{LAB_ADDRESS}/24", "dev", "lab0")
    _ip("-n", cloud, "addr", "add", f"{CLOUD_ADDRESS}/24", "dev", "cloud0")
    _ip("-n", lab, "link", "set", "lab0", "up")
    _ip("-n", cloud, "link", "set", "cloud0", "up")
    _ip("-n", lab, "addr", "add", f"{DEVICE_ADDRESS}/32", "dev", "lo")


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """A fresh "lab" and "cloud" namespace joined by a veth pair; deleted afterwards, whatever happens."""
    if shutil.which("ip") is None:
        _skip_or_fail("no `ip` command (iproute2), so no network namespaces to run the topology in")
    suffix = secrets.token_hex(4)
    spaces = Namespaces(f"engee-lab-{suffix}", f"engee-cloud-{suffix}")
    try:
        try:
            _setup(spaces.lab, spaces.cloud)
        except RuntimeError as exc:
            if not UNSUPPORTED.search(str(exc)):
                raise
            _skip_or_fail(f"cannot make network namespaces with a veth pair here: {exc}")
        yield spaces
    finally:
        for name in (spaces.lab, spaces.cloud):
            if not Path(f"/run/netns/{name}").exists():
                continue
            for pid in spaces.pids(name):  # only the test's own processes live in its namespaces
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


@contextmanager
def _children() -> Iterator[list[ChildProcess]]:
    """The processes a test starts (with `_start`): their output shown if it fails, all stopped at the end."""
    started: list[ChildProcess] = []
    try:
        yield started
    except BaseException:
        for child in started:
            print(f"--- {child.argv[4:7]} output:\n{child.output()}")
        raise
    finally:
        for child in reversed(started):
            child.stop()


def _start(child: ChildProcess, started: list[ChildProcess]) -> None:
    started.append(child)
    child.start(timeout=30)


def _notebook(spaces: Namespaces, where: str, script: Path, args: dict) -> dict:
    """Run the notebook script in namespace `where`; its JSON line."""
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    env["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run(
        [*spaces.run(where), sys.executable, str(script), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, f"the notebook failed in {where}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_notebook_reaches_the_device_only_through_the_agent(namespaces: Namespaces, tmp_path: Path) -> None:
    spaces = namespaces
    token = secrets.token_urlsafe(24)
    payload = bytes(range(256)) + secrets.token_bytes(1024)
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK)
    device_probes = [(DEVICE_ADDRESS, UDP_PORT, "udp"), (DEVICE_ADDRESS, TCP_PORT, "tcp")]
    with _children() as started:
        device = ChildProcess(
            [
                *spaces.run(spaces.lab),
                sys.executable,
                "-m",
                "lab.echo",
                "--host",
                DEVICE_ADDRESS,
                "--udp",
                str(UDP_PORT),
                "--tcp",
                str(TCP_PORT),
            ],
            r"echo tcp listening on",
            log_dir=str(tmp_path),
        )
        _start(device, started)
        agent = ChildProcess(
            [*spaces.run(spaces.lab), sys.executable, "-m", "agent", "--host", LAB_ADDRESS, "--port", str(AGENT_PORT)],
            r"engee-agent listening on (\S+)",
            env={"ENGEE_AGENT_TOKEN": token},
            log_dir=str(tmp_path),
        )
        _start(agent, started)
        assert spaces.holds(spaces.lab, device.pid) and spaces.holds(spaces.lab, agent.pid)

        # The lab side reaches the device: it is up, and the probe can tell.
        lab_view = _notebook(spaces, spaces.lab, script, {"probes": device_probes})
        assert all(p["reached"] for p in lab_view["probes"]), lab_view

        notebook = _notebook(
            spaces,
            spaces.cloud,
            script,
            {
                "probes": [
                    *device_probes,
                    (LAB_ADDRESS, UDP_PORT, "udp"),
                    (LAB_ADDRESS, TCP_PORT, "tcp"),  # the lab PC itself
                    ("127.0.0.1", UDP_PORT, "udp"),
                    ("127.0.0.1", TCP_PORT, "tcp"),  # the notebook's own loopback
                    (LAB_ADDRESS, AGENT_PORT, "tcp"),
                ],  # the agent: the one thing the notebook reaches
                "agent": f"http://{LAB_ADDRESS}:{AGENT_PORT}",
                "token": token,
                "device": DEVICE_ADDRESS,
                "udp_port": UDP_PORT,
                "tcp_port": TCP_PORT,
                "payload": payload.hex(),
            },
        )
        assert notebook["interfaces"] == ["cloud0", "lo"], notebook

        probes = {p["target"]: p for p in notebook["probes"]}
        agent_probe = probes.pop(f"{LAB_ADDRESS}:{AGENT_PORT}/tcp")
        assert agent_probe["reached"], f"the notebook cannot even reach the agent: {agent_probe}"
        assert not any(p["reached"] for p in probes.values()), f"the notebook reached the device directly: {probes}"
        for kind, port in (("udp", UDP_PORT), ("tcp", TCP_PORT)):  # no route at all, not merely a closed port
            assert probes[f"{DEVICE_ADDRESS}:{port}/{kind}"]["error"] in ("ENETUNREACH", "EHOSTUNREACH"), probes

        via = notebook["via_agent"]
        assert via["udp"] is not None, "no UDP echo came back through the agent"
        assert bytes.fromhex(via["udp"]["data"]) == payload
        assert via["udp"]["sender"] == [DEVICE_ADDRESS, UDP_PORT]
        assert bytes.fromhex(via["tcp"]["data"]) == payload
        assert via["tcp"]["peer"] == [DEVICE_ADDRESS, TCP_PORT]
        assert via["agent_sockets_left"] == 0
        assert agent.alive() and device.alive()
