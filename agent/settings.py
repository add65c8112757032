"""The agent's settings: command-line flags over a TOML config file over environment variables.

    engee-agent --config agent.toml --allow 10.1.2.0/24 --allow-host labpc.local

A config file may name several principals, each with its own token:

    host = "0.0.0.0"
    allowed_hosts = ["labpc.local"]
    [principals.alice]
    token = "..."
    [principals.admin]
    token = "..."
    admin = true
    [policy]
    connect_allow = ["10.1.2.0/24", "plc.lab:502"]
    [limits]
    sockets_per_principal = 64
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import secrets
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_type_hints

from protocol import MAX_PAYLOAD, TOKEN_VARIABLE
from protocol.channel import READ_AHEAD
from protocol.link import AGENT_ID_PATTERN
from protocol.spin import MAX_SPIN

from .policy import DEFAULT_CONNECT_DENY, Policy, PolicyError, RuleSet

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Principal:
    """Who is calling: each has its own token and sees only its own sockets; an admin may list all."""

    name: str
    token: str
    admin: bool = False
    policy: Policy | None = None
    """Rules of its own, on top of the agent's (both must allow): a gateway user's, from [gateway_users]."""


@dataclass(frozen=True)
class Limits:
    """What one agent gives out; each refusal names the limit it hit."""

    sockets_per_principal: int = 256
    sockets_total: int = 1024
    max_bufsize: int = MAX_PAYLOAD
    max_body: int = MAX_PAYLOAD * 4 // 3 + 64 * 1024
    """A maximal payload in base64 plus room for the other fields."""
    waits_total: int = 256
    """Blocking calls (accept, connect, receive) waiting at once, everyone's: the ceiling over waits_per_principal."""
    waits_per_principal: int = 64
    """Blocking calls one principal may have waiting at once, so no principal can hold every wait."""
    channel_grace: float = 180.0
    """Seconds a channel's client may be gone before the sockets it opened are closed; 0 closes them at once."""
    channel_calls: int = 1024
    """Calls one channel may have in flight at once; past that it reads no more frames until one is done."""
    link_grace: float = 600.0
    """Seconds the sockets of a gateway user's channel are kept when the link to the gateway drops, so a Wi-Fi
    blip does not cost a user an open connection to a device."""
    link_ping: float = 10.0
    """Seconds between pings on the gateway link; one unanswered for as long marks the link dead."""
    read_ahead: int = READ_AHEAD
    """Bytes a channel's stream may read from a TCP socket ahead of its client's receives, at most."""
    channel_spin: float = 100e-6
    """Seconds the agent keeps its event loop awake after writing to a channel, for the client's next frame, while
    the client's frames come that fast (tap/spin.py); 0 never."""
    idle_timeout: float = 3600.0
    """Seconds a socket may go without a call before the agent closes it; 0 never reaps."""


