"""Refusals the agent raises itself, as opposed to errors the OS raises on a socket."""

from protocol import ErrorCode


class Fault(Exception):
    """A refused call: its error code and a message the caller can act on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallerGone(Exception):
    """The HTTP caller disconnected while its call waited; the wait ended without taking any data."""
