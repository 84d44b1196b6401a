"""The public boundary: wrong types and values are refused with a clear, typed error naming the
argument; refusals by the engine are visible where the user looks; the Worker shows api.md's
members and nothing else."""

from __future__ import annotations

import functools
import gc
import math
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from scripted_engine import answer_register_then, memory_opener, scripted_handler

import iii_trio
from iii_trio._transport import WebSocket, serve_websocket_stream
from iii_trio.testing import DevEngine, open_dev_engine


@pytest.fixture
async def engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine() as running:
        yield running


@pytest.fixture
async def worker(engine: DevEngine) -> AsyncIterator[iii_trio.Worker]:
    async with iii_trio.open_worker(engine.url, name="boundary") as connected:
        yield connected


# --- open_worker's arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"url": 49134}, TypeError, "url"),
        ({"url": "http://127.0.0.1:49134"}, ValueError, "ws://"),
        ({"backoff": "fast"}, TypeError, "backoff"),
        ({"invocation_timeout": -1}, ValueError, "invocation_timeout"),
        ({"invocation_timeout": 0}, ValueError, "invocation_timeout"),
        ({"invocation_timeout": math.nan}, ValueError, "invocation_timeout"),
        ({"invocation_timeout": "5"}, TypeError, "invocation_timeout"),
        ({"headers": [("a", "b")]}, TypeError, "headers"),
        ({"headers": {"a": 1}}, TypeError, "headers"),
        ({"ssl": True}, TypeError, "ssl"),
        ({"name": ""}, ValueError, "name"),
        ({"name": 7}, TypeError, "name"),
        ({"namespace": "  "}, ValueError, "namespace"),
        ({"description": 3}, TypeError, "description"),
    ],
)
async def test_open_worker_refuses_bad_arguments_before_connecting(
    arguments: dict[str, Any], error: type[Exception], named: str
) -> None:
    arguments = {"url": "ws://127.0.0.1:9", **arguments}
    with pytest.raises(error, match=named):
        async with iii_trio.open_worker(**arguments):
            pytest.fail("must not connect")  # pragma: no cover


def test_a_bad_iii_url_from_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_URL", "127.0.0.1:49134")

    async def enter() -> None:
        async with iii_trio.open_worker():
            pass  # pragma: no cover

    with pytest.raises(ValueError, match=r"\$III_URL"):
        trio.run(enter)


# --- calls --------------------------------------------------------------------------------------


@pytest.mark.parametrize("function_id", [42, None, b"svc::x", ["svc::x"]])
async def test_trigger_with_a_function_id_that_is_not_a_string_is_a_type_error(
    worker: iii_trio.Worker, function_id: Any
) -> None:
    with pytest.raises(TypeError, match="function_id must be a string"):
        await worker.trigger(function_id)


async def test_trigger_given_the_official_sdks_request_object_says_how_to_call_it(
    worker: iii_trio.Worker,
) -> None:
    request = {"function_id": "svc::x", "payload": {"a": 1}}
    with pytest.raises(TypeError, match=r"worker\.trigger\(function_id, payload\)"):
        await worker.trigger(request)  # type: ignore[arg-type]


@pytest.mark.parametrize("function_id", ["", "   "])
async def test_a_blank_function_id_is_a_value_error(
    worker: iii_trio.Worker, function_id: str
) -> None:
    with pytest.raises(ValueError, match="function_id"):
        await worker.trigger(function_id)
    with pytest.raises(ValueError, match="function_id"):
        await worker.trigger_void(function_id)


@pytest.mark.parametrize(
    "payload",
    [math.nan, math.inf, -math.inf, {"deep": [1, {"x": math.nan}]}, {1, 2}, object()],
    ids=["nan", "inf", "-inf", "nested-nan", "set", "object"],
)
async def test_a_payload_that_is_not_json_is_a_type_error_naming_the_payload(
    worker: iii_trio.Worker, payload: Any
) -> None:
    with pytest.raises(TypeError, match="payload is not JSON"):
        await worker.trigger("svc::x", payload)
    with pytest.raises(TypeError, match="payload is not JSON"):
        await worker.trigger_void("svc::x", payload)
    with pytest.raises(TypeError, match="payload is not JSON"):
        await worker.enqueue("svc::x", payload, queue="q")


async def test_metadata_that_is_not_json_is_named_too(worker: iii_trio.Worker) -> None:
    with pytest.raises(TypeError, match="metadata is not JSON"):
        await worker.trigger("svc::x", {}, metadata={"when": math.inf})


