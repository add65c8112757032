"""The Sockets support package for a notebook: real sockets on a remote agent, the seed's API.

    from engee_client import Sockets         # the agent at $ENGEE_AGENT_URL with $ENGEE_AGENT_TOKEN
    s = Sockets.Socket("AF_INET", "SOCK_DGRAM")
    s.bind("127.0.0.1", 8888)                # or Sockets.bind(s, "127.0.0.1", 8888)

`AsyncAgent` offers the same API as awaitables, for code running in an event loop.
"""

from protocol import (
    AgentError, AgentRestartedError, AgentUnreachableError, AuthenticationError, LimitExceededError, ProtocolError,
)

from .agent import Agent, DefaultAgent
from .aio import AsyncAgent, AsyncSocket
from .device import Socket
from .result import ResultUIntList

Sockets = DefaultAgent()
SOCKET = Sockets
"""The seed's example spells it SOCKET."""

__all__ = [
    "SOCKET", "Agent", "AgentError", "AgentRestartedError", "AgentUnreachableError", "AsyncAgent", "AsyncSocket",
    "AuthenticationError", "LimitExceededError", "ProtocolError", "ResultUIntList", "Socket", "Sockets",
]
