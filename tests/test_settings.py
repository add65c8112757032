"""The agent's settings: flags over environment over config file over defaults, and clear refusals."""

import subprocess
import sys
from pathlib import Path

import pytest

from agent.settings import SettingsError, load

TOKEN = {"ENGEE_AGENT_TOKEN": "t" * 20}


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_loopback_8700_and_a_generated_admin_token() -> None:
    settings = load([], {})
    assert (settings.host, settings.port, settings.token_generated) == ("127.0.0.1", 8700, True)
    assert [(p.name, p.admin) for p in settings.principals] == [("owner", True)]


def test_flag_beats_environment_beats_config(tmp_path: Path) -> None:
    path = config(tmp_path, 'host = "10.0.0.1"\nport = 1111\nlog_level = "error"\n')
    assert load(["--config", path], TOKEN).port == 1111
    assert load(["--config", path], {**TOKEN, "ENGEE_AGENT_PORT": "2222"}).port == 2222
    assert load(["--config", path, "--port", "3333"], {**TOKEN, "ENGEE_AGENT_PORT": "2222"}).port == 3333
    assert load([], {**TOKEN, "ENGEE_AGENT_CONFIG": path}).host == "10.0.0.1"
    assert load(["--config", path, "--log-level", "DEBUG"], TOKEN).log_level == "debug"


@pytest.mark.parametrize(
    "text, message",
    [
        ("prot = 1", r"unknown config entry prot \(did you mean port\?\)"),
        ("port = 70000", "outside 0..65535"),
        ("[limits]\nsockets = 3", "unknown config entry limits.sockets"),
        ("[limits]\nidle_timeout = -1", "idle_timeout = -1 must be a number >= 0"),
        ("[limits]\nchannel_spin = 1", "channel_spin = 1 is not within 0..0.01 seconds"),
        ("[limits]\nchannel_spin = nan", "channel_spin = nan is not within 0..0.01 seconds"),
        ("[principals.alice]\ntoken = 'short'", "at least 16 characters"),
        ("[principals.a]\ntoken = '" + "x" * 20 + "'\n[principals.b]\ntoken = '" + "x" * 20 + "'", "share a token"),
        ("[policy]\nconnect_allow = ['10.0.0.0/33']", "neither a network"),
        ("ssl_certfile = 'a.pem'", "go together"),
        ("port = ", "not valid TOML"),
        ("gateway_ca = 'ca.pem'", "give --gateway URL too"),
        (
            "gateways = ['https://gw.example']\nagent_id = 'lab'\nagent_key = '" + "k" * 20 + "'\n"
            "gateway_ca = '/nonexistent/ca.pem'",
            "is no CA file this agent can use",
        ),
    ],
)
def test_bad_configuration_is_refused_with_what_to_change(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(["--config", config(tmp_path, text)], TOKEN)


def test_the_command_line_reports_bad_settings_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.startswith("engee-agent: cannot read --config") and "Traceback" not in done.stderr


def test_help_documents_every_option_with_its_default() -> None:
    done = subprocess.run([sys.executable, "-m", "agent", "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(done.stdout.split())
    for option, default in [
        ("--host", "default 127.0.0.1"),
        ("--port", "default 8700"),
        ("--token", "default $ENGEE_AGENT_TOKEN"),
        ("--log-level", "default warning"),
        ("--allow-connect", "default: anywhere"),
        ("--audit-log", "default: standard error"),
    ]:
        assert option in text and default in text, option
    assert "ENGEE_AGENT_<OPTION>" in text


def test_banner_gives_the_url_token_status_link_and_notebook_snippet(agent_process) -> None:
    banner = agent_process.output()
    url, token = agent_process.url, agent_process.token
    for line in (
        f"engee-agent listening on {url}",
        f"token: {token}",
        f"status page: {url}/?token={token}",
        f"export ENGEE_AGENT_URL={url}",
        f"export ENGEE_AGENT_TOKEN={token}",
        f'Agent("{url}", token="{token}")',
    ):
        assert line in banner
