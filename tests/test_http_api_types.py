"""``ApiRequest`` / ``ApiResponse``: the payload and the return value of a function bound to an
``http`` trigger, in the shapes engine.md 2.3 and 2.4 give them.

The first half converts without sockets; the second half calls such a function through an engine
(the dev engine, and a real one when ``III_ENGINE_URL`` is set) with the payload the engine's
HTTP worker would send, the way that worker calls it.
"""

from __future__ import annotations

import http
from typing import Any

import attrs
import pytest
import trio

import iii_trio
from iii_trio import ApiRequest, ApiResponse, ApiTrigger
from iii_trio._dispatch import InvalidPayload, prepare_handler, to_json_value


def engine_request(**changes: Any) -> dict[str, Any]:
    """The payload the engine's HTTP worker sends a handler (engine.md 2.3), with ``changes``."""
    payload: dict[str, Any] = {
        "query_params": {"q": "hello", "limit": "10"},
        "path_params": {"id": "abc123"},
        "headers": {"host": "localhost:3111", "content-type": "application/json"},
        "path": "items/:id",
        "method": "POST",
        "body": {"name": "pen", "tags": ["blue", None]},
        "trigger": {"type": "http", "path": "items/:id", "method": "POST"},
        "request_body": {"channel_id": "c-1", "access_key": "k-1", "direction": "read"},
        "response": {"channel_id": "c-2", "access_key": "k-2", "direction": "write"},
    }
    payload.update(changes)
    return payload


async def read_request(request: ApiRequest) -> None:
    pass


def structure(payload: Any) -> Any:
    prepared = prepare_handler("api::read", read_request)
    assert prepared.structure is not None
    return prepared.structure(payload)


# --- ApiRequest from the engine's payload -------------------------------------------------------


def test_the_engines_http_request_payload_is_structured_field_by_field() -> None:
    request = structure(engine_request())
    assert request == ApiRequest(
        path_params={"id": "abc123"},
        query_params={"q": "hello", "limit": "10"},
        body={"name": "pen", "tags": ["blue", None]},
        headers={"host": "localhost:3111", "content-type": "application/json"},
        method="POST",
        path="items/:id",
        trigger=ApiTrigger(type="http", path="items/:id", method="POST"),
        # Kept as the engine sent them, so nothing in the payload is lost.
        request_body={"channel_id": "c-1", "access_key": "k-1", "direction": "read"},
        response={"channel_id": "c-2", "access_key": "k-2", "direction": "write"},
    )


def test_missing_keys_take_defaults() -> None:
    # The shape a middleware sees (engine.md 2.3 step 2): no path, body, trigger or channels.
    request = structure({"path_params": {}, "query_params": {}, "headers": {}, "method": "GET"})
    assert request == ApiRequest(method="GET")
    assert request.body is None
    assert request.trigger is None
    assert request.request_body is None
    assert structure({}) == ApiRequest()
    assert structure(engine_request(trigger={"type": "http"})).trigger == ApiTrigger("http")


def test_keys_the_engine_may_add_later_are_ignored() -> None:
    trigger = {"type": "http", "path": "items/:id", "method": "POST", "route_id": 7}
    payload = engine_request(context={"user": "ada"}, trigger=trigger)
    assert structure(payload) == structure(engine_request())


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (engine_request(headers=["host: localhost"]), "payload.headers"),
        (engine_request(headers={"x-count": 3}), "payload.headers['x-count']"),
        (engine_request(query_params="q=hello"), "payload.query_params"),
        (engine_request(path_params={"id": None}), "payload.path_params['id']"),
        (engine_request(method=1), "payload.method"),
        (engine_request(path=None), "payload.path"),
        (engine_request(trigger="http"), "payload.trigger"),
        (engine_request(trigger={"path": "items/:id"}), "payload.trigger.type"),
        ("GET /items", "(expected an object, got a string) @ payload"),
        ([engine_request()], "(expected an object, got an array) @ payload"),
        (None, "(expected an object, got null) @ payload"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_payload_that_does_not_fit_is_invalid_and_names_the_field(
    payload: Any, named: str
) -> None:
    with pytest.raises(InvalidPayload, match="invalid payload for api::read") as refused:
        structure(payload)
    assert named in str(refused.value)


def test_an_api_request_built_by_hand_becomes_the_engines_payload_and_back() -> None:
    request = ApiRequest(
        path_params={"id": "7"},
        method="DELETE",
        path="items/:id",
        trigger=ApiTrigger(type="http", path="items/:id"),
    )
    payload = to_json_value(request)
    # Only what the engine would send: no nulls for an absent trigger field or channel refs.
    assert payload == {
        "path_params": {"id": "7"},
        "query_params": {},
        "body": None,
        "headers": {},
        "method": "DELETE",
        "path": "items/:id",
        "trigger": {"type": "http", "path": "items/:id"},
    }
    assert structure(payload) == request
    assert structure(to_json_value(structure(engine_request()))) == structure(engine_request())


# --- ApiResponse ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"status_code": "200"}, TypeError, "status_code must be an int"),
        ({"status_code": 200.0}, TypeError, "status_code must be an int"),
        ({"status_code": True}, TypeError, "status_code must be an int"),
        ({"status_code": 99}, ValueError, "status_code must be from 100 to 599"),
        ({"status_code": 600}, ValueError, "status_code must be from 100 to 599"),
        ({"status_code": 200, "headers": ["x-a: 1"]}, TypeError, "headers must be a mapping"),
        ({"status_code": 200, "headers": {"x-a": 1}}, TypeError, "headers must map strings"),
        ({"status_code": 200, "headers": {b"x-a": "1"}}, TypeError, "headers must map strings"),
    ],
)
def test_a_bad_response_is_refused_when_built(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"ApiResponse.{message}"):
        ApiResponse(**arguments)