async def test_payloads_with_the_word_null_and_real_nulls_still_go_through(
    worker: iii_trio.Worker,
) -> None:
    worker.register_function("svc::echo", lambda payload: payload)
    payload = {"text": "null", "nothing": None, "list": [None, 1.5]}
    assert await worker.trigger("svc::echo", payload) == payload


async def test_a_handler_returning_nan_fails_the_call_instead_of_answering_null(
    worker: iii_trio.Worker,
) -> None:
    worker.register_function("svc::nan", lambda payload: {"ratio": math.nan})
    with pytest.raises(iii_trio.InvocationError) as failed:
        await worker.trigger("svc::nan", {})
    assert failed.value.code == "invocation_failed"
    assert "JSON" in failed.value.message


async def test_enqueue_needs_a_queue_name(worker: iii_trio.Worker) -> None:
    with pytest.raises(ValueError, match="queue"):
        await worker.enqueue("svc::x", {}, queue=" ")
    with pytest.raises(TypeError, match="queue"):
        await worker.enqueue("svc::x", {}, queue=7)  # type: ignore[arg-type]


# --- registrations ------------------------------------------------------------------------------


async def test_register_function_checks_its_arguments(worker: iii_trio.Worker) -> None:
    with pytest.raises(TypeError, match="function_id"):
        worker.register_function(7, lambda payload: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="description"):
        worker.register_function("svc::d", lambda payload: None, description=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metadata"):
        worker.register_function("svc::m", lambda payload: None, metadata={"x": math.nan})
    with pytest.raises(TypeError, match="service_id"):
        worker.register_service(None)  # type: ignore[arg-type]
    # Nothing half-registered by the refused calls.
    worker.register_function("svc::d", lambda payload: "ok")
    assert await worker.trigger("svc::d") == "ok"


async def test_a_refused_function_registration_is_on_its_ref_and_raised_by_wait_registered(
    engine: DevEngine,
) -> None:
    async with (
        iii_trio.open_worker(engine.url, name="owner") as owner,
        iii_trio.open_worker(engine.url, name="latecomer") as latecomer,
    ):
        owner.register_function("svc::taken", lambda payload: "owner's")
        await owner.wait_registered()
        mine = latecomer.register_function("svc::taken", lambda payload: "latecomer's")
        free = latecomer.register_function("svc::free", lambda payload: "free")
        with pytest.raises(iii_trio.RegistrationRejected) as refused:
            await latecomer.wait_registered()
        assert refused.value.code == "FUNCTION_NAMESPACE_CONFLICT"
        assert refused.value.function_id == "svc::taken"
        assert refused.value.owner_worker_id == owner.worker_id
        assert mine.rejection is refused.value
        assert free.rejection is None
        # The id still reaches the owner's function: that is what the refusal says.
        assert await latecomer.trigger("svc::taken") == "owner's"
        mine.unregister()
        await latecomer.wait_registered()  # nothing refused any more
        assert mine.rejection is None


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ((None, "svc::a", {}), TypeError, "trigger_type must be a string"),
        (("", "svc::a", {}), ValueError, "trigger_type"),
        (("webhook", 7, {}), TypeError, "function_id must be a string"),
        (("webhook", "  ", {}), ValueError, "function_id"),
        (("webhook", "svc::a", {"every": math.inf}), TypeError, "config is not JSON"),
        (("webhook", "svc::a", {"a", "b"}), TypeError, "config is not JSON"),
        (("webhook", "svc::a", object()), TypeError, "config is not JSON"),
        (("webhook", "svc::a", [1, 2]), TypeError, "config must be a JSON object"),
        (("webhook", "svc::a", "every minute"), TypeError, "config must be a JSON object"),
    ],
)
async def test_register_trigger_refuses_bad_arguments_before_sending_anything(
    engine: DevEngine,
    worker: iii_trio.Worker,
    arguments: tuple[Any, Any, Any],
    error: type[Exception],
    named: str,
) -> None:
    with pytest.raises(error, match=named):
        await worker.register_trigger(*arguments)
    with pytest.raises(TypeError, match="metadata is not JSON"):
        await worker.register_trigger("webhook", "svc::a", {}, metadata={"at": math.nan})
    await worker.wait_registered()
    assert engine.statistics().bindings == 0
    # Nothing half-registered either: the same binding goes through once it is right.
    await worker.register_trigger("webhook", "svc::a", {})
    assert engine.statistics().bindings == 1


# --- the Worker's members -----------------------------------------------------------------------

