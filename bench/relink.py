"""`python -m bench.relink`: how soon an agent is linked again once its way to the gateway is back.

A real gateway and a real agent process that links to it through a cable: a TCP relay on loopback
that can be pulled (every connection reset, new ones refused) and plugged in again. For each
outage length the cable is pulled, left out, plugged in, and the time from then until the gateway
answers a notebook's call for the agent again is measured. The agent's backoff doubles from half
a second, jittered, capped at 30 s, so the longer the outage, the longer the wait, up to the cap.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import httpx

from lab.process import AgentProcess, GatewayProcess

from .peers import HOST


class Cable:
    """A TCP relay from a loopback port to `upstream` that `pull` cuts (and refuses new connections) till `plug`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def pull(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone leaves it listening)
        self._listener.close()
        with self._lock:
            cut, self._open = self._open, set()
        for sock in cut:  # reset both ways; shut first, for a close alone does not wake the pump's recv
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def plug(self) -> None:
        self._listener = socket.create_server((HOST, self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return
            far = socket.create_connection(self.upstream)
            with self._lock:
                self._open.update((near, far))
            for source, target in ((near, far), (far, near)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relink_after(cable: Cable, probe: httpx.Client, outage: float) -> float:
    """Seconds from the cable plugged in again after `outage` seconds out to the agent answering through the gateway."""
    cable.pull()
    while probe.get("/v1/agent").status_code == 200:  # until the gateway has seen the link go
        time.sleep(0.01)
    time.sleep(outage)
    cable.plug()
    back = time.monotonic()
    while probe.get("/v1/agent").status_code != 200:
        if time.monotonic() - back > 60:
            raise RuntimeError("the agent did not link again within 60 s")
        time.sleep(0.02)
    return time.monotonic() - back


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relink", description=__doc__.splitlines()[0])
    parser.add_argument("--outages", type=float, nargs="+", default=[1, 5, 20, 60], help="seconds out (1 5 20 60)")
    args = parser.parse_args()
    key, token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    folder = Path(tempfile.mkdtemp(prefix="engee-relink-"))
    config = folder / "gateway.toml"
    config.write_text(f'[agents.lab]\nkey = "{key}"\n[users.notebook]\ntoken = "{token}"\nagents = ["lab"]\n')
    with GatewayProcess(str(config), log_dir=str(folder)) as gateway:
        host, _, port = gateway.url.removeprefix("http://").rpartition(":")
        cable = Cable((host, int(port)))
        link = ("--gateway", cable.url, "--agent-id", "lab", f"--agent-key={key}", "--no-listen")
        headers = {"Authorization": f"Bearer {token}"}
        with AgentProcess(*link, log_dir=str(folder)), httpx.Client(base_url=f"{gateway.url}/agents/lab") as probe:
            probe.headers.update(headers)
            relink_after(cable, probe, 0.0)  # linked at all, and a first relink out of the way
            for outage in args.outages:
                took = relink_after(cable, probe, outage)
                print(f"cable out for {outage:g} s: the agent answered again {took:.2f} s after it was back")


if __name__ == "__main__":
    main()