def test_status_codes_from_the_standard_library_are_plain_numbers_on_the_wire() -> None:
    response = ApiResponse(http.HTTPStatus.CREATED)
    assert to_json_value(response) == {"status_code": 201, "body": None}
    assert type(to_json_value(response)["status_code"]) is int
    assert ApiResponse(100).status_code == 100
    assert ApiResponse(599).status_code == 599


def test_a_response_goes_out_with_the_keys_the_engine_reads() -> None:
    shaped = to_json_value(ApiResponse(201, body={"id": "7"}, headers={"location": "/items/7"}))
    assert shaped == {"status_code": 201, "body": {"id": "7"}, "headers": {"location": "/items/7"}}


def test_no_headers_means_no_headers_key_and_no_body_means_null() -> None:
    # A missing body would make the engine answer `{}`; null is what "no body" says (see the
    # ApiResponse docstring for how the engine encodes it).
    assert to_json_value(ApiResponse(204)) == {"status_code": 204, "body": None}


@attrs.frozen
class Item:
    name: str
    quantity: int = 1


def test_an_attrs_body_is_unstructured() -> None:
    shaped = to_json_value(ApiResponse(200, body=Item("pen")))
    assert shaped == {"status_code": 200, "body": {"name": "pen", "quantity": 1}}


def test_the_response_keeps_its_own_copy_of_the_headers() -> None:
    headers = {"x-a": "1"}
    response = ApiResponse(200, headers=headers)
    headers["x-a"] = "2"
    assert response.headers == {"x-a": "1"}


# --- schemas --------------------------------------------------------------------------------------


def test_request_and_response_schemas_are_derived_from_the_annotations() -> None:
    async def get_item(request: ApiRequest) -> ApiResponse:
        return ApiResponse(200)

    prepared = prepare_handler("api::get", get_item)
    request_format = prepared.request_format
    assert request_format["type"] == "object"
    assert "required" not in request_format
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    for name in ("path_params", "query_params", "headers"):
        assert request_format["properties"][name] == string_map
    assert request_format["properties"]["method"] == {"type": "string"}
    response_format = prepared.response_format
    assert response_format["required"] == ["status_code"]
    assert response_format["properties"]["status_code"] == {"type": "integer"}


# --- through an engine ----------------------------------------------------------------------------


