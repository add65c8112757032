"""docker-compose.yml, checked by docker-compose itself (`config` needs no Docker engine).

The topology it describes is the real setting: the device on the internal "lab" network only; the
agent on "lab" and "cloud", serving no port and linking out to two gateway replicas that share
NATS; the notebook on "cloud" only, calling the agent through a gateway by its id. So the notebook
reaches the device only through the gateway and the agent. tests/test_relay_nat.py runs that
setting with processes in network namespaces, the lab behind a NAT router.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent.settings import load
from gateway.settings import load as load_gateway

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


def _argv(service: dict) -> list[str]:
    """A container's command: the service's own, else the Dockerfile's CMD."""
    assert "entrypoint" not in service, "a service overrides the entrypoint; teach this test to read it"
    if "command" in service:
        command = service["command"]
        return command.split() if isinstance(command, str) else list(command)
    cmds = re.findall(r"^CMD\s+(\[.*\])\s*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert cmds, "the Dockerfile has no CMD in exec form"
    return json.loads(cmds[-1])


GATEWAYS = ("gateway-a", "gateway-b")


def test_compose_file_is_valid() -> None:
    done = _run("config", "--quiet")
    assert done.returncode == 0, f"docker-compose config --quiet failed:\n{done.stderr}"


def test_every_service_but_nats_is_built_from_the_repository(config: dict) -> None:
    services = config["services"]
    assert set(services) == {"device", "nats", *GATEWAYS, "agent", "notebook"}
    for name, service in services.items():
        if name == "nats":
            assert service["image"].startswith("nats:"), service
            continue
        build = service.get("build")
        assert isinstance(build, dict), f"{name} is not built from the repository: {service}"
        assert Path(build["context"]).resolve() == ROOT, f"{name} builds from {build['context']}"


def test_the_notebook_reaches_the_device_only_through_a_gateway(config: dict) -> None:
    services, networks = config["services"], config["networks"]
    assert _networks(services["device"]) == {"lab"}
    assert _networks(services["notebook"]) == {"cloud"}
    assert _networks(services["agent"]) == {"lab", "cloud"}
    for name in (*GATEWAYS, "nats"):
        assert _networks(services[name]) == {"cloud"}, name
    assert networks["lab"].get("internal") is True, "the lab network must be internal: no way out, no way in"
    assert not any(service.get("ports") for service in services.values()), "no service publishes a port"


def test_the_agent_links_out_to_both_replicas_and_serves_no_port(config: dict) -> None:
    services = config["services"]
    argv = _argv(services["agent"])
    assert Path(argv[0]).name == "engee-agent", argv
    settings = load(argv[1:], environ={})
    assert not settings.listen
    assert settings.gateways == tuple(f"http://{name}:8800" for name in GATEWAYS)
    gateway = tomllib.loads((ROOT / "deploy" / "gateway.toml").read_text())
    assert settings.agent_id in gateway["agents"]
    assert settings.agent_key == gateway["agents"][settings.agent_id]["key"]


def test_the_replicas_share_nats_and_know_the_agent_and_the_user(config: dict) -> None:
    services = config["services"]
    for name in GATEWAYS:
        argv = _argv(services[name])
        assert Path(argv[0]).name == "engee-gateway", argv
        flags = [str(ROOT / flag) if flag.endswith(".toml") else flag for flag in argv[1:]]
        settings = load_gateway(flags)
        assert settings.nats == "nats://gateway:demo-nats-password-change-me@nats:4222" and settings.port == 8800
        assert settings.advertise == f"http://{name}:8800"  # the other replica dials it by its compose name
        nats = (ROOT / "deploy" / "nats.conf").read_text()
        assert "authorization" in nats and "demo-nats-password-change-me" in nats  # only replicas may connect
        notebook = services["notebook"]["environment"]
        url = urlsplit(notebook["ENGEE_AGENT_URL"])
        user = settings.user(notebook["ENGEE_AGENT_TOKEN"])
        assert user is not None, "the notebook's token is no user of the gateway"
        assert url.hostname in GATEWAYS and url.path == "/agents/lab" and "lab" in user.agents
    assert services["notebook"]["depends_on"]["gateway-b"]["condition"] == "service_healthy"
