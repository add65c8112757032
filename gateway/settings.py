"""The gateway's settings: the command line and gateway.toml, which names the agents and the users.

    [agents.lab-7]
    key = "..."                 # or key_sha256 = "<hex>", from `engee-gateway hash`
    [users.alice]
    token = "..."               # or token_sha256 = "<hex>"
    agents = ["lab-7"]          # the agents alice may use

Secrets are compared by their SHA-256 in constant time, so a file may hold either form.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.link import AGENT_ID_PATTERN, USER_PATTERN
from protocol.spin import MAX_SPIN

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8800


class SettingsError(ValueError):
    """A setting the gateway cannot start with; the message says which and why."""


def digest(secret: str) -> str:
    """What a config file may hold instead of a secret: its SHA-256, in hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Secret:
    sha256: str

    def matches(self, given: str) -> bool:
        return hmac.compare_digest(digest(given), self.sha256)


@dataclass(frozen=True)
class User:
    name: str
    token: Secret
    agents: frozenset[str]


@dataclass(frozen=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    agents: dict[str, Secret] = field(default_factory=dict)
    users: tuple[User, ...] = ()
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    log_level: str = "warning"
    link_ping: float = 10.0
    """Seconds between pings on every link and channel; one unanswered for as long marks the link dead."""
    spin: float = 100e-6
    """Seconds the gateway keeps its event loop awake after it relayed a message, for what comes next, while that
    comes so fast (tap/spin.py); 0 never."""
    nats: str | None = None
    """The NATS server replicas share (nats://HOST:PORT); none: a single gateway."""
    advertise: str | None = None
    """The URL the other replicas reach this one at, for the channels they relay to a link held here; none: the
    URL it listens on (with the host's name for a wildcard address)."""

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile else "http"

    def user(self, token: str) -> User | None:
        """The user whose token this is; every user's token is compared, so the time tells nothing."""
        found = None
        for user in self.users:
            if user.token.matches(token):
                found = user
        return found

    def grants(self, user: str, agent_id: str) -> bool:
        """Whether the user named `user` may use the agent `agent_id`."""
        return agent_id in self.agents and any(known.name == user and agent_id in known.agents for known in self.users)

    def agent_key_matches(self, agent_id: str, key: str) -> bool:
        secret = self.agents.get(agent_id)
        matched = (secret or Secret(digest("-"))).matches(key)  # the same work for an unknown id
        return secret is not None and matched


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="engee-gateway", description="The relay's server side: agents link out to it, notebooks reach them by id."
    )
    p.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, help=f"port to listen on (default {DEFAULT_PORT}); 0 picks a free one")
    p.add_argument("--config", metavar="FILE", help="gateway.toml: the agents and the users")
    p.add_argument("--ssl-certfile", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), type=str.lower)
    p.add_argument("--nats", metavar="URL", help="nats://HOST:PORT: replicas route each other's calls through it")
    p.add_argument(
        "--advertise",
        metavar="URL",
        help="with --nats: the URL the other replicas reach this one at (default: the URL it listens on)",
    )
    p.add_argument(
        "--spin",
        type=float,
        metavar="SECONDS",
        help=f"seconds to stay awake for the next message after relaying one, before sleeping (default 0.0001, at "
        f"most {MAX_SPIN}); 0: never",
    )
    p.add_argument(
        "--link-ping",
        type=float,
        metavar="SECONDS",
        help="seconds between pings on a link (default 10); "
        "a link whose ping goes unanswered as long is dead, and its agent offline",
    )
    return p


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{name} {value!r} is not a number of seconds")
    return float(value)


def load(argv: list[str] | None = None) -> Settings:
    args = parser().parse_args(argv)
    config = _read(args.config) if args.config else {}
    unknown = set(config) - {
        "host",
        "port",
        "agents",
        "users",
        "ssl_certfile",
        "ssl_keyfile",
        "log_level",
        "link_ping",
        "spin",
        "nats",
        "advertise",
    }
    if unknown:
        raise SettingsError(f"unknown config entries: {', '.join(sorted(unknown))}")
    port = args.port if args.port is not None else config.get("port", DEFAULT_PORT)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise SettingsError(f"port {port!r} is not a whole number in 0..65535")
    settings = Settings(
        host=args.host or config.get("host", DEFAULT_HOST),
        port=port,
        agents={name: _secret(f"agents.{name}", "key", entry) for name, entry in _table(config, "agents").items()},
        users=tuple(_user(name, entry) for name, entry in _table(config, "users").items()),
        ssl_certfile=args.ssl_certfile or config.get("ssl_certfile"),
        ssl_keyfile=args.ssl_keyfile or config.get("ssl_keyfile"),
        log_level=args.log_level or config.get("log_level", "warning"),
        link_ping=float(args.link_ping or config.get("link_ping", 10.0)),
        spin=_seconds("spin", args.spin if args.spin is not None else config.get("spin", Settings.spin)),
        nats=args.nats or config.get("nats"),
        advertise=args.advertise or config.get("advertise"),
    )
    if not 0 <= settings.spin <= MAX_SPIN:
        raise SettingsError(f"spin {settings.spin:g} is outside 0..{MAX_SPIN} seconds")
    if not 0.1 <= settings.link_ping <= 3600:
        raise SettingsError(f"link_ping {settings.link_ping:g} is outside 0.1..3600 seconds")
    for name in settings.agents:
        if not re.match(AGENT_ID_PATTERN, name):
            raise SettingsError(f"agent id {name!r}: 1 to 64 letters, digits, '.', '-', '_'")
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise SettingsError("--ssl-certfile and --ssl-keyfile go together")
    if settings.advertise is not None and not re.match(r"^https?://[^/\s]+/?$", settings.advertise):
        raise SettingsError(f"--advertise {settings.advertise!r} needs http:// or https:// and a host, and no path")
    return settings


def _read(path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"cannot read --config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"--config {path} is not valid TOML: {exc}") from None


def _table(config: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    table = config.get(name, {})
    if not isinstance(table, dict) or not all(isinstance(entry, dict) for entry in table.values()):
        raise SettingsError(f"[{name}] holds one table per entry, as [{name}.NAME]")
    return table


def _secret(where: str, name: str, entry: dict[str, Any]) -> Secret:
    plain, hashed = entry.get(name), entry.get(f"{name}_sha256")
    if (plain is None) == (hashed is None):
        raise SettingsError(f"[{where}] needs {name} or {name}_sha256, one of them")
    if plain is not None:
        if not isinstance(plain, str) or len(plain) < 16:
            raise SettingsError(f"[{where}] {name} must be a string of at least 16 characters")
        return Secret(digest(plain))
    if not isinstance(hashed, str) or not re.fullmatch(r"[0-9a-f]{64}", hashed):
        raise SettingsError(f"[{where}] {name}_sha256 must be 64 hex digits, as `engee-gateway hash` prints")
    return Secret(hashed)


def _user(name: str, entry: dict[str, Any]) -> User:
    if not re.match(USER_PATTERN, name):
        raise SettingsError(f"user name {name!r}: 1 to 64 letters, digits, '.', '-', '_'")
    agents = entry.get("agents", [])
    if not isinstance(agents, list) or not all(isinstance(agent, str) for agent in agents):
        raise SettingsError(f"[users.{name}] agents must be a list of agent ids")
    unknown = set(entry) - {"token", "token_sha256", "agents"}
    if unknown:
        raise SettingsError(f"[users.{name}] has unknown entries: {', '.join(sorted(unknown))}")
    return User(name, _secret(f"users.{name}", "token", entry), frozenset(agents))
