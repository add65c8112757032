"""The blocking client: `Agent` and its `Socket`s, over a blocking transport (HTTP by default)."""

from .agent import Agent, DefaultAgent
from .http import HttpTransport
from .socket import Socket

__all__ = ["Agent", "DefaultAgent", "HttpTransport", "Socket"]
