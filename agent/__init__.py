"""The agent: owns real OS sockets on this machine and serves the Sockets methods over HTTP."""

from .app import create_app

__all__ = ["create_app"]
