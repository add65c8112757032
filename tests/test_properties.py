"""Hypothesis properties of the payload codec and the wire models; no network."""

import array
import base64
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from protocol import METHODS, from_raw, to_bytes, to_raw
from protocol.models import Address, ReceiveResponse, SendRequest

PROPERTY = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

DESCRIPTORS = st.integers(min_value=1, max_value=2**53)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(exclude_categories=()))
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12
)
"""JSON-like values (NaN, Infinity and lone surrogates included, as Python's json writes them)."""
JUNK = st.one_of(
    JSON,
    st.binary(),
    st.binary().map(bytearray),
    st.binary().map(memoryview),
    st.complex_numbers(),
    st.tuples(JSON, JSON),
    st.frozensets(st.integers()),
    st.lists(st.integers()),
    st.lists(st.integers(0, 255)).map(tuple),
    st.builds(range, st.integers(-300, 300), st.integers(-300, 300)),
    st.from_type(type),
    st.just(object()),
)
"""Anything a caller might hand `to_bytes`."""
NOT_A_BYTE = (
    st.integers().filter(lambda n: not 0 <= n <= 255)
    | st.floats()
    | st.booleans()
    | st.none()
    | st.text()
    | st.lists(st.integers(0, 255), max_size=2)
    | st.dictionaries(st.text(), st.integers(), max_size=2)
)
ADDRESSES = st.builds(Address, host=st.text(min_size=1, max_size=40), port=st.integers(0, 65535))

MODELS: list[type[BaseModel]] = list(
    dict.fromkeys(model for method in METHODS for model in (method.request, method.response))
)
REQUESTS = list(dict.fromkeys(method.request for method in METHODS))


def _field_values() -> st.SearchStrategy:
    """Values near what the models take, and JSON junk."""
    return st.one_of(
        JSON,
        st.integers(-(2**64), 2**64),
        st.floats(-100, 100),
        st.lists(st.integers(-2, 260), max_size=8),
        st.binary(max_size=64).map(lambda data: base64.b64encode(data).decode()),
        st.sampled_from(
            [
                "AF_INET",
                "AF_INET6",
                "SOCK_STREAM",
                "SOCK_DGRAM",
                "127.0.0.1",
                "::1",
                "localhost",
                "",
                " ",
                "a b",
                "\x00",
                "é",
            ]
        ),
        st.fixed_dictionaries({"host": st.text(max_size=10), "port": st.integers(-1, 70000)}),
    )


def _objects(model: type[BaseModel]) -> st.SearchStrategy[dict]:
    """JSON objects keyed mostly by the model's own field names, so some validate and most do not."""
    keys = st.sampled_from(list(model.model_fields)) | st.text(max_size=8)
    return st.dictionaries(keys, _field_values(), max_size=len(model.model_fields) + 1)


def _assert_round_trips(model: BaseModel) -> None:
    model_type = type(model)
    assert model_type.model_validate_json(model.model_dump_json()) == model
    assert model_type.model_validate(model.model_dump()) == model


@PROPERTY
@given(descriptor=DESCRIPTORS, data=st.binary(max_size=4096))
def test_send_request_round_trips(descriptor: int, data: bytes) -> None:
    """Any bytes survive a SendRequest through JSON (base64) and through the raw form."""
    request = SendRequest(descriptor=descriptor, data=data)
    wire = json.loads(request.model_dump_json())
    assert base64.b64decode(wire["data"], validate=True) == data
    assert SendRequest.model_validate_json(request.model_dump_json()) == request
    meta, body = to_raw(request)
    assert body == data and "data" not in json.loads(meta)
    assert from_raw(SendRequest, meta, body) == request


@PROPERTY
@given(data=st.binary(max_size=4096), eof=st.booleans(), pending=st.booleans(), peer=st.none() | ADDRESSES)
def test_receive_response_round_trips(data: bytes, eof: bool, pending: bool, peer: Address | None) -> None:
    """Any bytes survive a ReceiveResponse through JSON (base64) and through the raw form."""
    response = ReceiveResponse(data=data, eof=eof, pending=pending, peer=peer)
    assert ReceiveResponse.model_validate_json(response.model_dump_json()) == response
    meta, body = to_raw(response)
    assert body == data and "data" not in json.loads(meta)
    assert from_raw(ReceiveResponse, meta, body) == response