def without_channels(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` without its channel refs: no such channels exist on the engine these tests
    call through, so nothing in the worker should be handed references to them."""
    return {key: value for key, value in payload.items() if key not in ("request_body", "response")}


async def test_a_function_reads_the_request_and_the_caller_sees_the_engines_response_shape(
    worker: iii_trio.Worker,
) -> None:
    @worker.function("api::items::create")
    async def create_item(request: ApiRequest) -> ApiResponse:
        assert request.trigger is not None
        return ApiResponse(
            201,
            body={
                "id": request.path_params["id"],
                "query": request.query_params,
                "name": request.body["name"],
                "route": [request.method, request.path, request.trigger.type],
                "content_type": request.headers["content-type"],
            },
            headers={"location": f"/items/{request.path_params['id']}"},
        )

    await worker.wait_registered()
    result = await worker.trigger("api::items::create", without_channels(engine_request()))
    assert result == {
        "status_code": 201,
        "body": {
            "id": "abc123",
            "query": {"q": "hello", "limit": "10"},
            "name": "pen",
            "route": ["POST", "items/:id", "http"],
            "content_type": "application/json",
        },
        "headers": {"location": "/items/abc123"},
    }


async def test_an_unannotated_handler_returning_an_api_response_is_shaped_the_same(
    worker: iii_trio.Worker,
) -> None:
    worker.register_function("api::gone", lambda payload: ApiResponse(410))

    @worker.function("api::teapot")
    async def teapot(payload: Any) -> Any:  # no ApiResponse annotation to go by
        return ApiResponse(418, body="short and stout", headers={"content-type": "text/plain"})

    await worker.wait_registered()
    assert await worker.trigger("api::gone", {}) == {"status_code": 410, "body": None}
    assert await worker.trigger("api::teapot", {}) == {
        "status_code": 418,
        "body": "short and stout",
        "headers": {"content-type": "text/plain"},
    }


async def test_a_caller_may_send_an_api_request_built_by_hand(
    worker: iii_trio.Worker,
) -> None:
    @worker.function("api::echo")
    async def echo(request: ApiRequest) -> dict[str, Any]:
        return {"method": request.method, "id": request.path_params["id"], "body": request.body}

    await worker.wait_registered()
    request = ApiRequest(path_params={"id": "9"}, method="PUT", body=[1, 2])
    assert await worker.trigger("api::echo", request) == {
        "method": "PUT",
        "id": "9",
        "body": [1, 2],
    }


async def test_a_malformed_request_fails_the_call_and_the_worker_keeps_serving(
    worker: iii_trio.Worker,
) -> None:
    @worker.function("api::items::get")
    async def get_item(request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, body={"id": request.path_params["id"]})

    await worker.wait_registered()
    with pytest.raises(iii_trio.InvocationError) as refused:
        await worker.trigger("api::items::get", without_channels(engine_request(headers=["a: b"])))
    assert refused.value.code == "invalid_payload"
    assert refused.value.function_id == "api::items::get"
    assert "payload.headers" in refused.value.message
    with pytest.raises(iii_trio.InvocationError, match="expected an object") as not_an_object:
        await worker.trigger("api::items::get", "GET /items/abc123")
    assert not_an_object.value.code == "invalid_payload"
    result = await worker.trigger("api::items::get", without_channels(engine_request()))
    assert result == {"status_code": 200, "body": {"id": "abc123"}}


async def test_the_derived_schemas_reach_the_engine(worker: iii_trio.Worker) -> None:
    @worker.function("api::items::list")
    async def list_items(request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, body=[])

    await worker.wait_registered()
    functions = {info.function_id: info for info in await worker.list_functions()}
    info = functions["api::items::list"]
    assert set(info.request_format["properties"]) == {
        "path_params",
        "query_params",
        "body",
        "headers",
        "method",
        "path",
        "trigger",
        "request_body",
        "response",
    }
    assert info.response_format["required"] == ["status_code"]


async def test_the_request_body_and_response_channels_arrive_as_live_ends(
    iii_worker: iii_trio.Worker,
) -> None:
    # As the engine's HTTP worker sends them: one channel to read the body, one to answer.
    body = await iii_worker.create_channel()
    answer = await iii_worker.create_channel()

    @iii_worker.function("api::upload")
    async def upload(request: ApiRequest) -> None:
        assert isinstance(request.request_body, iii_trio.ChannelReader)
        assert isinstance(request.response, iii_trio.ChannelWriter)
        received = b"".join([chunk async for chunk in request.request_body])
        async with request.response as response:
            await response.send_message('{"type":"set_status","status_code":201}')
            await response.send_all(received.upper())

    await iii_worker.wait_registered()
    payload = {
        "method": "POST",
        "path": "upload",
        "request_body": body.reader_ref,
        "response": answer.writer_ref,
    }
    async with trio.open_nursery() as nursery:
        nursery.start_soon(iii_worker.trigger, "api::upload", payload)
        async with body.writer as writer:
            await writer.send_all(b"some bytes")
        assert await answer.reader.receive_message() == '{"type":"set_status","status_code":201}'
        assert b"".join([chunk async for chunk in answer.reader]) == b"SOME BYTES"