# api.md's Worker members.
WORKER_API = {
    "worker_id",
    "connection_state",
    "watch_connection_state",
    "wait_connected",
    "register_function",
    "function",
    "wait_registered",
    "trigger",
    "trigger_void",
    "enqueue",
    "register_service",
    "register_trigger",
    "register_trigger_type",
    "list_functions",
    "list_workers",
    "list_trigger_types",
    "list_triggers",
    "watch_functions",
    "watch_workers",
    "create_channel",
}


def test_the_worker_shows_only_the_api_contracts_members() -> None:
    public = {name for name in dir(iii_trio.Worker) if not name.startswith("_")}
    assert public == WORKER_API


def test_a_function_ref_shows_its_id_rejection_and_unregister() -> None:
    public = {name for name in dir(iii_trio.FunctionRef) if not name.startswith("_")}
    assert public == {"id", "rejection", "unregister"}


def test_a_trigger_ref_shows_its_binding_rejection_and_unregister() -> None:
    public = {name for name in dir(iii_trio.TriggerRef) if not name.startswith("_")}
    assert public == {"id", "trigger_type", "function_id", "rejection", "unregister"}


def test_a_trigger_type_ref_shows_its_id_register_trigger_and_unregister() -> None:
    public = {name for name in dir(iii_trio.TriggerTypeRef) if not name.startswith("_")}
    assert public == {"id", "register_trigger", "unregister"}


# --- TLS ----------------------------------------------------------------------------------------


async def _serve_tls_engine(nursery: trio.Nursery, authority: trustme.CA) -> str:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)

    def respond(websocket: WebSocket, message: Any) -> None:
        return None

    handler = scripted_handler(answer_register_then(respond))

    async def serve(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await serve_websocket_stream(stream, handler, lambda request: None)

    listeners = await nursery.start(
        functools.partial(trio.serve_ssl_over_tcp, serve, 0, server_context, host="127.0.0.1")
    )
    return f"wss://localhost:{listeners[0].transport_listener.socket.getsockname()[1]}"


async def test_wss_with_the_given_ssl_context_connects(nursery: trio.Nursery) -> None:
    authority = trustme.CA()
    url = await _serve_tls_engine(nursery, authority)
    context = ssl.create_default_context()
    authority.configure_trust(context)
    async with iii_trio.open_worker(url, name="tls", ssl=context) as worker:
        assert worker.connection_state is iii_trio.ConnectionState.CONNECTED


async def test_an_untrusted_certificate_fails_at_once_and_says_so(nursery: trio.Nursery) -> None:
    url = await _serve_tls_engine(nursery, trustme.CA())
    with (
        trio.fail_after(5),
        pytest.raises(iii_trio.EngineUnavailable, match="certificate") as failed,
    ):
        async with iii_trio.open_worker(url, name="untrusted"):  # default backoff: unlimited
            pass  # pragma: no cover
    assert failed.value.attempts == 1
    cause = failed.value.__cause__
    assert cause is not None
    assert isinstance(cause.__cause__, ssl.SSLCertVerificationError)


# --- memory of a waiting call -------------------------------------------------------------------


async def test_a_waiting_call_keeps_no_copy_of_its_frame(nursery: trio.Nursery) -> None:
    # 2,000 calls wait for an engine that never answers them; what they cost beyond the tasks
    # themselves is measured against 2,000 tasks parked the same way in trio.sleep_forever().
    # The frame (orjson gives every frame a 4 KiB buffer) must be released once written.
    held = trio.Event()
    count = 2_000

    def never_answer(websocket: WebSocket, message: Any) -> None:
        return None

    opener_handler = scripted_handler(answer_register_then(never_answer))

    async def engine(stream: trio.abc.Stream) -> None:
        await serve_websocket_stream(stream, opener_handler, lambda request: None)

    opener, _ = memory_opener(nursery, engine)
    payload = {"data": "x" * 90}
    async with iii_trio.open_worker("ws://engine.test", name="m", _open_stream=opener) as worker:

        async def call() -> None:
            await worker.trigger("svc::held", payload)

        async def park() -> None:
            await held.wait()

        baseline = await _growth(park, count)
        calls = await _growth(call, count)
    per_call = (calls - baseline) / count
    assert per_call < 1024, f"{per_call:.0f} bytes per waiting call beyond its task"


async def _growth(task: Any, count: int) -> int:
    """Bytes allocated (and still held) by ``count`` tasks running ``task``, once all wait."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as tasks:
                for _ in range(count):
                    tasks.start_soon(task)
                await trio.testing.wait_all_tasks_blocked()
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
                scope.cancel()
    finally:
        tracemalloc.stop()
    return after - before