@dataclass(frozen=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    fd: int | None = None
    principals: tuple[Principal, ...] = ()
    token_generated: bool = False
    allowed_hosts: tuple[str, ...] = ()
    """Host names (besides localhost and IP literals) the agent answers to: the DNS-rebinding guard."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed to call (CORS); none by default."""
    policy: Policy = field(default_factory=Policy)
    limits: Limits = field(default_factory=Limits)
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    audit_log: str | None = None
    log_level: str = "warning"
    gateways: tuple[str, ...] = ()
    """Gateway URLs to link out to (agent/link.py), tried in turn; none: no link."""
    gateway_users: dict[str, Policy] | None = None
    """The gateway users this agent serves, each with its own rules; None: every user the gateway lets in."""
    agent_id: str | None = None
    agent_key: str | None = None
    gateway_ca: str | None = None
    """A CA file (PEM) the gateway's certificate is checked against instead of the system's: a private CA, or a
    self-signed gateway."""
    listen: bool = True
    """Serve the local port; False with a gateway, for an agent reached only through it."""

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile else "http"


class SettingsError(ValueError):
    """A flag or config entry that does not make sense, with what to change."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="engee-agent",
        description="Own real sockets on this machine for a remote notebook.",
        epilog="Every option with one value can also come from the environment as ENGEE_AGENT_<OPTION> "
        "(ENGEE_AGENT_HOST, ENGEE_AGENT_PORT, ENGEE_AGENT_LOG_LEVEL, ...). A flag wins over the environment, "
        "the environment over --config, --config over the defaults.",
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML file with any of these settings, principals, policy and limits"
    )
    p.add_argument(
        "--host",
        help=f"address to listen on (default {DEFAULT_HOST}); keep loopback unless a notebook "
        "on another machine must reach this one directly",
    )
    p.add_argument("--port", type=int, help=f"port to listen on (default {DEFAULT_PORT}); 0 picks a free one")
    p.add_argument(
        "--fd",
        type=int,
        metavar="FD",
        help="serve on an inherited, listening socket with this file descriptor instead of --host/--port "
        "(socket activation, sandboxes)",
    )
    p.add_argument(
        "--token",
        help=f"the token every call must carry (default ${TOKEN_VARIABLE}; when neither this "
        "nor principals in --config are given, a random one is generated and printed)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the agent is reached by (besides localhost and IP addresses); repeatable",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed to call the agent (CORS), e.g. https://engee.example; repeatable",
    )
    for action in ("connect", "bind"):
        p.add_argument(
            f"--allow-{action}",
            action="append",
            default=[],
            metavar="RULE",
            help=f"{action} only to addresses matching a rule: CIDR or host name, optional :PORT or "
            ":LOW-HIGH, e.g. 10.1.2.0/24:502; repeatable (default: anywhere)",
        )
        p.add_argument(
            f"--deny-{action}",
            action="append",
            default=[],
            metavar="RULE",
            help=f"never {action} to addresses matching a rule; repeatable",
        )
    p.add_argument("--ssl-certfile", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--audit-log", metavar="FILE", help="append audit lines here (default: standard error)")
    p.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="URL",
        help="link out to this gateway (https://...), so notebooks reach this agent through it by id; "
        "repeatable, one URL per gateway replica, tried in turn",
    )
    p.add_argument("--agent-id", metavar="ID", help="this agent's id at the gateway")
    p.add_argument("--agent-key", metavar="KEY", help="this agent's key at the gateway")
    p.add_argument(
        "--gateway-ca",
        metavar="FILE",
        help="check the gateway's certificate against this CA file (PEM) instead of the system's trusted CAs",
    )
    p.add_argument("--no-listen", action="store_true", default=None, help="serve no local port: only the gateway link")
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, type=str.lower, help="how much to log to standard error (default warning)"
    )
    return p


def load(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the command line, the config file it names, and the environment."""
    environ = os.environ if environ is None else environ
    args = parser().parse_args(argv)
    for name in ENVIRONMENT_OPTIONS:  # flag > environment > config file > default
        value = environ.get(f"ENGEE_AGENT_{name.upper()}")
        if getattr(args, name) is None and value:
            setattr(args, name, _from_environment(name, value))
    config = _read_config(args.config) if args.config else {}
    CONFIG.check(config, ())
    try:
        return _build(args, config, environ)
    except PolicyError as exc:
        raise SettingsError(str(exc)) from None


ENVIRONMENT_OPTIONS = (
    "config",
    "host",
    "port",
    "fd",
    "ssl_certfile",
    "ssl_keyfile",
    "audit_log",
    "log_level",
    "agent_id",
    "agent_key",
    "gateway_ca",
)
"""Options also read from ENGEE_AGENT_<NAME> (the token from ENGEE_AGENT_TOKEN)."""


def _from_environment(name: str, value: str) -> str | int:
    if name == "log_level":
        LOG_LEVEL.check(value, (f"ENGEE_AGENT_{name.upper()}",))
    if name not in ("port", "fd"):
        return value
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"ENGEE_AGENT_{name.upper()}={value!r} is not a whole number") from None


