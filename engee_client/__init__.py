"""The Sockets support package for a notebook: real sockets on a remote agent, the seed's API.

    from engee_client import Sockets         # the agent at $ENGEE_AGENT_URL with $ENGEE_AGENT_TOKEN
    s = Sockets.Socket("AF_INET", "SOCK_DGRAM")
    s.bind("127.0.0.1", 8888)                # or Sockets.bind(s, "127.0.0.1", 8888)

`AsyncAgent` offers the same API as awaitables, for code running in an event loop.
"""

from protocol import (
    METHODS,
    AgentError,
    AgentOfflineError,
    AgentRestartedError,
    AgentUnreachableError,
    AuthenticationError,
    IncompleteReadError,
    LimitExceededError,
    ProtocolError,
)

from .aio import AsyncAgent, AsyncHttpTransport, AsyncSocket
from .progress import TransferInterrupted
from .result import ResultUIntList
from .sync import Agent, DefaultAgent, HttpTransport, Socket
from .transport import AsyncTransport, Call, Reply, Transport

Sockets = DefaultAgent()
SOCKET = Sockets
"""The seed's example spells it SOCKET."""

__all__ = [
    "METHODS",
    "SOCKET",
    "Agent",
    "AgentError",
    "AgentOfflineError",
    "AgentRestartedError",
    "AgentUnreachableError",
    "AsyncAgent",
    "AsyncHttpTransport",
    "AsyncSocket",
    "AsyncTransport",
    "AuthenticationError",
    "Call",
    "HttpTransport",
    "IncompleteReadError",
    "LimitExceededError",
    "ProtocolError",
    "Reply",
    "ResultUIntList",
    "Socket",
    "Sockets",
    "TransferInterrupted",
    "Transport",
]
