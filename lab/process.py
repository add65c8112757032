"""Child processes that announce themselves with a banner line: the agent for tests, demo and bench."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from protocol import TOKEN_VARIABLE


class ChildProcess:
    """A command whose output goes to a log file, ready once a line matching `banner` appears.

    A log file rather than a pipe, so a chatty child can never block on a full pipe.
    """

    match: re.Match[str]
    """The banner line, once `start` has seen it."""

    def __init__(
        self, argv: list[str], banner: str, *, env: dict[str, str] | None = None, log_dir: str | None = None
    ) -> None:
        self.argv = argv
        self.banner = re.compile(banner)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="engee-child-", suffix=".log", dir=log_dir)[1])
        self._keep_log = log_dir is not None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Self:
        """Start the command and wait for its banner (then in `match`); RuntimeError with the output if it never comes."""
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := self.banner.search(self.output()):
                self.match = match
                self.started()
                return self
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.argv[2:4] or self.argv} did not start; its output:\n{self.output()}")

    def started(self) -> None:
        """Called once the banner is out: what a subclass reads from `match`."""

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if not self._keep_log and exc_info[0] is None:
            self.log_path.unlink(missing_ok=True)


class AgentProcess(ChildProcess):
    """`python -m agent` on a free loopback port; `url` and `token` are known once it listens."""

    def __init__(
        self, *args: str, token: str | None = None, host: str = "127.0.0.1", log_dir: str | None = None
    ) -> None:
        self.token = token or secrets.token_urlsafe(16)
        self.url = ""
        super().__init__(
            [sys.executable, "-m", "agent", "--host", host, "--port", "0", *args],
            r"engee-agent (?:listening on (\S+)|serving no local port)",
            env={TOKEN_VARIABLE: self.token},
            log_dir=log_dir,
        )

    def started(self) -> None:
        self.url = self.match.group(1) or ""  # none with --no-listen


class GatewayProcess(ChildProcess):
    """`python -m gateway` on a free loopback port with the config file `config`; `url` once it listens."""

    def __init__(self, config: str, *args: str, log_dir: str | None = None) -> None:
        self.url = ""
        super().__init__(
            [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", "0", "--config", config, *args],
            r"engee-gateway listening on (\S+)",
            log_dir=log_dir,
        )

    def started(self) -> None:
        self.url = self.match.group(1)


class Relay:
    """Gateways and an agent linked to the first, on loopback, as the real setting has them: `url` reaches the
    agent through the last gateway, with `token` (a gateway user's). With `replicas=2`, two gateways share a
    nats-server, so `url` goes through the replica that does not hold the link. For the bench and the demo."""

    AGENT_ID = "lab"

    def __init__(self, log_dir: str | None = None, replicas: int = 1) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="engee-relay-", dir=log_dir))
        self._keep = log_dir is not None
        self.key, self.token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.config = self.folder / "gateway.toml"
        self.config.write_text(
            f'[agents.{self.AGENT_ID}]\nkey = "{self.key}"\n'
            f'[users.notebook]\ntoken = "{self.token}"\nagents = ["{self.AGENT_ID}"]\n'
        )
        self.replicas = replicas
        self.nats: NatsServer | None = None
        self.gateways: list[GatewayProcess] = []
        self.agent: AgentProcess | None = None
        self.url = ""

    @property
    def gateway(self) -> GatewayProcess:
        return self.gateways[0]

    def start(self, timeout: float = 20.0) -> Self:
        shared: tuple[str, ...] = ()
        if self.replicas > 1:
            self.nats = NatsServer(log_dir=str(self.folder)).start()
            shared = ("--nats", self.nats.url)
        for _ in range(self.replicas):
            self.gateways.append(GatewayProcess(str(self.config), *shared, log_dir=str(self.folder)).start())
        self.agent = AgentProcess(
            *(argument for gateway in self.gateways for argument in ("--gateway", gateway.url)),
            "--agent-id",
            self.AGENT_ID,
            f"--agent-key={self.key}",  # one argument: a key may start with "-"
            "--no-listen",
            log_dir=str(self.folder),
        ).start()
        self.url = f"{self.gateways[-1].url}/agents/{self.AGENT_ID}"
        request = urllib.request.Request(f"{self.url}/v1/agent", headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=5):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the agent did not link to the gateway:\n{self.gateway.output()}")

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        for gateway in self.gateways:
            gateway.stop()
        if self.nats is not None:
            self.nats.stop()
        if not self._keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class NatsServer(ChildProcess):
    """`nats-server` on a free loopback port, with room for a channel's largest frames; `url` once it runs."""

    def __init__(self, log_dir: str | None = None) -> None:
        folder = Path(tempfile.mkdtemp(prefix="engee-nats-", dir=log_dir))
        config = folder / "nats.conf"
        config.write_text("listen: 127.0.0.1:-1\nmax_payload: 33554432\n")
        self.url = ""
        super().__init__(
            ["nats-server", "-c", str(config)], r"Listening for client connections on (\S+)", log_dir=log_dir
        )

    def started(self) -> None:
        self.url = "nats://" + self.match.group(1)
