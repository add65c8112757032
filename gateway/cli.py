"""`engee-gateway`: the relay's server side. `engee-gateway hash SECRET` prints the form a config file may hold."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from dataclasses import replace

import uvicorn

from protocol import bracketed
from protocol.link import MAX_LINK_FRAME
from tap.uvicorn import TapProtocol

from .app import create_app
from .settings import Settings, SettingsError, digest, load


def banner(url: str, settings: Settings) -> str:
    agents = ", ".join(sorted(settings.agents)) or "none (add [agents.ID] to --config)"
    users = ", ".join(user.name for user in settings.users) or "none (add [users.NAME] to --config)"
    return "\n".join(
        [
            f"engee-gateway listening on {url}",
            f"agents: {agents}",
            f"users: {users}",
            f"an agent links with: engee-agent --gateway {url} --agent-id ID --agent-key KEY",
            f'a notebook reaches it with: Agent("{url}/agents/ID", token=USER_TOKEN)',
        ]
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hash"]:
        if len(argv) != 2:
            sys.exit("usage: engee-gateway hash SECRET")
        print(digest(argv[1]))
        return
    try:
        settings = load(argv)
    except SettingsError as exc:
        sys.exit(f"engee-gateway: {exc}")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sys.exit(f"engee-gateway: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    sock.listen(1024)
    host, port = sock.getsockname()[:2]
    url = f"{settings.scheme}://{bracketed(host)}:{port}"
    print(banner(url, settings), flush=True)
    if settings.nats and settings.advertise is None:  # where the other replicas reach this one
        name = socket.gethostname() if host in ("0.0.0.0", "::") else bracketed(host)
        settings = replace(settings, advertise=f"{settings.scheme}://{name}:{port}")
    config = uvicorn.Config(
        create_app(settings),
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        timeout_graceful_shutdown=3,
        ws=TapProtocol,
        ws_max_size=MAX_LINK_FRAME,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.link_ping,
        ws_ping_timeout=settings.link_ping,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run(sockets=[sock])
