"""Run an agent as a child process: what the tests, the demo and the bench start."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BANNER = "engee-agent listening on "


class AgentProcess:
    """`python -m agent` on a free loopback port; `url` and `token` are known once it listens.

    Its output goes to a log file (`log_path`), so a chatty agent can never block on a full pipe.
    """

    def __init__(self, *args: str, token: str | None = None, host: str = "127.0.0.1",
                 log_dir: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(16)
        self.args = ["--host", host, "--port", "0", *args]
        self.log_path = Path(tempfile.mkstemp(prefix="engee-agent-", suffix=".log", dir=log_dir)[1])
        self._keep_log = log_dir is not None
        self.url = ""
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> AgentProcess:
        env = {**os.environ, "ENGEE_AGENT_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen([sys.executable, "-m", "agent", *self.args], stdout=log,
                                             stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith(BANNER):
                    self.url = line.removeprefix(BANNER).strip()
                    return self
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the agent did not start; its output:\n{self.log_path.read_text(errors='replace')}")

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

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if not self._keep_log and exc_info[0] is None:
            self.log_path.unlink(missing_ok=True)
