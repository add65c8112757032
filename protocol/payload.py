"""The one payload codec: how socket bytes travel on the wire.

In JSON a payload is a base64 string; a list of ints 0..255 is accepted too, because that is
what a person (or the seed's `Vector{UInt8}`) writes. For bulk data a model travels as a raw
`application/octet-stream` body holding its payload, with its other fields as JSON in one header.
"""

import base64
import binascii
import json
import operator
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, PlainSerializer, WithJsonSchema

MAX_PAYLOAD = 16 * 1024 * 1024
"""Largest payload of one call; the client splits larger TCP sends."""

PAYLOAD_FIELD = "data"

MAX_INT_LIST = 65536
"""Longest payload accepted as a list of ints: that form is for people; bulk goes as base64 or raw."""

MAX_META = 8192
"""Longest meta header: it only ever holds a few scalar fields."""

Model = TypeVar("Model", bound=BaseModel)


def to_bytes(value: Any, name: str = "message") -> bytes:
    """Bytes from bytes-likes (a numpy uint8 array too) or a sequence of ints 0..255.

    A buffer of wider items (array('i'), numpy int32) is read item by item, never as raw memory.
    Anything else is a TypeError, an item outside 0..255 a ValueError.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        raise TypeError(f"{name} must be bytes or a sequence of ints 0..255, not str: encode it first")
    try:
        view = memoryview(value)
    except TypeError:
        view = None
    if view is not None and view.format in ("B", "c"):
        return view.tobytes()
    items: Sequence[Any]
    if view is not None:
        items = view.tolist()
    elif isinstance(value, Sequence):
        items = value
        if type(value) is list and bool not in map(type, value):  # in C, as bytes() below
            try:
                return bytes(value)  # in C; anything it refuses is named item by item below
            except (TypeError, ValueError):
                pass
    else:
        raise TypeError(
            f"{name} must be bytes, bytearray, memoryview or a sequence of ints 0..255, not {type(value).__name__}"
        )
    numbers = []
    for index, item in enumerate(items):
        if isinstance(item, bool) or not hasattr(item, "__index__"):
            raise TypeError(f"{name}[{index}] must be an int 0..255, not {type(item).__name__}")
        number = operator.index(item)
        if not 0 <= number <= 255:
            raise ValueError(f"{name}[{index}] = {number} is outside 0..255")
        numbers.append(number)
    return bytes(numbers)


def _decode(value: Any) -> bytes:
    if isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"payload is not valid base64: {exc}") from None
    else:
        if isinstance(value, list) and len(value) > MAX_INT_LIST:
            raise ValueError(
                f"a list of ints holds at most {MAX_INT_LIST} bytes; send bulk data as base64 "
                "or as an application/octet-stream body"
            )
        try:
            data = to_bytes(value, PAYLOAD_FIELD)
        except TypeError as exc:  # pydantic reports only ValueError as a validation error
            raise ValueError(str(exc)) from None
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(data)} bytes is over the limit of {MAX_PAYLOAD}")
    return data


def _encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


Payload = Annotated[
    bytes,
    BeforeValidator(_decode),
    PlainSerializer(_encode, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "contentEncoding": "base64"},
                {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}},
            ],
            "description": "Bytes: base64, or a list of ints 0..255.",
        }
    ),
]
"""A payload field: bytes in Python, base64 (or a list of ints) in JSON."""


def to_raw(model: BaseModel) -> tuple[str, bytes]:
    """Split a model into (meta header value, raw body) for an octet-stream message."""
    meta = model.model_dump(mode="json", exclude={PAYLOAD_FIELD})
    return json.dumps(meta, separators=(",", ":")), getattr(model, PAYLOAD_FIELD)


def from_raw(model_type: type[Model], meta: str | None, body: bytes) -> Model:
    """Join a meta header value and a raw body back into a validated model."""
    if meta and len(meta) > MAX_META:
        raise ValueError(f"the meta header is over {MAX_META} characters")
    try:
        fields = json.loads(meta) if meta else {}
    except (ValueError, RecursionError):
        raise ValueError("the meta header is not valid JSON") from None
    if not isinstance(fields, dict):
        raise ValueError("the meta header must be a JSON object")  # noqa: TRY004 - a bad request, as bad JSON is
    return model_type.model_validate({**fields, PAYLOAD_FIELD: body})


def has_payload(model_type: type[BaseModel]) -> bool:
    """Whether a model carries socket bytes and so may travel raw."""
    return PAYLOAD_FIELD in model_type.model_fields