def _read_config(path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"cannot read --config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"--config {path} is not valid TOML: {exc}") from None


def _build(args: argparse.Namespace, config: dict[str, Any], environ: Mapping[str, str]) -> Settings:
    port = _pick(args.port, config.get("port"), DEFAULT_PORT)
    if not 0 <= port <= 65535:
        raise SettingsError(f"port {port!r} is outside 0..65535")
    principals, generated = _principals(args.token, config.get("principals", {}), environ)
    policy_config = config.get("policy", {})
    settings = Settings(
        host=_pick(args.host, config.get("host"), DEFAULT_HOST),
        port=port,
        fd=args.fd,
        principals=principals,
        token_generated=generated,
        allowed_hosts=tuple(config.get("allowed_hosts", ())) + tuple(args.allow_host),
        allowed_origins=tuple(config.get("allowed_origins", ())) + tuple(args.allow_origin),
        policy=Policy(
            connect=RuleSet.parse(
                [*policy_config.get("connect_allow", ()), *args.allow_connect],
                [*DEFAULT_CONNECT_DENY, *policy_config.get("connect_deny", ()), *args.deny_connect],
            ),
            bind=RuleSet.parse(
                [*policy_config.get("bind_allow", ()), *args.allow_bind],
                [*policy_config.get("bind_deny", ()), *args.deny_bind],
            ),
        ),
        gateway_users=_gateway_users(config.get("gateway_users")),
        limits=_limits(config.get("limits", {})),
        ssl_certfile=_pick(args.ssl_certfile, config.get("ssl_certfile"), None),
        ssl_keyfile=_pick(args.ssl_keyfile, config.get("ssl_keyfile"), None),
        audit_log=_pick(args.audit_log, config.get("audit_log"), None),
        log_level=_pick(args.log_level, config.get("log_level"), "warning").lower(),
    )
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise SettingsError("--ssl-certfile and --ssl-keyfile go together")
    return _linked(settings, args, config, environ)


def _linked(
    settings: Settings, args: argparse.Namespace, config: dict[str, Any], environ: Mapping[str, str]
) -> Settings:
    """The settings with the gateway link's: URLs, id and key, all three or none."""
    gateways = (
        tuple(args.gateway)
        or tuple(config.get("gateways", ()))
        or tuple(url for url in environ.get("ENGEE_AGENT_GATEWAY", "").split() if url)
    )
    agent_id = _pick(args.agent_id, config.get("agent_id"), None)
    key = _pick(args.agent_key, config.get("agent_key"), None)
    ca = _pick(args.gateway_ca, config.get("gateway_ca"), None)
    listen = not _pick(args.no_listen, not config.get("listen", True), False)
    if not gateways:
        if agent_id or key or ca:
            raise SettingsError(
                "--agent-id, --agent-key and --gateway-ca are for a link to a gateway: give --gateway URL too"
            )
        if not listen:
            raise SettingsError("--no-listen leaves no way in: give --gateway URL, --agent-id and --agent-key")
        return settings
    for url in gateways:
        if not re.match(r"^https?://[^/\s]+", url):
            raise SettingsError(f"--gateway {url!r} needs http:// or https:// and a host")
    if not agent_id or not re.match(AGENT_ID_PATTERN, agent_id):
        raise SettingsError(
            f"--agent-id {agent_id!r}: a gateway needs this agent's id, 1 to 64 letters, digits, '.', '-', '_'"
        )
    if not key or len(key) < 16:
        raise SettingsError("--agent-key: a gateway needs this agent's key, at least 16 characters")
    if ca is not None:
        try:
            ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"--gateway-ca {ca!r} is no CA file this agent can use: {exc}") from None
    return replace(settings, gateways=gateways, agent_id=agent_id, agent_key=key, gateway_ca=ca, listen=listen)


def _pick(flag: Any, configured: Any, default: Any) -> Any:
    return flag if flag is not None else configured if configured is not None else default


def _principals(
    token: str | None, configured: dict[str, Any], environ: Mapping[str, str]
) -> tuple[tuple[Principal, ...], bool]:
    principals = []
    for name, entry in configured.items():
        if len(entry.get("token", "")) < 16:
            raise SettingsError(f"principal {name!r} needs a token of at least 16 characters")
        principals.append(Principal(name, entry["token"], entry.get("admin", False)))
    token = token or environ.get(TOKEN_VARIABLE)
    generated = not token and not principals
    if generated:
        token = secrets.token_urlsafe(24)
    if token:
        principals.insert(0, Principal("owner", token, admin=True))
    tokens = [principal.token for principal in principals]
    if len(set(tokens)) != len(tokens):
        raise SettingsError("two principals share a token; each needs its own")
    return tuple(principals), generated


def _gateway_users(configured: dict[str, Any] | None) -> dict[str, Policy] | None:
    """[gateway_users.NAME] tables: the users served, each with rules of its own (the agent's apply too)."""
    if configured is None:
        return None
    return {
        name: Policy(
            connect=RuleSet.parse(rules.get("connect_allow", ()), rules.get("connect_deny", ())),
            bind=RuleSet.parse(rules.get("bind_allow", ()), rules.get("bind_deny", ())),
        )
        for name, rules in configured.items()
    }


def _limits(configured: dict[str, Any]) -> Limits:
    limits = replace(Limits(), **configured)
    for name, value in configured.items():
        if value < 0:
            raise SettingsError(f"limit {name} = {value!r} must be a number >= 0")
    if not 1 <= limits.max_bufsize <= MAX_PAYLOAD:
        raise SettingsError(f"limit max_bufsize must be within 1..{MAX_PAYLOAD}")
    if not 0 <= limits.channel_spin <= MAX_SPIN:  # NaN too
        raise SettingsError(f"limit channel_spin = {limits.channel_spin!r} is not within 0..{MAX_SPIN} seconds")
    return limits


KeyPath = tuple[str | int, ...]
"""Where a value sits in the config file: its keys and list indices from the top."""


