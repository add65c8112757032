"""docker-compose.yml, checked by docker-compose itself (`config` needs no Docker engine).

The topology it describes: the device on the internal "lab" network only, the notebook on "cloud"
only, the agent on both, so the notebook reaches the device only through the agent.
tests/test_topology.py runs the same topology with processes in network namespaces.
"""

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent.settings import load

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"


def _compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip(
            "docker-compose is not installed, so docker-compose.yml is not validated "
            "(`make test` installs Debian's docker-compose package where it runs as root with apt-get)"
        )
    return found


def _run(*args: str) -> subprocess.CompletedProcess:
    """docker-compose on the repository's file, with no outside variables changing what it says."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("COMPOSE_", "ENGEE_", "DOCKER_"))}
    return subprocess.run(
        [_compose(), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


def _parse_yaml(text: str, compose: str) -> dict:
    """YAML to Python: with PyYAML here, else with the interpreter docker-compose runs on (it needs PyYAML)."""
    try:
        import yaml
    except ImportError:
        first = Path(compose).read_text(errors="replace").splitlines()[0]
        interpreter = first[2:].split() if first.startswith("#!") else [sys.executable]
        script = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
        done = subprocess.run([*interpreter, "-c", script], input=text, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"cannot parse docker-compose's output:\n{done.stderr}"
        return json.loads(done.stdout)
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def config() -> dict:
    """The compose file as docker-compose resolves it (defaults filled in, variables interpolated)."""
    done = _run("config")
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    return _parse_yaml(done.stdout, _compose())


def _networks(service: dict) -> set[str]:
    networks = service.get("networks", {})
    return set(networks) if isinstance(networks, (dict, list)) else set()


def _agent_argv(service: dict) -> list[str]:
    """The agent container's command: the service's own, else the Dockerfile's CMD."""
    assert "entrypoint" not in service, "the agent service overrides the entrypoint; teach this test to read it"
    if "command" in service:
        command = service["command"]
        return command.split() if isinstance(command, str) else list(command)
    cmds = re.findall(r"^CMD\s+(\[.*\])\s*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert cmds, "the Dockerfile has no CMD in exec form"
    return json.loads(cmds[-1])


def test_compose_file_is_valid() -> None:
    done = _run("config", "--quiet")
    assert done.returncode == 0, f"docker-compose config --quiet failed:\n{done.stderr}"


def test_three_services_built_from_the_repository(config: dict) -> None:
    services = config["services"]
    assert set(services) == {"agent", "device", "notebook"}
    for name, service in services.items():
        build = service.get("build")
        assert isinstance(build, dict), f"{name} is not built from the repository: {service}"
        assert Path(build["context"]).resolve() == ROOT, f"{name} builds from {build['context']}"
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", f"{name} uses {build['dockerfile']}"


def test_notebook_reaches_the_device_only_through_the_agent(config: dict) -> None:
    services, networks = config["services"], config["networks"]
    assert _networks(services["device"]) == {"lab"}
    assert _networks(services["notebook"]) == {"cloud"}
    assert _networks(services["agent"]) == {"lab", "cloud"}
    assert networks["lab"].get("internal") is True, "the lab network must be internal: no way out, no way in"
    assert not (networks["cloud"] or {}).get("internal"), "the notebook's network is the ordinary one"
    for name, service in services.items():
        assert "network_mode" not in service, f"{name} sets network_mode, which bypasses the networks"
    assert not services["device"].get("ports"), "the device publishes ports on the host, reachable around the agent"
    assert "ENGEE_AGENT_TOKEN" in services["agent"].get("environment", {})


def test_notebook_calls_the_agent(config: dict) -> None:
    notebook = config["services"]["notebook"]
    url = urlsplit(notebook["environment"]["ENGEE_AGENT_URL"])
    assert (url.scheme, url.hostname) == ("http", "agent"), url.geturl()
    assert (
        notebook["environment"]["ENGEE_AGENT_TOKEN"] == config["services"]["agent"]["environment"]["ENGEE_AGENT_TOKEN"]
    )
    assert notebook["depends_on"]["agent"]["condition"] == "service_healthy"


def test_agent_answers_to_the_url_the_notebook_uses(config: dict) -> None:
    """The agent listens where the notebook's URL points, and accepts that URL's host name (its Host check)."""
    services = config["services"]
    argv = _agent_argv(services["agent"])
    if Path(argv[0]).name == "engee-agent":
        flags = argv[1:]
    elif argv[1:3] == ["-m", "agent"]:
        flags = argv[3:]
    else:
        pytest.fail(f"the agent service does not run the agent: {argv}")
    settings = load(flags, environ={k: str(v) for k, v in services["agent"].get("environment", {}).items()})
    url = urlsplit(services["notebook"]["environment"]["ENGEE_AGENT_URL"])
    assert not ipaddress.ip_address(settings.host).is_loopback, f"the agent listens on {settings.host} only"
    assert settings.port == (url.port or 80)
    try:
        ipaddress.ip_address(url.hostname)
    except ValueError:
        assert url.hostname in {"localhost", *settings.allowed_hosts}, (
            f"the notebook calls {url.geturl()} but the agent ({argv}) does not answer to the host name "
            f"{url.hostname!r}: it needs --allow-host {url.hostname}"
        )
