"""A lab LAN in network namespaces: broadcast discovery and multicast through the agent's sockets.

    pc namespace                                  dev1, dev2, dev3 namespaces
    agent (127.0.0.1), notebook                   a device each: plain sockets on eth0
    br0 10.230.0.1/24, fd00:230::1/64 ─ veth ──── eth0 10.230.0.1N/24, fd00:230::1N/64

The PC's bridge joins the three devices, as a lab switch does; multicast snooping is off, so the
bridge floods every group's frames and only the hosts' memberships decide who hears them. Through
the agent, the notebook finds the devices with one broadcast, sends to a group that two of them
joined, and joins a group itself, then leaves it and hears nothing more of it. Every packet stays
inside the four namespaces the test creates; all are deleted afterwards, with every process in them.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.process import ChildProcess

from .test_topology import UNSUPPORTED, _children, _ip, _skip_or_fail, _start

DEVICES = {
    "dev1": {"AF_INET": "10.230.0.11", "AF_INET6": "fd00:230::11"},
    "dev2": {"AF_INET": "10.230.0.12", "AF_INET6": "fd00:230::12"},
    "dev3": {"AF_INET": "10.230.0.13", "AF_INET6": "fd00:230::13"},
}
"""Each device's addresses on the LAN; dev2 and dev3 are the group's members, dev1 its sender."""
MEMBERS = ("dev2", "dev3")
PC = {"AF_INET": "10.230.0.1", "AF_INET6": "fd00:230::1"}
"""br0's addresses: the PC on the LAN."""
BROADCAST = "10.230.0.255"
GROUPS = {"AF_INET": "239.1.2.3", "AF_INET6": "ff15::1:2"}
"""An administratively scoped IPv4 group and a site-local IPv6 one: neither leaves a lab."""
CONTROL_PORT, MEMBER_PORT, GROUP_PORT = 9500, 9501, 9502
"""The devices answer DISCOVER on the first, their members listen on the second, and the agent's
socket joins on the third (what dev1's bursts go to)."""
BURST = 5
MULTICAST_TTL = 4
"""Not the default of 1, so a member seeing it in the datagram's TTL proves the option took effect."""

DEVICE = textwrap.dedent('''
    """A device on the LAN, plain sockets, IPv4 and IPv6. On the control port: DISCOVER is answered with
    DEVICE <name>, HEARD with what the member port heard, BURST <tag> <count> <port> with <count> datagrams
    to the group's <port>, then DONE <tag> to the asker. The member port (in the group with "join") answers
    each datagram with GOT <name> <its TTL> <text>."""
    import json, select, socket, struct, sys

    name, control_port, member_port, join = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "join"
    GROUPS = {socket.AF_INET: "239.1.2.3", socket.AF_INET6: "ff15::1:2"}
    IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # Linux's number; Python does not name it

    def bound(family, port):
        s = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        return s

    controls = [bound(family, control_port) for family in GROUPS]
    member4, member6 = members = [bound(family, member_port) for family in GROUPS]
    member4.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    member6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    if join:
        group4 = socket.inet_aton(GROUPS[socket.AF_INET])
        member4.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group4 + socket.inet_aton("0.0.0.0"))
        group6 = socket.inet_pton(socket.AF_INET6, GROUPS[socket.AF_INET6])
        member6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group6 + struct.pack("@I", 0))
    heard = []
    print(f"device {name} ready", flush=True)
    while True:
        for s in select.select(controls + members, [], [])[0]:
            if s in members:
                data, ancillary, _, sender = s.recvmsg(65535, 64)
                ttl = next((int.from_bytes(value, sys.byteorder) for _, _, value in ancillary), None)
                heard.append(data.decode())
                s.sendto(f"GOT {name} {ttl} {data.decode()}".encode(), sender)
                continue
            data, sender = s.recvfrom(65535)
            words = data.decode().split()
            if words == ["DISCOVER"]:
                s.sendto(f"DEVICE {name}".encode(), sender)
            elif words == ["HEARD"]:
                s.sendto(f"HEARD {name} {json.dumps(heard)}".encode(), sender)
            elif words[:1] == ["BURST"]:
                tag, count, port = words[1], int(words[2]), int(words[3])
                for index in range(count):
                    s.sendto(f"{tag} {index}".encode(), (GROUPS[s.family], port))
                s.sendto(f"DONE {tag}".encode(), sender)
''')

