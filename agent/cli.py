"""`engee-agent`: run the agent on this machine."""

import argparse
import logging
import os
import secrets
import socket
import sys

import uvicorn

from .app import create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="engee-agent",
        description="Own real sockets on this machine for a remote notebook.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}); keep loopback unless a notebook on another "
                             "machine must reach this one directly")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT}); 0 picks a free one")
    parser.add_argument("--token", default=os.environ.get("ENGEE_AGENT_TOKEN"),
                        help="the token every call must carry (default $ENGEE_AGENT_TOKEN; when neither is given a random "
                             "one is generated and printed)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="how much to log to stderr (default warning)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is outside 0..65535")
    return args


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind and listen before the banner, so the printed URL already answers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def banner(url: str, token: str, generated: bool) -> str:
    lines = [
        f"engee-agent listening on {url}",
        f"token: {token}" + ("  (generated; pass --token or set ENGEE_AGENT_TOKEN to choose one)" if generated else ""),
        "in the notebook:",
        f"    export ENGEE_AGENT_URL={url}",
        f"    export ENGEE_AGENT_TOKEN={token}",
        f'    or: Agent("{url}", token="{token}")',
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    generated = not args.token
    token = args.token or secrets.token_urlsafe(24)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        sys.exit(f"engee-agent: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"
    print(banner(url, token, generated), flush=True)
    # Sockets wait for readiness with add_reader/add_writer, which Windows has only on the selector loop.
    loop = "asyncio:SelectorEventLoop" if sys.platform == "win32" else "auto"
    config = uvicorn.Config(create_app(token), loop=loop, log_level=args.log_level, access_log=False,
                            timeout_keep_alive=75, server_header=False, date_header=False,
                            proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])
