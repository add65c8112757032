"""The HTTP contract is good enough for a standard generator: openapi-python-client writes a client from the
document the running agent serves, with no warning and no hand edits, and the seed's loop and a TCP exchange
run through that generated client alone (tests/generated/seed_and_tcp.py, in a process of its own)."""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from lab.process import AgentProcess

SCRIPT = Path(__file__).parent / "generated" / "seed_and_tcp.py"


def _echo(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with connection:
        while data := connection.recv(65536):
            connection.sendall(data)


def test_a_generated_client_runs_the_seed_and_tcp(agent_process: AgentProcess, tmp_path: Path) -> None:
    document = httpx.get(
        agent_process.url + "/openapi.json", headers={"Authorization": f"Bearer {agent_process.token}"}
    )
    assert document.status_code == 200
    (tmp_path / "openapi.json").write_text(document.text)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff post-hook
    generated = subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path", "openapi.json", "--output-path", "client"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0 and "Warning" not in output and "Error" not in output, output
    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=_echo, args=(listener,), daemon=True).start()
        args = {"url": agent_process.url, "token": agent_process.token, "tcp": listener.getsockname()[1]}
        run = subprocess.run(
            [sys.executable, str(SCRIPT), json.dumps(args)],
            cwd=tmp_path,  # not the repository: the generated client and nothing of ours
            env={**env, "PYTHONPATH": str(tmp_path / "client")},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"seed": 1000, "sent": 16384, "tcp": True}
