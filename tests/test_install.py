"""Installed like a product: the built wheel, pip-installed into a clean venv, gives working commands and an
importable client with nothing of the repository on the path; and the README's first steps, run as a new user
runs them (engee-instrument, engee-agent, then the examples with the two variables it printed)."""

import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.process import ChildProcess

REPO = Path(__file__).parent.parent


def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run([str(arg) for arg in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean venv with the project's wheel installed: its bin directory."""
    root = tmp_path_factory.mktemp("install")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", root / "dist", REPO, cwd=root)
    wheel = next((root / "dist").glob("engee_sockets-*.whl"))
    venv.create(root / "venv", with_pip=True)
    bin_dir = root / "venv" / "bin"
    _run(bin_dir / "python", "-m", "pip", "install", "--quiet", wheel, cwd=root)
    yield bin_dir
    shutil.rmtree(root, ignore_errors=True)


def test_the_wheel_gives_the_commands_and_the_client(installed: Path, tmp_path: Path) -> None:
    for command in ("engee-agent", "engee-gateway", "engee-echo", "engee-instrument"):
        assert "usage:" in _run(installed / command, "--help", cwd=tmp_path), command
    assert re.fullmatch(r"[0-9a-f]{64}\n", _run(installed / "engee-gateway", "hash", "a-secret-of-ours", cwd=tmp_path))
    where = _run(installed / "python", "-c", "import engee_client, agent; print(engee_client.__file__)", cwd=tmp_path)
    assert where.startswith(str(installed.parent)) and "site-packages" in where  # not the repository's copy


def test_the_first_steps_of_the_readme(installed: Path, tmp_path: Path) -> None:
    """As a new user: the instrument and the agent from the installed commands, then the examples (copied out of
    the clone, as a user's own scripts) with the URL and token the agent printed."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENGEE_")}
    with (
        ChildProcess(
            [str(installed / "engee-instrument"), "--tcp", "0", "--udp", "0"],
            r"instrument udp listening on 127\.0\.0\.1:(\d+)",
            env=env,
        ) as instrument,
        ChildProcess([str(installed / "engee-agent"), "--port", "0"], r"ENGEE_AGENT_TOKEN=(\S+)", env=env) as agent,
    ):
        tcp = re.search(r"instrument tcp listening on 127\.0\.0\.1:(\d+)", instrument.output())
        url = re.search(r"engee-agent listening on (\S+)", agent.output())
        assert tcp is not None and url is not None, agent.output()
        user = {**env, "ENGEE_AGENT_URL": url.group(1), "ENGEE_AGENT_TOKEN": agent.match.group(1), "SEED_PORT": "0"}
        for script in ("seed_example.py", "instrument_idn.py"):
            shutil.copy(REPO / "examples" / script, tmp_path / script)
        seed = _run(installed / "python", "seed_example.py", cwd=tmp_path, env=user, timeout=120)
        assert "seed example: 1000 of 1000 UDP messages checked" in seed
        idn = _run(installed / "python", "instrument_idn.py", "127.0.0.1", tcp.group(1), cwd=tmp_path, env=user)
        assert "*IDN? -> ENGEE,SIM-1,0001,1.0" in idn