@dataclass(frozen=True)
class Value:
    """A scalar entry: one of `types` (a bool is not a number), optionally one of `choices`."""

    expected: str
    types: tuple[type, ...]
    choices: tuple[str, ...] = ()

    def check(self, value: Any, path: KeyPath) -> None:
        """Raise SettingsError naming the entry and what it should be, unless `value` fits."""
        fits = isinstance(value, self.types) and (bool in self.types or not isinstance(value, bool))
        _expect(self.expected, value, path, fits)
        if self.choices and value.lower() not in self.choices:
            raise SettingsError(f"{_entry(path, value)}: expected {self.expected}")


@dataclass(frozen=True)
class ListOf:
    """A list whose every item is checked by `item`."""

    expected: str
    item: Value

    def check(self, value: Any, path: KeyPath) -> None:
        """Raise SettingsError naming the entry or item that does not fit."""
        _expect(self.expected, value, path, isinstance(value, list))
        for index, item in enumerate(value):
            self.item.check(item, (*path, index))


@dataclass(frozen=True)
class Table:
    """A table with known keys, each checked by its own schema; an unknown key is named with the closest known one."""

    entries: dict[str, Value | ListOf | Table | TableOf]
    expected: str = "a table"

    def check(self, value: Any, path: KeyPath) -> None:
        """Raise SettingsError for the first unknown key or misfit entry."""
        _expect(self.expected, value, path, isinstance(value, dict))
        for key in sorted(set(value) - set(self.entries)):
            close = difflib.get_close_matches(key, self.entries, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(self.entries)}"
            raise SettingsError(f"unknown config entry {_where((*path, key))} ({hint})")
        for key, entry in value.items():
            self.entries[key].check(entry, (*path, key))


@dataclass(frozen=True)
class TableOf:
    """A table of tables under any names, each checked by `table`: [principals.NAME]."""

    table: Table
    expected: str = "a table of tables"

    def check(self, value: Any, path: KeyPath) -> None:
        """Raise SettingsError for the first named table that does not fit."""
        _expect(self.expected, value, path, isinstance(value, dict))
        for name, entry in value.items():
            self.table.check(entry, (*path, name))


def _expect(expected: str, value: Any, path: KeyPath, fits: bool) -> None:
    if not fits:
        raise SettingsError(f"{_entry(path, value)}: expected {expected}, not {_kind(value)}")


def _kind(value: Any) -> str:
    kinds = (
        (bool, "true/false"),
        (int, "a whole number"),
        (float, "a fractional number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a table"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), "a date or time")


def _where(path: KeyPath) -> str:
    """A TOML dotted key, with list indices: `policy.connect_allow[2]`, `principals."a b".token`."""
    shown = ""
    for part in path:
        if isinstance(part, int):
            shown += f"[{part}]"
        else:
            shown += ("." if shown else "") + (part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part))
    return shown


def _entry(path: KeyPath, value: Any) -> str:
    """`where = value` for a scalar, in TOML's spelling on one line; just `where` for a list or table."""
    if isinstance(value, (list, dict)):
        return _where(path)
    shown = json.dumps(value) if isinstance(value, (bool, str)) else str(value)
    return f"{_where(path)} = {shown}"


STRING = Value("a string", (str,))
STRINGS = ListOf("a list of strings", STRING)
LOG_LEVEL = Value(f"one of {', '.join(LOG_LEVELS)}", (str,), LOG_LEVELS)
_NUMBERS = {int: Value("a whole number", (int,)), float: Value("a number", (int, float))}
CONFIG = Table(
    {
        "host": STRING,
        "port": _NUMBERS[int],
        "principals": TableOf(Table({"token": STRING, "admin": Value("true or false", (bool,))})),
        "gateway_users": TableOf(
            Table({name: STRINGS for name in ("connect_allow", "connect_deny", "bind_allow", "bind_deny")})
        ),
        "allowed_hosts": STRINGS,
        "allowed_origins": STRINGS,
        "policy": Table({name: STRINGS for name in ("connect_allow", "connect_deny", "bind_allow", "bind_deny")}),
        "limits": Table({name: _NUMBERS[kind] for name, kind in get_type_hints(Limits).items()}),
        "ssl_certfile": STRING,
        "ssl_keyfile": STRING,
        "audit_log": STRING,
        "log_level": LOG_LEVEL,
        "gateways": STRINGS,
        "agent_id": STRING,
        "agent_key": STRING,
        "gateway_ca": STRING,
        "listen": Value("true or false", (bool,)),
    }
)
"""What a config file may hold, and of which type: every section is checked by it before it is used."""
