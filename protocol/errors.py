"""The one error mapping: error codes, their HTTP status, and the exception each becomes.

The agent turns what went wrong into an `ErrorBody`; the client turns that body back into the
exception a local socket would have raised. OS errors travel by errno name (resolver errors by
their EAI_* name), because the numbers differ between the agent's OS and the client's.
"""

import errno as errno_module
import socket
from enum import Enum

from pydantic import BaseModel, ConfigDict, ValidationError


class AgentError(Exception):
    """Base of problems with the agent itself rather than with a socket."""


class AgentUnreachableError(AgentError, ConnectionError):
    """The agent could not be reached, or the link to it failed."""


class AuthenticationError(AgentError):
    """The agent refused the token."""


class AgentOfflineError(AgentError):
    """The agent is not linked to the gateway now (its PC is off, asleep or has lost its network)."""


class AgentRestartedError(AgentError):
    """The agent restarted since the socket was created; its sockets are gone."""


class LimitExceededError(AgentError):
    """The agent refused a call because one of its limits was reached; the message names the limit."""


class ProtocolError(AgentError):
    """The agent answered something this client does not understand."""


class IncompleteReadError(EOFError):
    """The peer closed the connection before a line or an exact read was complete; what came stays readable."""


RESTARTED = "the agent restarted since this socket was created; its sockets are gone"
"""The message of agent_restarted, whichever side finds it out."""


def over_max_bufsize(bufsize: int, limit: int) -> str:
    """The message of a receive asking for more than the agent gives at once, whichever side finds it out."""
    return f"bufsize {bufsize} is over the agent's limit max_bufsize = {limit}"


class ErrorCode(str, Enum):
    """Each code with its HTTP status."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    PERMISSION_DENIED = "permission_denied"
    BAD_DESCRIPTOR = "bad_descriptor"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    OS_ERROR = "os_error"
    AGENT_RESTARTED = "agent_restarted"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    LIMIT_EXCEEDED = "limit_exceeded"
    CALL_ID_REUSED = "call_id_reused"
    AGENT_OFFLINE = "agent_offline"
    END_OF_STREAM = "end_of_stream"
    INTERNAL = "internal"

    @property
    def status(self) -> int:
        return _STATUS[self]


_STATUS = {
    ErrorCode.BAD_REQUEST: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.BAD_DESCRIPTOR: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.OS_ERROR: 409,
    ErrorCode.AGENT_RESTARTED: 410,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.LIMIT_EXCEEDED: 429,
    ErrorCode.CALL_ID_REUSED: 409,
    ErrorCode.AGENT_OFFLINE: 503,
    ErrorCode.END_OF_STREAM: 409,
    ErrorCode.INTERNAL: 500,
}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    code: ErrorCode
    message: str
    errno: int | None = None
    errno_name: str | None = None
    method: str | None = None
    descriptor: int | None = None


class ErrorBody(BaseModel):
    """The body of every error response: `{"error": {...}}`."""

    error: ErrorDetail

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


def where(method: str, descriptor: int | None, agent: str) -> str:
    """How every error message starts: the method, the descriptor and the agent."""
    return method + (f" on descriptor {descriptor}" if descriptor is not None else "") + f" (agent {agent})"


def describe_validation(exc: ValidationError) -> str:
    """One line naming each bad field and what is wrong with it."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors(include_url=False)
    )


def is_type_error(exc: ValidationError) -> bool:
    """Whether every problem is a value of the wrong type (TypeError) rather than out of range."""
    return all(error["type"].endswith("_type") for error in exc.errors(include_url=False))


def code_for_status(status: int) -> ErrorCode:
    """The code for an HTTP status raised by the web framework itself (404, 405, ...)."""
    for code in (
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ):
        if code.status == status:
            return code
    return ErrorCode.BAD_REQUEST if 400 <= status < 500 else ErrorCode.INTERNAL


def detail_from_os_error(exc: OSError, method: str | None, descriptor: int | None) -> ErrorDetail:
    """Describe an OS error raised by a socket operation."""
    number = exc.errno
    if isinstance(exc, TimeoutError) and number is None:
        number = errno_module.ETIMEDOUT
    if isinstance(exc, socket.gaierror):
        name: str | None = _GAI_NAMES.get(number, "EAI_FAIL") if number is not None else "EAI_FAIL"
    else:
        name = errno_module.errorcode.get(number) if number is not None else None
    return ErrorDetail(
        code=ErrorCode.OS_ERROR,
        message=exc.strerror or str(exc) or type(exc).__name__,
        errno=number,
        errno_name=name,
        method=method,
        descriptor=descriptor,
    )


def exception_for(detail: ErrorDetail, where: str) -> Exception:
    """The exception a caller should see; `where` names the call and the agent for the message."""
    message = f"{where}: {detail.message}"
    if detail.code in (ErrorCode.OS_ERROR, ErrorCode.BAD_DESCRIPTOR):
        number = _local_number(detail.errno_name) or detail.errno
        if detail.code is ErrorCode.BAD_DESCRIPTOR:
            number = errno_module.EBADF
        # OSError(errno, ...) returns the matching subclass: ConnectionRefusedError, TimeoutError, ...
        kind = socket.gaierror if (detail.errno_name or "").startswith("EAI_") else OSError
        return kind(number, message) if number else kind(message)
    if detail.code is ErrorCode.PERMISSION_DENIED:
        return PermissionError(errno_module.EACCES, message)
    if detail.code in (ErrorCode.BAD_REQUEST, ErrorCode.PAYLOAD_TOO_LARGE):
        return ValueError(message)
    if detail.code is ErrorCode.UNAUTHORIZED:
        return AuthenticationError(message)
    if detail.code is ErrorCode.AGENT_RESTARTED:
        return AgentRestartedError(message)
    if detail.code is ErrorCode.LIMIT_EXCEEDED:
        return LimitExceededError(message)
    if detail.code is ErrorCode.CALL_ID_REUSED:
        return ProtocolError(message)
    if detail.code is ErrorCode.AGENT_OFFLINE:
        return AgentOfflineError(message)
    if detail.code is ErrorCode.END_OF_STREAM:
        return IncompleteReadError(message)
    return AgentError(message)


_GAI_NAMES = {getattr(socket, name): name for name in dir(socket) if name.startswith("EAI_")}
"""The resolver's error names (socket.gaierror's EAI_NONAME, ...) by this machine's numbers."""


def _local_number(name: str | None) -> int | None:
    """This machine's number for an errno name, or for a resolver error's EAI_* name."""
    number = getattr(socket if name.startswith("EAI_") else errno_module, name, None) if name else None
    return number if isinstance(number, int) else None