NOTEBOOK = textwrap.dedent('''
    """The notebook, in the PC's namespace: discovery and multicast through the agent, over both transports.
    Prints one JSON line of what it saw; the test judges it."""
    import errno, json, sys
    from engee_client import Agent

    args = json.loads(sys.argv[1])
    devices, groups = args["devices"], args["groups"]
    control, member, group_port, burst = args["control_port"], args["member_port"], args["group_port"], args["burst"]

    def heard(s, count, timeout=10.0, until=None):
        """Up to `count` datagrams, as [text, sender]; stops early after a timeout or the one reading `until`."""
        got = []
        while len(got) < count:
            result = s.receive(65535, timeout=timeout)
            if result is None:
                break
            got.append([bytes(result).decode(), list(result.address)])
            if got[-1][0] == until:
                break
        return got

    def discovery(lab):
        """One broadcast DISCOVER from an unconnected socket; every device answers it at its own address."""
        with lab.Socket("AF_INET", "SOCK_DGRAM") as s:
            try:  # without SO_BROADCAST the kernel refuses a broadcast destination
                s.send_to(b"DISCOVER", args["broadcast"], control)
                s.flush()
                refused = None
            except OSError as exc:
                refused = errno.errorcode.get(exc.errno, str(exc))
            s.set_option("SO_BROADCAST", True)
            flag = s.get_option("SO_BROADCAST")
            sent = s.send_to(b"DISCOVER", args["broadcast"], control)
            answers = heard(s, len(devices))
            extra = heard(s, 1, timeout=0.3)  # one answer each, no more
        return {"refused": refused, "flag": flag, "sent": sent, "answers": answers, "extra": extra}

    def multicast_out(lab, family, tag):
        """A datagram to the group: the members answer it; then every device says what its member port heard."""
        with lab.Socket(family, "SOCK_DGRAM") as s:
            s.set_option("IP_MULTICAST_TTL", args["ttl"])
            ttl = s.get_option("IP_MULTICAST_TTL")
            payload = f"HELLO {tag}"
            s.send_to(payload.encode(), groups[family], member)
            got = heard(s, len(args["members"]))
            for addresses in devices.values():  # after the members' answers: every copy has been delivered
                s.send_to(b"HEARD", addresses[family], control)
            reports = heard(s, len(devices))
        return {"ttl": ttl, "payload": payload, "got": got, "reports": reports}

    def multicast_in(lab, family, tag, interfaces):
        """Join the group, hear dev1's burst; leave it, and of the next burst hear only dev1's unicast DONE."""
        rounds = []
        with lab.Socket(family, "SOCK_DGRAM") as s:
            if family == "AF_INET6":
                s.set_option("IPV6_V6ONLY", True)
            s.bind("0.0.0.0" if family == "AF_INET" else "::", group_port)
            sender = devices["dev1"][family]
            for interface in interfaces:
                name = f"{tag}-{interface}"
                s.join_group(groups[family], interface)
                s.send_to(f"BURST {name}-joined {burst} {group_port}".encode(), sender, control)
                joined = heard(s, burst + 1)  # the burst and DONE, in whatever order they come
                s.leave_group(groups[family], interface)
                s.send_to(f"BURST {name}-left {burst} {group_port}".encode(), sender, control)
                left = heard(s, burst + 1, until=f"DONE {name}-left")  # sent after the burst: it comes last
                after = heard(s, 1, timeout=0.3)
                rounds.append({"name": name, "joined": joined, "left": left, "after": after})
        return rounds

    result = {}
    for transport in ("http", "channel"):
        lab = Agent(args["url"], token=args["token"], transport=transport, retry_for=5.0)
        seen = {"discovery": discovery(lab)}
        for family in groups:
            tag = f"{transport}-{family}"
            interfaces = ["br0", args["pc"]] if family == "AF_INET" else ["br0"]  # by name, and by address
            seen[family] = {"out": multicast_out(lab, family, tag), "in": multicast_in(lab, family, tag, interfaces)}
        seen["sockets_left"] = len(lab.sockets())
        lab.disconnect()
        result[transport] = seen
    print(json.dumps(result))
''')


