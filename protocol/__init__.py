"""The wire contract between the agent and its clients: models, methods, call ids, errors, payload codec.

Pure data and rules: no sockets, no HTTP, no framework. Both the agent and the client import it;
it imports neither.
"""

from . import models
from .addresses import bracketed, host_port
from .calls import CallId
from .errors import (
    AgentError,
    AgentOfflineError,
    AgentRestartedError,
    AgentUnreachableError,
    AuthenticationError,
    ErrorBody,
    ErrorCode,
    ErrorDetail,
    IncompleteReadError,
    LimitExceededError,
    ProtocolError,
    exception_for,
)
from .methods import AGENT_PATH, HEALTH_PATH, METHODS, AnyMethod, Method, MethodTable
from .payload import MAX_PAYLOAD, from_raw, to_bytes, to_raw
from .version import (
    BOOT_HEADER,
    CA_VARIABLE,
    CALL_HEADER,
    JSON,
    META_HEADER,
    OCTET_STREAM,
    PREFIX,
    PROTOCOL_VERSION,
    RETRY_HEADER,
    TOKEN_VARIABLE,
    TRANSPORT_VARIABLE,
    URL_VARIABLE,
)

__all__ = [
    "AGENT_PATH",
    "BOOT_HEADER",
    "CALL_HEADER",
    "CA_VARIABLE",
    "HEALTH_PATH",
    "JSON",
    "MAX_PAYLOAD",
    "META_HEADER",
    "METHODS",
    "OCTET_STREAM",
    "PREFIX",
    "PROTOCOL_VERSION",
    "RETRY_HEADER",
    "TOKEN_VARIABLE",
    "TRANSPORT_VARIABLE",
    "URL_VARIABLE",
    "AgentError",
    "AgentOfflineError",
    "AgentRestartedError",
    "AgentUnreachableError",
    "AnyMethod",
    "AuthenticationError",
    "CallId",
    "ErrorBody",
    "ErrorCode",
    "ErrorDetail",
    "IncompleteReadError",
    "LimitExceededError",
    "Method",
    "MethodTable",
    "ProtocolError",
    "bracketed",
    "exception_for",
    "from_raw",
    "host_port",
    "models",
    "to_bytes",
    "to_raw",
]
