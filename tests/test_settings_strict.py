"""Every section of the config file is checked: unknown keys named with a suggestion, wrong types named."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.settings import SettingsError, load

TOKEN = {"ENGEE_AGENT_TOKEN": "t" * 20}
ALICE = "[principals.alice]\ntoken = '" + "a" * 20 + "'\n"


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[policy]\nconect_allow = ['10.0.0.0/8']",
            "unknown config entry policy.conect_allow (did you mean connect_allow?)",
        ),
        (
            "[policy]\nconnect_deny = ['10.0.0.1']\nbind_alow = []",
            "unknown config entry policy.bind_alow (did you mean bind_allow?)",
        ),
        ("[limits]\nidle_timout = 5", "unknown config entry limits.idle_timout (did you mean idle_timeout?)"),
        (ALICE + "admn = true", "unknown config entry principals.alice.admn (did you mean admin?)"),
        ("log_levle = 'info'", "unknown config entry log_levle (did you mean log_level?)"),
        (
            "[policy]\nzzz = []",
            "unknown config entry policy.zzz (known: connect_allow, connect_deny, bind_allow, bind_deny)",
        ),
    ],
)
def test_an_unknown_key_in_any_section_is_named_with_the_closest_one(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load(["--config", config(tmp_path, text)], TOKEN)


@pytest.mark.parametrize(
    "text, message",
    [
        ("host = 5", "host = 5: expected a string, not a whole number"),
        ("policy = 5", "policy = 5: expected a table, not a whole number"),
        ("limits = 'many'", 'limits = "many": expected a table, not a string'),
        ("principals = []", "principals: expected a table of tables, not a list"),
        ("[principals]\nalice = 'x'", 'principals.alice = "x": expected a table, not a string'),
        ("allowed_hosts = 'labpc'", 'allowed_hosts = "labpc": expected a list of strings, not a string'),
        ("allowed_origins = ['https://a.example', 5]", "allowed_origins[1] = 5: expected a string, not a whole number"),
        ("port = '18704'", 'port = "18704": expected a whole number, not a string'),
        ("port = true", "port = true: expected a whole number, not true/false"),
        (
            "[policy]\nconnect_allow = '10.0.0.0/8'",
            'policy.connect_allow = "10.0.0.0/8": expected a list of strings, not a string',
        ),
        ("[policy]\nbind_deny = [0]", "policy.bind_deny[0] = 0: expected a string, not a whole number"),
        (
            "[limits]\nsockets_total = 1.5",
            "limits.sockets_total = 1.5: expected a whole number, not a fractional number",
        ),
        ("[limits]\nidle_timeout = '1h'", 'limits.idle_timeout = "1h": expected a number, not a string'),
        (ALICE + "admin = 'yes'", 'principals.alice.admin = "yes": expected true or false, not a string'),
        (
            "[principals.alice]\ntoken = 12345678901234567890",
            "principals.alice.token = 12345678901234567890: expected a string, not a whole number",
        ),
        ("audit_log = 1979-05-27", "audit_log = 1979-05-27: expected a string, not a date or time"),
        ("log_level = 'loud'", 'log_level = "loud": expected one of debug, info, warning, error'),
        ("log_level = 3", "log_level = 3: expected one of debug, info, warning, error, not a whole number"),
    ],
)
def test_a_wrong_type_is_named_with_the_type_expected(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(["--config", config(tmp_path, text)], TOKEN)
    assert str(caught.value) == message


def test_a_log_level_from_the_environment_is_checked_and_any_case_is_taken(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=re.escape('ENGEE_AGENT_LOG_LEVEL = "loud": expected one of debug, info')):
        load([], {**TOKEN, "ENGEE_AGENT_LOG_LEVEL": "loud"})
    assert load([], {**TOKEN, "ENGEE_AGENT_LOG_LEVEL": "INFO"}).log_level == "info"
    assert load(["--config", config(tmp_path, "log_level = 'Debug'")], TOKEN).log_level == "debug"


@pytest.mark.parametrize(
    "text, environ, message",
    [
        (
            "[policy]\nconect_deny = ['127.0.0.1']",
            {},
            "engee-agent: unknown config entry policy.conect_deny (did you mean connect_deny?)",
        ),
        ("host = 5", {}, "engee-agent: host = 5: expected a string, not a whole number"),
        ("policy = 5", {}, "engee-agent: policy = 5: expected a table, not a whole number"),
        ("port = '18704'", {}, 'engee-agent: port = "18704": expected a whole number, not a string'),
        ("log_level = 'loud'", {}, 'engee-agent: log_level = "loud": expected one of debug, info, warning, error'),
        (
            "",
            {"ENGEE_AGENT_LOG_LEVEL": "loud"},
            'engee-agent: ENGEE_AGENT_LOG_LEVEL = "loud": expected one of debug, info, warning, error',
        ),
    ],
)
def test_the_agent_refuses_a_bad_config_in_one_line_without_a_traceback(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--config", config(tmp_path, text), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**TOKEN, **environ},
    )
    assert done.returncode != 0
    assert done.stdout == "" and done.stderr == message + "\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--agent-id", "lab"], "give --gateway URL too"),
        (["--no-listen"], "--no-listen leaves no way in"),
        (["--gateway", "gw.example", "--agent-id", "lab", "--agent-key", "k" * 16], "needs http:// or https://"),
        (["--gateway", "https://gw.example", "--agent-key", "k" * 16], "--agent-id None"),
        (["--gateway", "https://gw.example", "--agent-id", "../x", "--agent-key", "k" * 16], "--agent-id '../x'"),
        (["--gateway", "https://gw.example", "--agent-id", "lab", "--agent-key", "short"], "at least 16 characters"),
    ],
)
def test_the_gateway_link_settings_say_what_is_missing(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load(argv, TOKEN)


def test_a_link_from_the_config_file_and_the_environment(tmp_path: Path) -> None:
    path = config(
        tmp_path, "gateways = ['https://a.example', 'https://b.example']\nagent_id = 'lab-7'\nlisten = false\n"
    )
    settings = load(["--config", path], {**TOKEN, "ENGEE_AGENT_AGENT_KEY": "k" * 20})
    assert settings.gateways == ("https://a.example", "https://b.example")
    assert (settings.agent_id, settings.agent_key, settings.listen) == ("lab-7", "k" * 20, False)