@dataclass
class Lan:
    names: dict[str, str]
    """Each role ("pc", "dev1", ...) and its namespace's name."""

    def run(self, role: str) -> list[str]:
        """The prefix that runs a command inside `role`'s namespace."""
        return ["ip", "netns", "exec", self.names[role]]

    def holds(self, role: str, pid: int) -> bool:
        """Whether process `pid` lives in `role`'s namespace."""
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{self.names[role]}").st_ino


def _setup(names: dict[str, str]) -> None:
    """The namespaces, the PC's bridge with a veth pair to each device, the addresses and the group routes."""
    for name in names.values():
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
    pc = names["pc"]
    _ip("-n", pc, "link", "add", "br0", "type", "bridge")
    _ip("-n", pc, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")  # flood groups to every port
    for device, addresses in DEVICES.items():
        space, port = names[device], f"v{device}"
        # Both ends are made inside the namespaces, so nothing ever appears in the host's namespace.
        _ip("-n", pc, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", space)
        _ip("-n", pc, "link", "set", port, "master", "br0")
        # A bridge port is no interface of the PC's own: no IPv6 on it, so br0 holds the only ff00::/8 route.
        _ip("netns", "exec", pc, "sysctl", "-qw", f"net.ipv6.conf.{port}.disable_ipv6=1")
        _ip("-n", pc, "link", "set", port, "up")
        _ip("-n", space, "addr", "add", f"{addresses['AF_INET']}/24", "dev", "eth0")
        _ip("-n", space, "addr", "add", f"{addresses['AF_INET6']}/64", "dev", "eth0", "nodad")
        _ip("-n", space, "link", "set", "eth0", "up")
        _ip("-n", space, "route", "add", "224.0.0.0/4", "dev", "eth0")
    _ip("-n", pc, "addr", "add", f"{PC['AF_INET']}/24", "dev", "br0")
    _ip("-n", pc, "addr", "add", f"{PC['AF_INET6']}/64", "dev", "br0", "nodad")
    _ip("-n", pc, "link", "set", "br0", "up")
    _ip("-n", pc, "route", "add", "224.0.0.0/4", "dev", "br0")  # IPv4 groups have no route of their own


@pytest.fixture
def lan() -> Iterator[Lan]:
    """A fresh PC namespace with a bridge and three device namespaces on it; deleted afterwards, whatever happens."""
    if shutil.which("ip") is None:
        _skip_or_fail("no `ip` command (iproute2), so no network namespaces to build the LAN in")
    suffix = secrets.token_hex(3)
    spaces = Lan({role: f"engee-{role}-{suffix}" for role in ("pc", *DEVICES)})
    try:
        try:
            _setup(spaces.names)
        except RuntimeError as exc:
            if not UNSUPPORTED.search(str(exc)):
                raise
            _skip_or_fail(f"cannot make network namespaces with a bridge and veth pairs here: {exc}")
        yield spaces
    finally:
        for name in spaces.names.values():
            if not Path(f"/run/netns/{name}").exists():
                continue
            done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30)
            for pid in done.stdout.split():  # only the test's own processes live in its namespaces
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def _notebook(lan: Lan, script: Path, args: dict[str, object]) -> dict[str, Any]:
    """Run the notebook script in the PC's namespace; its JSON line."""
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    done = subprocess.run(
        [*lan.run("pc"), sys.executable, str(script), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONUNBUFFERED": "1"},
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, f"the notebook failed:\n{done.stdout}\n{done.stderr}"
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def _check(seen: dict[str, Any]) -> None:
    """What one transport's run of the notebook saw, against what the LAN must have done."""
    found = seen["discovery"]
    assert found["refused"] == "EACCES", found  # a broadcast needs SO_BROADCAST, as on any socket
    assert found["flag"] is True and found["sent"] == len(b"DISCOVER")
    assert sorted(found["answers"]) == [[f"DEVICE {name}", [a["AF_INET"], CONTROL_PORT]] for name, a in DEVICES.items()]
    assert found["extra"] == [], found

    for family in GROUPS:
        out = seen[family]["out"]
        assert out["ttl"] == MULTICAST_TTL
        expected = [
            [f"GOT {name} {MULTICAST_TTL} {out['payload']}", [DEVICES[name][family], MEMBER_PORT]] for name in MEMBERS
        ]
        assert sorted(out["got"]) == expected, out  # both members heard it, with the TTL the agent's socket set
        reports = {}
        for text, sender in out["reports"]:
            _, name, heard = text.split(" ", 2)
            assert sender == [DEVICES[name][family], CONTROL_PORT]
            reports[name] = out["payload"] in json.loads(heard)
        assert reports == {name: name in MEMBERS for name in DEVICES}, out  # dev1 never joined: not a word

        sender = [DEVICES["dev1"][family], CONTROL_PORT]
        for round_ in seen[family]["in"]:
            name = round_["name"]
            burst = [[f"{name}-joined {index}", sender] for index in range(BURST)]
            assert sorted(round_["joined"]) == sorted([*burst, [f"DONE {name}-joined", sender]]), round_
            assert round_["left"] == [[f"DONE {name}-left", sender]], round_  # the burst after leaving: dropped
            assert round_["after"] == [], round_
    assert seen["sockets_left"] == 0


def test_the_notebook_finds_the_devices_by_broadcast_and_speaks_to_them_by_multicast(lan: Lan, tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    device_script, notebook_script = tmp_path / "device.py", tmp_path / "notebook.py"
    device_script.write_text(DEVICE)
    notebook_script.write_text(NOTEBOOK)
    with _children() as started:
        for name in DEVICES:
            ports = [str(CONTROL_PORT), str(MEMBER_PORT), "join" if name in MEMBERS else "stay"]
            device = ChildProcess(
                [*lan.run(name), sys.executable, str(device_script), name, *ports],
                rf"device {name} ready",
                log_dir=str(tmp_path),
            )
            _start(device, started)
            assert lan.holds(name, device.pid)
        agent = ChildProcess(
            [*lan.run("pc"), sys.executable, "-m", "agent", "--host", "127.0.0.1", "--port", "0"],
            r"engee-agent listening on (\S+)",
            env={"ENGEE_AGENT_TOKEN": token},
            log_dir=str(tmp_path),
        )
        _start(agent, started)
        assert lan.holds("pc", agent.pid)

        seen = _notebook(
            lan,
            notebook_script,
            {
                "url": agent.match.group(1),
                "token": token,
                "pc": PC["AF_INET"],
                "devices": DEVICES,
                "members": MEMBERS,
                "broadcast": BROADCAST,
                "groups": GROUPS,
                "control_port": CONTROL_PORT,
                "member_port": MEMBER_PORT,
                "group_port": GROUP_PORT,
                "burst": BURST,
                "ttl": MULTICAST_TTL,
            },
        )
        assert sorted(seen) == ["channel", "http"]
        for transport in ("http", "channel"):
            _check(seen[transport])
        assert all(child.alive() for child in started)
