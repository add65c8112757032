"""The seed's example and the seed's two call styles, through a real agent."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engee_client import DefaultAgent, ResultUIntList
from lab.process import AgentProcess


@pytest.mark.usefixtures("sockets_env")
def test_function_style_and_method_style_are_the_same_calls() -> None:
    Sockets = DefaultAgent()  # a fresh one, configured from the environment on first use
    server = Sockets.Socket("AF_INET", "SOCK_DGRAM")
    Sockets.bind(server, "127.0.0.1", 0)
    client = Sockets.Socket("AF_INET", "SOCK_DGRAM")
    assert Sockets.connect(client, *server.local_address) == 0
    assert Sockets.send(client, b"function style") == len(b"function style")
    result = Sockets.receive(server, 100)
    assert isinstance(result, ResultUIntList)
    assert bytes(result) == b"function style" and len(result) == 14
    assert result.address == client.local_address
    assert Sockets.is_open(server, server.descriptor) is True
    Sockets.close(server)
    assert Sockets.is_open(client, server.descriptor) is False
    Sockets.close(client)
    with pytest.raises(TypeError, match="first argument must be a Socket"):
        Sockets.bind("not a socket", "127.0.0.1", 0)


def test_sockets_without_configuration_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from engee_client import AgentError

    monkeypatch.delenv("ENGEE_AGENT_URL", raising=False)
    with pytest.raises(AgentError, match="ENGEE_AGENT_URL"):
        DefaultAgent().Socket("AF_INET", "SOCK_DGRAM")


def test_seed_example_verbatim(agent_process: AgentProcess) -> None:
    """examples/seed_example.py is the seed's example in Python syntax: 1000 UDP messages, each checked."""
    script = Path(__file__).resolve().parent.parent / "examples" / "seed_example.py"
    env = {
        **os.environ,
        "ENGEE_AGENT_URL": agent_process.url,
        "ENGEE_AGENT_TOKEN": agent_process.token,
        "SEED_PORT": "0",
    }
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"1000 of 1000 UDP messages checked through the agent at {agent_process.url}" in done.stdout