@PROPERTY
@given(descriptor=DESCRIPTORS, items=st.lists(st.integers(0, 255), max_size=512))
def test_int_lists_decode_to_the_same_bytes(descriptor: int, items: list[int]) -> None:
    """A list of ints 0..255 is the bytes it lists, in JSON and in Python."""
    wire = json.dumps({"descriptor": descriptor, "data": items})
    assert SendRequest.model_validate_json(wire).data == bytes(items)
    assert SendRequest.model_validate({"descriptor": descriptor, "data": items}).data == bytes(items)
    assert ReceiveResponse.model_validate_json(json.dumps({"data": items})).data == bytes(items)
    assert to_bytes(items) == bytes(items)


@PROPERTY
@given(items=st.lists(st.integers(0, 255), max_size=64), bad=NOT_A_BYTE, where=st.integers(0, 64))
def test_a_bad_element_is_a_validation_error(items: list[int], bad: object, where: int) -> None:
    """An int outside 0..255 or a non-int anywhere in the list is a ValidationError, nothing else."""
    items.insert(min(where, len(items)), bad)
    with pytest.raises(ValidationError):
        SendRequest.model_validate_json(json.dumps({"descriptor": 1, "data": items}))
    with pytest.raises(ValidationError):
        SendRequest.model_validate({"descriptor": 1, "data": items})
    with pytest.raises(ValidationError):
        ReceiveResponse.model_validate({"data": items})


@PROPERTY
@given(junk=JUNK)
def test_to_bytes_raises_only_type_or_value_errors(junk: object) -> None:
    """`to_bytes` gives bytes, or raises TypeError or ValueError; never anything else."""
    try:
        result = to_bytes(junk)
    except (TypeError, ValueError):
        return
    assert isinstance(result, bytes)


@PROPERTY
@given(items=st.lists(st.integers(0, 255), max_size=32), typecode=st.sampled_from("BHILQbhilq"))
@example(items=[1, 2], typecode="i")
def test_to_bytes_reads_int_sequences_item_by_item(items: list[int], typecode: str) -> None:
    """Any sequence of ints 0..255 is the bytes it lists, whatever stores them (here an `array.array`)."""
    if typecode in "bhilq":
        items = [item for item in items if item < 128]
    assert to_bytes(array.array(typecode, items)) == bytes(items)


@pytest.mark.parametrize("model_type", REQUESTS, ids=lambda model: model.__name__)
@PROPERTY
@given(data=st.data())
def test_requests_reject_bad_json_with_validation_errors(model_type: type[BaseModel], data: st.DataObject) -> None:
    """Any JSON value either validates as the request or is a ValidationError; what validates round-trips."""
    value = data.draw(_objects(model_type) | JSON, label="value")
    try:
        request = model_type.model_validate_json(json.dumps(value))
    except ValidationError:
        return
    _assert_round_trips(request)


@pytest.mark.parametrize("model_type", MODELS, ids=lambda model: model.__name__)
@PROPERTY
@given(data=st.data())
def test_models_that_validate_round_trip(model_type: type[BaseModel], data: st.DataObject) -> None:
    """Request and response models that validate re-serialize and validate again to the same model."""
    value = data.draw(_objects(model_type), label="value")
    try:
        model = model_type.model_validate_json(json.dumps(value))
    except ValidationError:
        return
    _assert_round_trips(model)
    if "data" in model_type.model_fields:
        assert from_raw(model_type, *to_raw(model)) == model


@pytest.mark.parametrize("model_type", [m for m in REQUESTS if "data" in m.model_fields], ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.data(), body=st.binary(max_size=64))
def test_raw_meta_is_a_value_error_or_a_model(model_type: type[BaseModel], data: st.DataObject, body: bytes) -> None:
    """Any meta header (JSON or not) gives the model or a ValueError (ValidationError is one); nothing else."""
    meta = data.draw(_objects(model_type).map(json.dumps) | JSON.map(json.dumps) | st.text(), label="meta")
    try:
        model = from_raw(model_type, meta, body)
    except ValueError:
        return
    assert model.data == body


@pytest.mark.parametrize("meta", ["[" * 5000, '{"a":' * 1500], ids=["array", "object"])
def test_deeply_nested_raw_meta_is_a_value_error(meta: str) -> None:
    """A short meta header nested past the JSON parser's depth is a ValueError, not a RecursionError."""
    with pytest.raises(ValueError):
        from_raw(SendRequest, meta, b"x")
