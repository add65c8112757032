"""`engee-agent`: run the agent on this machine."""

import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from protocol import TOKEN_VARIABLE, URL_VARIABLE, bracketed
from protocol.channel import MAX_FRAME, PING_INTERVAL
from tap.uvicorn import TapProtocol

from .app import create_app
from .settings import Settings, SettingsError, load

SHUTDOWN_GRACE = 3
"""Seconds calls in progress get after SIGTERM/SIGINT before they are cut and every socket is closed."""
DRAIN = 1.0
"""Seconds a stopping agent gives its channels to send the outcomes of their last calls."""


def raise_open_files_limit() -> None:
    """Every socket is a file: lift the soft limit to the hard one (often 1024 -> 1048576) where there is one."""
    try:
        import resource
    except ImportError:  # Windows has no such limit to lift
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind and listen before the banner, so the printed URL already answers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def listen(settings: Settings) -> socket.socket:
    """The agent's port: the one it is handed (--fd), or one it binds."""
    try:
        if settings.fd is not None:
            return socket.socket(fileno=settings.fd)
        return listening_socket(settings.host, settings.port)
    except OSError as exc:
        where = f"file descriptor {settings.fd}" if settings.fd is not None else f"{settings.host}:{settings.port}"
        sys.exit(f"engee-agent: cannot listen on {where}: {exc.strerror or exc}")


def banner(url: str | None, settings: Settings) -> str:
    owner = next((p for p in settings.principals if p.name == "owner"), None)
    lines = [f"engee-agent listening on {url}" if url else "engee-agent serving no local port (--no-listen)"]
    for gateway in settings.gateways:
        lines.append(
            f"linking to the gateway {gateway} as agent {settings.agent_id}; notebooks reach it as "
            f'Agent("{gateway.rstrip("/")}/agents/{settings.agent_id}", token=<their gateway token>)'
        )
    if url is None:
        return "\n".join(lines)
    if owner is None:
        names = ", ".join(p.name for p in settings.principals)
        return "\n".join([*lines, f"principals: {names} (tokens in the config file)"])
    token = owner.token
    hint = f"  (generated; pass --token or set {TOKEN_VARIABLE} to choose one)" if settings.token_generated else ""
    return "\n".join(
        [
            *lines,
            f"token: {token}{hint}",
            f"status page: {url}/?token={token}",
            "in the notebook:",
            f"    export {URL_VARIABLE}={url}",
            f"    export {TOKEN_VARIABLE}={token}",
            f'    or: Agent("{url}", token="{token}")',
        ]
    )


def main(argv: list[str] | None = None) -> None:
    try:
        settings = load(argv)
    except SettingsError as exc:
        sys.exit(f"engee-agent: {exc}")
    raise_open_files_limit()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sockets = [listen(settings)] if settings.listen else []
    url = (
        f"{settings.scheme}://{bracketed(sockets[0].getsockname()[0])}:{sockets[0].getsockname()[1]}"
        if sockets
        else None
    )
    print(banner(url, settings), flush=True)
    # Sockets wait for readiness with add_reader/add_writer, which Windows has only on the selector loop.
    loop = "asyncio:SelectorEventLoop" if sys.platform == "win32" else "auto"
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        loop=loop,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=75,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
        # The channel: frames up to a maximal payload, no compression (socket bytes rarely shrink, and
        # it costs every frame), and pings that find a dead link.
        ws=TapProtocol,
        ws_max_size=MAX_FRAME,
        ws_per_message_deflate=False,
        ws_ping_interval=PING_INTERVAL,
        ws_ping_timeout=PING_INTERVAL,
    )
    logging.getLogger("uvicorn.error").addFilter(_refused_upgrades_are_not_errors)
    for sig in (signal.SIGINT, signal.SIGTERM):
        # uvicorn re-raises the signal that stopped it once it is done; a no-op handler turns
        # that into a plain exit with status 0 after the graceful shutdown.
        signal.signal(sig, lambda *_: None)
    AgentServer(config, app).run(sockets=sockets)


def _refused_upgrades_are_not_errors(record: logging.LogRecord) -> bool:
    """uvicorn calls a WebSocket upgrade answered with an HTTP refusal (the gate's 401/403) an unfinished
    handshake; the gate's audit line says what happened."""
    return record.getMessage() != "ASGI callable returned without completing handshake."


class AgentServer(uvicorn.Server):
    """uvicorn, plus: at SIGTERM/SIGINT every socket closes at once, so waiting calls end with a clear error."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Before uvicorn closes the channels: let each send what closing every socket made of its calls."""
        sessions = getattr(self.app.state, "sessions", None)
        if sessions is not None:
            await sessions.drain(DRAIN)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        close_all = getattr(self.app.state, "close_all", None)  # set once the app has started
        if close_all is not None:
            close_all()
