"""The wire contract between the agent and its clients: models, methods, errors, payload codec.

Pure data and rules: no sockets, no HTTP, no framework. Both the agent and the client import it;
it imports neither.
"""

from . import models
from .errors import (
    AgentError,
    AgentRestartedError,
    AgentUnreachableError,
    AuthenticationError,
    ErrorBody,
    ErrorCode,
    ErrorDetail,
    LimitExceededError,
    ProtocolError,
    exception_for,
)
from .methods import AGENT_PATH, HEALTH_PATH, METHODS, Method
from .payload import MAX_PAYLOAD, from_raw, to_bytes, to_raw
from .version import (
    BOOT_HEADER, CALL_HEADER, JSON, META_HEADER, OCTET_STREAM, PREFIX, PROTOCOL_VERSION,
)

__all__ = [
    "AGENT_PATH", "BOOT_HEADER", "CALL_HEADER", "HEALTH_PATH", "JSON", "MAX_PAYLOAD", "META_HEADER", "METHODS", "OCTET_STREAM",
    "PREFIX", "PROTOCOL_VERSION", "AgentError", "AgentRestartedError", "AgentUnreachableError",
    "AuthenticationError", "ErrorBody", "ErrorCode", "ErrorDetail", "LimitExceededError", "Method", "ProtocolError",
    "exception_for", "from_raw", "models", "to_bytes", "to_raw",
]
