"""The dev engine's sans-io core, driven synchronously: no trio, no sockets.

Each test plays one or more workers against :class:`EngineState` and checks the messages the
engine would send, against spec/protocol.md.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from typing import Any

import pytest

from iii_trio._protocol._messages import (
    EnqueueAction,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnknownMessage,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    VoidAction,
    WorkerRegistered,
)
from iii_trio.testing._engine import (
    CloseConnection,
    EngineState,
    NamespaceState,
    Output,
    Send,
    TimerArmed,
    WorkerAnnounced,
    WorkerDisconnected,
    baggage_with_function_id,
    canonical_uuid,
    engine_traceparent,
    sanitize_label,
)

from .engine_driver import (
    CALL_ID,
    GRACE,
    Engine,
    Worker,
    function_ids,
    invocation_to,
    messages_to,
    only_message_to,
    registration_to,
    result_of,
)


@pytest.fixture
def engine() -> Engine:
    return Engine()


# --- connecting (section 2.1) -------------------------------------------------------------------


def test_connect_sends_workerregistered_first_and_arms_the_grace_timer(engine: Engine) -> None:
    connection_id, outputs = engine.connect()
    first = outputs[0]
    assert isinstance(first, Send)
    assert first.connection_id == connection_id
    assert isinstance(first.message, WorkerRegistered)
    assert first.message.worker_id == connection_id
    assert first.message.reattach_token is not None
    assert first.message.reattach_token != connection_id
    assert first.message.features is None
    for value in (connection_id, first.message.reattach_token):
        assert canonical_uuid(value) == value
    assert TimerArmed(engine.now + GRACE) in outputs
    assert engine.state.next_deadline() == engine.now + GRACE
    assert engine.state.namespace_state(connection_id) is NamespaceState.PENDING


def test_every_connection_gets_fresh_ids(engine: Engine) -> None:
    first, _ = engine.connect()
    second, _ = engine.connect()
    assert first != second


# --- namespace buffering (section 2.5) -------------------------------------------------------


def test_registrations_wait_for_the_register_call_and_drain_in_order(engine: Engine) -> None:
    connection_id, _ = engine.connect()
    worker = Worker(engine, connection_id)
    caller = engine.worker("caller")
    assert worker.send(RegisterFunction(id="orders::create", description="v1")) == []
    worker.send(UnregisterFunction(id="orders::create"))
    worker.send(RegisterFunction(id="orders::create", description="v2"))
    assert caller.error("orders::create", {}, namespace="orders").code == "function_not_found"

    assert worker.result("engine::workers::register", {"namespace": "orders"}) == {"success": True}
    assert engine.state.namespace_state(connection_id) is NamespaceState.RESOLVED
    info = caller.result(
        "engine::functions::info", {"function_id": "orders::create", "namespace": "orders"}
    )
    assert info["description"] == "v2"


def test_register_result_is_sent_only_when_an_invocation_id_was_given(engine: Engine) -> None:
    connection_id, _ = engine.connect()
    outputs = engine.receive(
        connection_id,
        InvokeFunction("engine::workers::register", data={}, action=VoidAction()),
    )
    assert messages_to(outputs, connection_id) == []
    assert engine.state.namespace_state(connection_id) is NamespaceState.RESOLVED


def test_grace_expiry_drains_registrations_into_default(engine: Engine) -> None:
    connection_id, _ = engine.connect()
    worker = Worker(engine, connection_id)
    worker.send(RegisterFunction(id="late::fn"))
    caller = engine.worker("caller")
    assert engine.advance(GRACE - 0.001) == []
    assert caller.error("late::fn", {}).code == "function_not_found"
    engine.advance(0.001)
    assert engine.state.namespace_state(connection_id) is NamespaceState.RESOLVED
    delivered = caller.send(InvokeFunction("late::fn", data={}, invocation_id=CALL_ID))
    assert isinstance(only_message_to(delivered, connection_id), InvokeFunction)


def test_namespace_fixed_by_grace_wins_over_a_later_declaration(engine: Engine) -> None:
    connection_id, _ = engine.connect()
    worker = Worker(engine, connection_id)
    engine.advance(GRACE)
    worker.result("engine::workers::register", {"name": "w", "namespace": "orders"})
    worker.send(RegisterFunction(id="w::fn"))
    caller = engine.worker("caller")
    assert caller.result("engine::functions::info", {"function_id": "w::fn"})["namespace"] == (
        "default"
    )


def test_buffered_registrations_are_discarded_when_the_connection_closes(engine: Engine) -> None:
    connection_id, _ = engine.connect()
    Worker(engine, connection_id).send(RegisterFunction(id="gone::fn"))
    engine.state.disconnect(connection_id)
    assert engine.state.next_deadline() != engine.now + GRACE
    assert engine.advance(GRACE) == []
    caller = engine.worker("caller")
    assert caller.error("gone::fn", {}).code == "function_not_found"


def test_blank_namespace_is_refused_and_the_grace_timer_keeps_running(engine: Engine) -> None:
    connection_id, _ = engine.connect()
    worker = Worker(engine, connection_id)
    worker.send(RegisterFunction(id="blank::fn"))
    error = worker.error("engine::workers::register", {"name": "svc", "namespace": " \t"})
    assert error == ErrorBody(
        "INVALID_NAMESPACE",
        "namespace is empty: worker 'svc' declared \" \t\". Give it a name, or omit the field "
        "to register in 'default'.",
    )
    unnamed = worker.error("engine::workers::register", {"namespace": ""})
    assert "worker '<unnamed>' declared \"\"" in unnamed.message
    assert engine.state.namespace_state(connection_id) is NamespaceState.PENDING
    engine.advance(GRACE)
    caller = engine.worker("caller")
    assert caller.result("engine::functions::info", {"function_id": "blank::fn"})["namespace"] == (
        "default"
    )


def test_a_second_register_updates_metadata_and_keeps_the_namespace(engine: Engine) -> None:
    worker = engine.worker("first", namespace="orders")
    worker.result("engine::workers::register", {"name": "second", "namespace": "billing", "pid": 9})
    caller = engine.worker("caller")
    info = caller.result("engine::workers::info", {"name": "second"})["worker"]
    assert info["namespace"] == "orders"
    assert info["pid"] == 9
    with pytest.raises(AssertionError):
        caller.result("engine::workers::info", {"name": "first"})


# --- engine::workers::register (section 2.4) ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("  billing  ", "billing"),
        ("bil\x00ling\x1b", "billing"),
        ("a\u202eb\u2066c\u2028d\u2029e", "abcde"),
        ("x" * 300, "x" * 280),
        (" \u200a\u3000 ", None),
        ("\x01\x02", None),
    ],
)
def test_worker_names_are_sanitized(raw: str, stored: str | None) -> None:
    assert sanitize_label(raw) == stored


def test_truncation_happens_before_trimming() -> None:
    assert sanitize_label("y" * 279 + " z") == "y" * 279


def test_registered_metadata_is_listed(engine: Engine) -> None:
    connection_id, _ = engine.connect(peer="10.1.2.3")
    worker = Worker(engine, connection_id)
    worker.result(
        "engine::workers::register",
        {
            "runtime": None,
            "version": "1.2",
            "name": "\x07svc ",
            "description": "does\u2028things",
            "os": "Linux",
            "pid": 4242,
            "isolation": "docker",
            "telemetry": {"language": "en", "amplitude_api_key": None},
            "features": ["anything", 1],
        },
    )
    worker.send(RegisterFunction(id="svc::a"))
    listed = worker.result("engine::workers::list", {"search": "SV"})["workers"]
    assert listed == [
        {
            "name": "svc",
            "description": "doesthings",
            "version": "1.2",
            "id": connection_id,
            "namespace": "default",
            "runtime": "unknown",
            "os": "Linux",
            "status": "connected",
            "function_count": 1,
            "connected_at_ms": 42,
            "active_invocations": 0,
            "isolation": "docker",
            "ip_address": "10.1.2.3",
        }
    ]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ("text", 'invalid type: string "text", expected struct RegisterWorkerInput'),
        (None, "invalid type: null, expected struct RegisterWorkerInput"),
        ({"name": 5}, "invalid type: integer `5`, expected a string"),
        ({"pid": -1}, "invalid value: integer `-1`, expected u32"),
        ({"pid": 1.5}, "invalid type: floating point `1.5`, expected u32"),
        ({"telemetry": {"language": True}}, "invalid type: boolean `true`, expected a string"),
        ({"telemetry": []}, "invalid type: sequence, expected struct WorkerTelemetryMeta"),
    ],
)
def test_register_input_must_deserialize(engine: Engine, data: Any, detail: str) -> None:
    worker = engine.worker("w")
    error = worker.error("engine::workers::register", data)
    assert error == ErrorBody(
        "deserialization_error",
        f"Failed to deserialize input for engine::workers::register: {detail}",
    )


def test_name_conflict_rejects_and_closes_the_newcomer(engine: Engine) -> None:
    holder = engine.worker("billing")
    connection_id, _ = engine.connect()
    newcomer = Worker(engine, connection_id)
    newcomer.send(RegisterFunction(id="billing::charge"))
    outputs = newcomer.send(
        InvokeFunction("engine::workers::register", data={"name": "billing"}, invocation_id=CALL_ID)
    )
    assert outputs[0] == Send(
        connection_id,
        RegistrationRejected(
            code="WORKER_NAMESPACE_CONFLICT",
            namespace="default",
            owner_worker_id=holder.id,
            worker_name="billing",
        ),
    )
    assert CloseConnection(connection_id, drain=True) in outputs
    assert messages_to(outputs, connection_id) == [outputs[0].message]  # no result
    assert engine.state.namespace_state(connection_id) is NamespaceState.ABORTED
    assert engine.state.next_deadline() != engine.now + GRACE
    assert newcomer.send(Ping()) == []  # a closing connection is not listened to
    newcomer.disconnect()
    assert holder.error("billing::charge", {}).code == "function_not_found"


def test_same_name_in_another_namespace_is_no_conflict(engine: Engine) -> None:
    engine.worker("svc")
    other = engine.worker("svc", namespace="orders")
    assert other.result("engine::workers::register", {"name": "svc"}) == {"success": True}


def test_a_name_is_free_again_once_its_holder_left(engine: Engine) -> None:
    first = engine.worker("svc")
    first.disconnect()
    second = engine.worker("svc")
    assert second.result("engine::workers::info", {"name": "svc"})["worker"]["id"] == second.id


# --- function leases (sections 2.7, 3.5, 3.6) -----------------------------------------------------


def test_function_lease_conflict_is_rejected_without_closing(engine: Engine) -> None:
    owner = engine.worker("owner")
    owner.send(RegisterFunction(id="math::add", description="owner's"))
    intruder = engine.worker("intruder")
    outputs = intruder.send(RegisterFunction(id="math::add", description="intruder's"))
    assert outputs == [
        Send(
            intruder.id,
            RegistrationRejected(
                code="FUNCTION_NAMESPACE_CONFLICT",
                namespace="default",
                owner_worker_id=owner.id,
                function_id="math::add",
            ),
        )
    ]
    info = intruder.result("engine::functions::info", {"function_id": "math::add"})
    assert info["description"] == "owner's"
    assert info["worker_name"] == "owner"
    assert intruder.send(Ping()) == [Send(intruder.id, Pong())]


def test_reregistering_by_the_owner_overwrites(engine: Engine) -> None:
    owner = engine.worker("owner")
    owner.send(RegisterFunction(id="math::add", description="v1"))
    assert owner.send(RegisterFunction(id="math::add", description="v2")) == []
    info = owner.result("engine::functions::info", {"function_id": "math::add"})
    assert info["description"] == "v2"


def test_engine_ids_outside_default_are_refused(engine: Engine) -> None:
    worker = engine.worker("w", namespace="orders")
    outputs = worker.send(RegisterFunction(id="engine::custom"))
    assert only_message_to(outputs, worker.id) == RegistrationRejected(
        code="FUNCTION_NAMESPACE_CONFLICT",
        namespace="orders",
        owner_worker_id="",
        function_id="engine::custom",
    )


def test_engine_ids_in_default_are_allowed_but_builtins_are_taken(engine: Engine) -> None:
    worker = engine.worker("queue")
    assert worker.send(RegisterFunction(id="engine::queue::enqueue")) == []
    outputs = worker.send(RegisterFunction(id="engine::functions::list"))
    rejection = only_message_to(outputs, worker.id)
    assert isinstance(rejection, RegistrationRejected)
    in_process = {w["name"]: w["id"] for w in worker.result("engine::workers::list", {})["workers"]}
    assert rejection.owner_worker_id == in_process["iii-engine-functions"]


def test_only_the_owner_can_unregister(engine: Engine) -> None:
    owner = engine.worker("owner")
    owner.send(RegisterFunction(id="svc::f"))
    other = engine.worker("other")
    other.send(UnregisterFunction(id="svc::f"))
    assert "svc::f" in function_ids(other)
    owner.send(UnregisterFunction(id="svc::f"))
    assert "svc::f" not in function_ids(other)


def test_http_invoked_functions_are_dropped_without_the_http_functions_worker(
    engine: Engine,
) -> None:
    from iii_trio._protocol._messages import HttpInvocationRef

    worker = engine.worker("w")
    outputs = worker.send(
        RegisterFunction(id="ext::f", invocation=HttpInvocationRef(url="http://127.0.0.1/"))
    )
    assert outputs == []
    assert "ext::f" not in function_ids(worker)


def test_a_service_registration_is_accepted_silently(engine: Engine) -> None:
    worker = engine.worker("w")
    assert worker.send(RegisterService(id="math", name="Math")) == []


# --- invocations (section 4) ----------------------------------------------------------------------


@pytest.fixture
def pair(engine: Engine) -> tuple[Worker, Worker]:
    server = engine.worker("server")
    server.send(RegisterFunction(id="math::add"))
    return engine.worker("client"), server


def test_sync_call_is_delivered_with_the_same_id_and_relayed_back(
    engine: Engine, pair: tuple[Worker, Worker]
) -> None:
    client, server = pair
    outputs = client.send(
        InvokeFunction(
            "math::add",
            data={"a": 2, "_caller_worker_id": "forged"},
            invocation_id=CALL_ID.upper(),
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            baggage="user=alice, iii.function.id=stale;p=1",
            metadata={"tenant": "acme"},
            namespace="default",
        )
    )
    delivery = only_message_to(outputs, server.id)
    assert delivery == InvokeFunction(
        "math::add",
        data={"a": 2, "_caller_worker_id": client.id},
        invocation_id=CALL_ID,
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        baggage="user=alice,iii.function.id=math::add",
        metadata={"tenant": "acme"},
    )
    assert messages_to(outputs, client.id) == []
    assert engine.state.statistics().pending_invocations == 1

    reply = server.send(InvocationResult(CALL_ID, function_id="whatever", result=5))
    assert reply == [
        Send(
            client.id,
            InvocationResult(
                CALL_ID,
                function_id="math::add",
                result=5,
                traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                baggage="user=alice, iii.function.id=stale;p=1",
            ),
        )
    ]
    assert engine.state.statistics().pending_invocations == 0


def test_non_object_data_is_passed_unchanged_and_trace_fields_stay_absent(
    pair: tuple[Worker, Worker],
) -> None:
    client, server = pair
    for data in (None, [1, 2], "text", 3):
        outputs = client.send(InvokeFunction("math::add", data=data, invocation_id=CALL_ID))
        delivery = only_message_to(outputs, server.id)
        assert isinstance(delivery, InvokeFunction)
        assert delivery.data == data
        assert delivery.traceparent is None
        assert delivery.baggage is None
        server.send(InvocationResult(CALL_ID, "math::add"))


def test_errors_are_relayed_as_sent(pair: tuple[Worker, Worker]) -> None:
    client, server = pair
    client.send(InvokeFunction("math::add", data={}, invocation_id=CALL_ID))
    failure = ErrorBody("invocation_failed", "boom", stacktrace="Traceback ...")
    (reply,) = server.send(InvocationResult(CALL_ID, "math::add", result=1, error=failure))
    assert isinstance(reply, Send)
    assert isinstance(reply.message, InvocationResult)
    assert reply.message.error == failure


@pytest.mark.parametrize(
    "form",
    [
        "6B1F0C0E-2A55-4B47-9D0A-7F0D6A1C2B3E",
        "6b1f0c0e2a554b479d0a7f0d6a1c2b3e",
        "{6b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3e}",
        "urn:uuid:6b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3e",
    ],
)
def test_lenient_uuid_forms_come_back_canonical(pair: tuple[Worker, Worker], form: str) -> None:
    client, server = pair
    delivered = client.send(InvokeFunction("math::add", data={}, invocation_id=form))
    assert invocation_to(delivered, server.id).invocation_id == CALL_ID
    (reply,) = server.send(InvocationResult(form, "math::add", result=1))
    assert result_of(reply).invocation_id == CALL_ID


@pytest.mark.parametrize(
    "bad_id",
    ["not-a-uuid", "6b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3", "6b1f-0c0e2a554b479d0a7f0d6a1c2b3e"],
)
def test_non_uuid_invocation_ids_drop_the_frame(pair: tuple[Worker, Worker], bad_id: str) -> None:
    client, server = pair
    assert client.send(InvokeFunction("math::add", data={}, invocation_id=bad_id)) == []
    client.send(InvokeFunction("math::add", data={}, invocation_id=CALL_ID))
    assert server.send(InvocationResult(bad_id, "math::add", result=1)) == []


def test_void_calls_get_a_fresh_id_and_no_reply(pair: tuple[Worker, Worker]) -> None:
    client, server = pair
    outputs = client.send(
        InvokeFunction("math::add", data={}, invocation_id=CALL_ID, action=VoidAction())
    )
    delivery = only_message_to(outputs, server.id)
    assert isinstance(delivery, InvokeFunction)
    assert delivery.invocation_id not in (None, CALL_ID)
    assert delivery.invocation_id is not None
    assert server.send(InvocationResult(delivery.invocation_id, "math::add", result=1)) == []
    assert client.send(InvokeFunction("nope::fn", data={}, action=VoidAction())) == []
    assert client.send(InvokeFunction("math::add", data={})) != []  # no id: still delivered


def test_function_not_found_names_the_other_namespaces(engine: Engine) -> None:
    for namespace in ("zeta", "alpha"):
        engine.worker(f"w-{namespace}", namespace=namespace).send(RegisterFunction(id="x::f"))
    caller = engine.worker("caller")
    assert caller.error("x::f", {}, traceparent="tp") == ErrorBody(
        "function_not_found",
        "Function x::f not found in namespace default. It is registered in namespace(s): "
        "alpha, zeta.",
    )
    answer = caller.call("x::f", {}, traceparent="tp")
    assert answer is not None
    assert answer.traceparent == "tp"
    assert caller.error("y::f", {}, namespace="beta") == ErrorBody(
        "function_not_found", "Function y::f not found in namespace beta."
    )


def test_blank_invoke_namespace_is_refused_without_trace_fields(engine: Engine) -> None:
    caller = engine.worker("caller")
    answer = caller.call("x::f", {}, namespace="  ", traceparent="tp", baggage="b=1")
    assert answer is not None
    assert answer == InvocationResult(
        answer.invocation_id,
        "x::f",
        error=ErrorBody(
            "INVALID_NAMESPACE",
            "`namespace` is empty: it was named and left blank. Give it a name, or omit it to "
            "use `default`.",
        ),
    )
    assert caller.send(InvokeFunction("x::f", data={}, namespace="")) == []


def test_enqueue_without_a_provider_is_an_enqueue_error(engine: Engine) -> None:
    caller = engine.worker("caller")
    error = caller.error("x::f", {}, action=EnqueueAction(queue="jobs"), traceparent="tp")
    assert error == ErrorBody(
        "enqueue_error",
        "No queue provider is installed. `TriggerAction::Enqueue` routes through the "
        "`engine::queue::enqueue` provider, which the standalone queue worker registers. Add it "
        "with `iii worker add queue`. (underlying: Function engine::queue::enqueue not found in "
        "namespace default)",
    )
    assert caller.send(InvokeFunction("x::f", data={}, action=EnqueueAction(queue="q"))) == []


def test_enqueue_goes_through_the_queue_provider(engine: Engine) -> None:
    queue = engine.worker("queue")
    queue.send(RegisterFunction(id="engine::queue::enqueue"))
    caller = engine.worker("caller")
    outputs = caller.send(
        InvokeFunction(
            "jobs::run",
            data={"n": 1},
            invocation_id=CALL_ID,
            action=EnqueueAction(queue="jobs"),
            namespace="orders",
            baggage="k=v",
        )
    )
    request = invocation_to(outputs, queue.id)
    assert isinstance(request, InvokeFunction)
    assert request.function_id == "engine::queue::enqueue"
    receipt = request.data["messageReceiptId"]
    assert request.data == {
        "queue": "jobs",
        "function_id": "jobs::run",
        "data": {"n": 1},
        "messageReceiptId": receipt,
        "traceparent": None,
        "baggage": "k=v,iii.function.id=jobs::run",
        "namespace": "orders",
    }
    (reply,) = queue.send(InvocationResult(request.invocation_id or "", "x", result=None))
    assert reply == Send(
        caller.id,
        InvocationResult(CALL_ID, "jobs::run", result={"messageReceiptId": receipt}, baggage="k=v"),
    )
    second = caller.send(
        InvokeFunction("jobs::run", data={}, invocation_id=CALL_ID, action=EnqueueAction("q"))
    )
    second_request = invocation_to(second, queue.id)
    (failure,) = queue.send(
        InvocationResult(
            second_request.invocation_id or "",
            "x",
            error=ErrorBody("QUEUE_FULL", "too many"),
        )
    )
    assert result_of(failure).error == ErrorBody("enqueue_error", "QUEUE_FULL: too many")


def test_executor_leaving_stops_the_callers_invocations(
    engine: Engine, pair: tuple[Worker, Worker]
) -> None:
    client, server = pair
    client.send(InvokeFunction("math::add", data={}, invocation_id=CALL_ID, traceparent="tp"))
    client.send(InvokeFunction("math::add", data={}, action=VoidAction()))
    outputs = server.disconnect()
    assert messages_to(outputs, client.id) == [
        InvocationResult(
            CALL_ID,
            "math::add",
            error=ErrorBody("invocation_stopped", "Invocation stopped"),
            traceparent="tp",
        )
    ]
    assert engine.state.statistics().pending_invocations == 0
    assert client.error("math::add", {}).code == "function_not_found"


def test_caller_leaving_drops_the_late_result(engine: Engine, pair: tuple[Worker, Worker]) -> None:
    client, server = pair
    client.send(InvokeFunction("math::add", data={}, invocation_id=CALL_ID))
    assert messages_to(client.disconnect(), server.id) == []
    assert engine.state.statistics().pending_invocations == 0
    assert server.send(InvocationResult(CALL_ID, "math::add", result=1)) == []


def test_active_invocations_count_both_ends(engine: Engine, pair: tuple[Worker, Worker]) -> None:
    client, _server = pair
    client.send(InvokeFunction("math::add", data={}, invocation_id=CALL_ID))
    workers = {
        w["name"]: w["active_invocations"]
        for w in client.result("engine::workers::list", {})["workers"]
    }
    assert workers["client"] == 1
    assert workers["server"] == 1


def test_reusing_an_in_flight_id_breaks_the_earlier_call(
    engine: Engine, pair: tuple[Worker, Worker]
) -> None:
    client, server = pair
    other = engine.worker("other")
    client.send(InvokeFunction("math::add", data={"n": 1}, invocation_id=CALL_ID))
    outputs = other.send(InvokeFunction("math::add", data={"n": 2}, invocation_id=CALL_ID))
    assert messages_to(outputs, client.id) == [
        InvocationResult(
            CALL_ID, "math::add", error=ErrorBody("invocation_error", "channel closed")
        )
    ]
    assert len(messages_to(outputs, server.id)) == 1
    (reply,) = server.send(InvocationResult(CALL_ID, "math::add", result=2))
    assert isinstance(reply, Send)
    assert reply.connection_id == other.id


def test_any_connection_may_complete_a_pending_id(
    engine: Engine, pair: tuple[Worker, Worker]
) -> None:
    client, _ = pair
    bystander = engine.worker("bystander")
    client.send(InvokeFunction("math::add", data={}, invocation_id=CALL_ID))
    (reply,) = bystander.send(InvocationResult(CALL_ID, "math::add", result="from elsewhere"))
    assert result_of(reply).result == "from elsewhere"
    assert bystander.send(InvocationResult(CALL_ID, "math::add", result="again")) == []


def test_calls_started_counts_every_call_a_connection_waits_on(
    engine: Engine, pair: tuple[Worker, Worker]
) -> None:
    client, server = pair
    queue = engine.worker("queue")
    queue.send(RegisterFunction(id="engine::queue::enqueue"))
    started = engine.state.calls_started
    deliveries = [
        invocation_to(client.send(InvokeFunction("math::add", data={}, **fields)), executor.id)
        for fields, executor in (
            ({"invocation_id": CALL_ID}, server),
            ({"action": VoidAction()}, server),
            ({"invocation_id": None, "action": EnqueueAction("q")}, queue),
        )
    ]
    client.call("engine::functions::list", {})  # built-ins answer at once: never counted
    assert (started(client.id), started(server.id), started(queue.id)) == (3, 0, 0)
    assert started("not-a-connection") == 0
    answered = deliveries[0].invocation_id
    assert answered is not None
    # The routing shortcut and receive() both count a call out once.
    assert engine.state.route_result(server.id, answered, 1) is not False
    server.send(InvocationResult(answered, "math::add", result=1))
    assert started(client.id) == 2
    queue.disconnect()  # an executor that leaves ends the calls waiting on it
    assert started(client.id) == 1
    void_id = deliveries[1].invocation_id
    assert void_id is not None
    server.send(InvocationResult(void_id, "math::add", result=None))
    assert started(client.id) == 0


def test_calls_started_ends_with_the_connection(
    engine: Engine, pair: tuple[Worker, Worker]
) -> None:
    client, _ = pair
    for _ in range(3):
        client.send(InvokeFunction("math::add", data={}, action=VoidAction()))
    client.send(InvokeFunction("math::add", data={}, invocation_id=CALL_ID))
    assert engine.state.calls_started(client.id) == 4
    client.disconnect()
    assert engine.state.calls_started(client.id) == 0


# --- small protocol messages ----------------------------------------------------------------------


def test_ping_gets_pong_and_other_frames_are_ignored(engine: Engine) -> None:
    worker = engine.worker("w")
    assert worker.send(Ping()) == [Send(worker.id, Pong())]
    for ignored in (
        Pong(),
        WorkerRegistered(worker_id=worker.id),
        RegistrationRejected(code="X", namespace="default", owner_worker_id=""),
        UnregisterTriggerType(id="t"),
        UnknownMessage(type="observe", fields={}),
    ):
        assert worker.send(ignored) == []


def test_messages_from_unknown_connections_are_ignored(engine: Engine) -> None:
    assert engine.receive("no-such-connection", Ping()) == []
    assert engine.state.disconnect("no-such-connection") == []


# --- reattach (section 2.6) -----------------------------------------------------------------------


def _token(outputs: list[Output]) -> str:
    first = outputs[0]
    assert isinstance(first, Send)
    assert isinstance(first.message, WorkerRegistered)
    assert first.message.reattach_token is not None
    return first.message.reattach_token


def test_reattach_evicts_the_previous_connection(engine: Engine) -> None:
    old_id, old_outputs = engine.connect()
    old = Worker(engine, old_id)
    old.result("engine::workers::register", {"name": "phoenix"})
    old.send(RegisterFunction(id="svc::f"))
    client = engine.worker("client")
    client.send(InvokeFunction("svc::f", data={}, invocation_id=CALL_ID))

    new_id, _ = engine.connect()
    new = Worker(engine, new_id)
    outputs = new.send(
        Reattach(previous_worker_id=old_id.upper(), reattach_token=_token(old_outputs))
    )
    assert CloseConnection(old_id, drain=False) in outputs
    assert WorkerDisconnected(old_id, "phoenix", "default") in outputs
    assert messages_to(outputs, client.id) == [
        InvocationResult(
            CALL_ID, "svc::f", error=ErrorBody("invocation_stopped", "Invocation stopped")
        )
    ]
    assert old.send(Ping()) == []
    assert new.result("engine::workers::register", {"name": "phoenix"}) == {"success": True}
    assert new.send(RegisterFunction(id="svc::f")) == []
    assert new.send(InvocationResult(CALL_ID, "svc::f", result=1)) == []


@pytest.mark.parametrize("token", [None, "00000000-0000-0000-0000-000000000000", "nonsense"])
def test_reattach_needs_the_right_token(engine: Engine, token: str | None) -> None:
    old = engine.worker("phoenix")
    new_id, _ = engine.connect()
    outputs = engine.receive(new_id, Reattach(previous_worker_id=old.id, reattach_token=token))
    assert outputs == []
    assert old.send(Ping()) == [Send(old.id, Pong())]


def test_reattach_to_itself_or_an_unknown_or_invalid_id_is_ignored(engine: Engine) -> None:
    connection_id, outputs = engine.connect()
    token = _token(outputs)
    for previous in (connection_id, "7b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3e", "not a uuid"):
        assert engine.receive(connection_id, Reattach(previous, reattach_token=token)) == []


# --- built-in functions (section 7) ---------------------------------------------------------------


def test_builtins_need_object_input(engine: Engine) -> None:
    worker = engine.worker("w")
    assert worker.error("engine::functions::list", [1]) == ErrorBody(
        "deserialization_error",
        "Failed to deserialize input for engine::functions::list: invalid type: sequence, "
        "expected struct ListFunctionsInput",
    )
    assert worker.error("engine::functions::list", {"include_internal": "yes"}).message.endswith(
        'invalid type: string "yes", expected a boolean'
    )
    assert worker.error("engine::workers::info", {}).message.endswith("missing field `name`")


def test_builtin_replies_echo_the_callers_trace_fields(engine: Engine) -> None:
    worker = engine.worker("w")
    answer = worker.call("engine::functions::list", {}, traceparent="tp", baggage="b=1")
    assert answer is not None
    assert (answer.traceparent, answer.baggage) == ("tp", "b=1")


def test_builtins_resolve_only_in_default(engine: Engine) -> None:
    worker = engine.worker("w")
    assert worker.error("engine::functions::list", {}, namespace="orders") == ErrorBody(
        "function_not_found",
        "Function engine::functions::list not found in namespace orders. It is registered in "
        "namespace(s): default.",
    )


def test_functions_list_hides_internal_ids_and_sorts(engine: Engine) -> None:
    worker = engine.worker("w")
    worker.send(RegisterFunction(id="zeta::f"))
    worker.send(RegisterFunction(id="alpha::f", metadata={"internal": True}))
    worker.send(RegisterFunction(id="engine::queue::enqueue"))
    worker.send(RegisterFunction(id="mid::f", metadata={"internal": "true"}))
    assert function_ids(worker) == ["engine::queue::enqueue", "mid::f", "zeta::f"]
    everything = function_ids(worker, include_internal=True)
    assert "alpha::f" in everything
    assert "engine::workers::register" in everything
    assert everything == sorted(everything)


def test_functions_list_filters_and_summaries(engine: Engine) -> None:
    billing = engine.worker("billing", namespace="billing")
    billing.send(RegisterFunction(id="billing::charge", description="Charge a card"))
    shop = engine.worker("shop")
    shop.send(RegisterFunction(id="shop::cart", metadata={"v": 1}))
    assert billing.result("engine::functions::list", {"worker": "shop"})["functions"] == [
        {
            "function_id": "shop::cart",
            "namespace": "default",
            "worker_name": "shop",
            "metadata": {"v": 1},
        }
    ]
    assert function_ids(shop, workers=["billing", "shop"]) == ["billing::charge", "shop::cart"]
    assert function_ids(shop, prefix="bill") == ["billing::charge"]
    assert function_ids(shop, workers=[]) == ["billing::charge", "shop::cart"]


def test_functions_list_search_ranks_matches(engine: Engine) -> None:
    worker = engine.worker("w")
    for function_id, description in [
        ("a::about_cart", None),
        ("b::misc", "everything about the CART"),
        ("c::cart", None),
        ("cart::z", None),
        ("d::other", None),
    ]:
        worker.send(RegisterFunction(id=function_id, description=description))
    assert function_ids(worker, search="Cart") == ["c::cart", "cart::z", "a::about_cart", "b::misc"]


def test_function_worker_name_falls_back_to_the_first_segment(engine: Engine) -> None:
    anonymous = engine.worker(None)
    anonymous.send(RegisterFunction(id="math::add"))
    listed = anonymous.result("engine::functions::list", {"prefix": "math"})["functions"]
    assert listed[0]["worker_name"] == "math"


def test_functions_info_single_and_batch(engine: Engine) -> None:
    worker = engine.worker("w")
    worker.send(
        RegisterFunction(
            id="math::add",
            description="Add",
            request_format={"type": "object"},
            response_format={"type": "number"},
        )
    )
    detail = {
        "function_id": "math::add",
        "namespace": "default",
        "worker_name": "w",
        "description": "Add",
        "request_schema": {"type": "object"},
        "response_schema": {"type": "number"},
        "registered_triggers": [],
    }
    assert worker.result("engine::functions::info", {"function_id": "math::add"}) == detail
    batch = worker.result(
        "engine::functions::info", {"function_ids": ["math::add", "nope", "math::add"]}
    )
    assert batch == {"functions": [detail, {"function_id": "nope", "error": "not_found"}]}


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (
            {"function_id": "a", "function_ids": ["a"]},
            "INVALID_ARGUMENTS",
            "pass either `function_id` or `function_ids`, not both",
        ),
        ({}, "INVALID_ARGUMENTS", "missing field `function_id` (or `function_ids` for a batch)"),
        (
            {"function_ids": []},
            "INVALID_ARGUMENTS",
            "`function_ids` must be a non-empty array of function ids",
        ),
        (
            {"function_ids": [f"f{n}" for n in range(33)]},
            "INVALID_ARGUMENTS",
            "too many function_ids (max 32)",
        ),
        ({"function_id": "nope::f"}, "NOT_FOUND", "Function 'nope::f' is not registered."),
        (
            {"function_id": "dup::f"},
            "NOT_FOUND",
            "Function 'dup::f' is ambiguous: it is registered in namespace(s): a, b. Pass "
            "`namespace` to select one.",
        ),
        (
            {"function_id": "dup::f", "namespace": "c"},
            "NOT_FOUND",
            "Function 'dup::f' is not registered.",
        ),
    ],
)
def test_functions_info_errors(engine: Engine, data: Any, code: str, message: str) -> None:
    for namespace in ("b", "a"):
        engine.worker(f"w{namespace}", namespace=namespace).send(RegisterFunction(id="dup::f"))
    assert engine.worker("caller").error("engine::functions::info", data) == ErrorBody(
        code, message
    )


def test_functions_info_resolves_a_unique_namespace(engine: Engine) -> None:
    engine.worker("w", namespace="orders").send(RegisterFunction(id="orders::f"))
    caller = engine.worker("caller")
    info = caller.result("engine::functions::info", {"function_id": "orders::f"})
    assert info["namespace"] == "orders"


def test_workers_list_shows_workers_with_a_pid_and_the_engine(engine: Engine) -> None:
    engine.worker("with-pid")
    engine.worker("without-pid", pid=None)
    caller = engine.worker(None)
    workers = caller.result("engine::workers::list", {})["workers"]
    names = [w["name"] for w in workers]
    display_names = [w["name"] or w["id"] for w in workers]
    assert display_names == sorted(display_names)
    assert "without-pid" not in names
    assert caller.id in [w["id"] for w in workers]
    engine_entries = [w for w in workers if w["runtime"] == "engine"]
    assert {w["name"] for w in engine_entries} == {"iii-worker-manager", "iii-engine-functions"}
    for entry in engine_entries:
        assert entry["status"] == "available"
        assert entry["isolation"] == "in-process"
        assert entry["version"] == "9.9.9"
        assert entry["namespace"] == "default"
        assert entry["connected_at_ms"] == 1_700_000_000_000
        assert entry["ip_address"] is None
    assert caller.result("engine::workers::list", {"runtime": "engine", "status": "connected"}) == {
        "workers": []
    }
    connected = caller.result("engine::workers::list", {"status": "connected"})["workers"]
    assert [w["name"] for w in connected] == [None, "with-pid"]  # the unnamed one sorts by id


def test_workers_info_shapes_and_errors(engine: Engine) -> None:
    svc = engine.worker("svc", namespace="orders")
    svc.send(RegisterFunction(id="orders::b"))
    svc.send(RegisterFunction(id="orders::a"))
    engine.worker("svc", namespace="billing")
    caller = engine.worker("caller")
    info = caller.result("engine::workers::info", {"name": "svc", "namespace": "orders"})
    assert info["worker"]["pid"] == 7
    assert info["worker"]["internal"] is False
    assert [f["function_id"] for f in info["functions"]] == ["orders::a", "orders::b"]
    assert info["trigger_types"] == []
    assert info["registered_triggers"] == []
    assert caller.error("engine::workers::info", {"name": "svc"}) == ErrorBody(
        "NOT_FOUND",
        "Worker 'svc' is ambiguous: it is connected in namespace(s): billing, orders. Pass "
        "`namespace` to disambiguate.",
    )
    assert caller.error("engine::workers::info", {"name": "svc", "namespace": "x"}) == ErrorBody(
        "NOT_FOUND",
        "Worker 'svc' is not connected in the requested namespace; it is connected in "
        "namespace(s): billing, orders.",
    )
    assert caller.error("engine::workers::info", {"name": "ghost"}) == ErrorBody(
        "NOT_FOUND", "Worker 'ghost' is not connected."
    )
    engine_info = caller.result("engine::workers::info", {"name": "iii-engine-functions"})
    assert engine_info["worker"]["internal"] is True
    assert "engine::workers::register" in [f["function_id"] for f in engine_info["functions"]]
    assert {t["id"] for t in engine_info["trigger_types"]} == {
        "engine::functions-available",
        "engine::workers-available",
    }


# --- trigger types and bindings (sections 3.1-3.4, 5, 7) ------------------------------------------


def test_bindings_park_until_a_provider_appears(engine: Engine) -> None:
    owner = engine.worker("owner")
    binding = RegisterTrigger(
        id="b1", trigger_type="webhook", function_id="svc::f", config={"url": "/x"}
    )
    assert owner.send(binding) == []
    listed = owner.result("engine::registered-triggers::list", {})
    assert listed == {"registered_triggers": []}

    provider = engine.worker("provider")
    outputs = provider.send(RegisterTriggerType(id="webhook", description="Webhooks"))
    assert messages_to(outputs, provider.id) == [binding]
    listed = owner.result("engine::registered-triggers::list", {})["registered_triggers"]
    assert listed == [
        {
            "id": "b1",
            "trigger_type": "webhook",
            "function_id": "svc::f",
            "worker_name": "owner",
            "config": {"url": "/x"},
            "config_summary": '{"url":"/x"}',
        }
    ]


def test_live_bindings_are_sent_to_the_provider_with_namespaces(engine: Engine) -> None:
    provider = engine.worker("provider", namespace="hooks")
    provider.send(RegisterTriggerType(id="webhook", description="Webhooks"))
    owner = engine.worker("owner", namespace="hooks")
    outputs = owner.send(
        RegisterTrigger(
            id="b1",
            trigger_type="webhook",
            function_id="svc::f",
            config=None,
            metadata={"m": 1},
            namespace="orders",
        )
    )
    assert messages_to(outputs, provider.id) == [
        RegisterTrigger(
            id="b1",
            trigger_type="webhook",
            function_id="svc::f",
            config=None,
            metadata={"m": 1},
            namespace="orders",
            trigger_namespace="hooks",
        )
    ]


def test_explicit_trigger_namespace_is_strict(engine: Engine) -> None:
    engine.worker("provider").send(RegisterTriggerType(id="webhook", description="d"))
    owner = engine.worker("owner")
    outputs = owner.send(
        RegisterTrigger(
            id="b1", trigger_type="webhook", function_id="f", config={}, trigger_namespace="x"
        )
    )
    assert [o for o in outputs if isinstance(o, Send)] == []


def test_blank_binding_namespaces_are_refused(engine: Engine) -> None:
    owner = engine.worker("owner")
    outputs = owner.send(
        RegisterTrigger(id="b1", trigger_type="t", function_id="f", config={}, namespace=" ")
    )
    (result,) = messages_to(outputs, owner.id)
    assert isinstance(result, TriggerRegistrationResult)
    assert result.error is not None
    assert result.error.code == "INVALID_NAMESPACE"


def test_reregistering_a_binding_replaces_it(engine: Engine) -> None:
    provider = engine.worker("provider")
    provider.send(RegisterTriggerType(id="webhook", description="d"))
    owner = engine.worker("owner")
    owner.send(RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config=1))
    outputs = owner.send(
        RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config=2)
    )
    assert messages_to(outputs, provider.id) == [
        UnregisterTrigger(id="b1", trigger_type="webhook"),
        RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config=2),
    ]


def test_a_new_provider_takes_over_and_redelivers(engine: Engine) -> None:
    fallback = engine.worker("fallback")
    fallback.send(RegisterTriggerType(id="webhook", description="default one"))
    owner = engine.worker("owner", namespace="orders")
    binding = RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config={})
    owner.send(binding)
    local = engine.worker("local", namespace="orders")
    outputs = local.send(RegisterTriggerType(id="webhook", description="orders one"))
    assert messages_to(outputs, fallback.id) == [UnregisterTrigger(id="b1", trigger_type="webhook")]
    assert messages_to(outputs, local.id) == [
        RegisterTrigger(
            id="b1", trigger_type="webhook", function_id="f", config={}, trigger_namespace="orders"
        )
    ]
    replacement = engine.worker("replacement", namespace="orders")
    outputs = replacement.send(RegisterTriggerType(id="webhook", description="newer"))
    assert len(messages_to(outputs, replacement.id)) == 1
    assert messages_to(outputs, local.id) == []


def test_provider_leaving_falls_back_or_parks(engine: Engine) -> None:
    fallback = engine.worker("fallback")
    fallback.send(RegisterTriggerType(id="webhook", description="default one"))
    local = engine.worker("local", namespace="orders")
    local.send(RegisterTriggerType(id="webhook", description="orders one"))
    owner = engine.worker("owner", namespace="orders")
    owner.send(RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config={}))
    outputs = local.disconnect()
    assert messages_to(outputs, fallback.id) == [
        RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config={})
    ]
    fallback.disconnect()
    assert owner.result("engine::registered-triggers::list", {}) == {"registered_triggers": []}
    assert owner.result("engine::triggers::list", {}) == {"triggers": []}


def test_owner_leaving_removes_its_bindings(engine: Engine) -> None:
    provider = engine.worker("provider")
    provider.send(RegisterTriggerType(id="webhook", description="d"))
    owner = engine.worker("owner")
    owner.send(RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config={}))
    outputs = owner.disconnect()
    assert messages_to(outputs, provider.id) == [UnregisterTrigger(id="b1", trigger_type="webhook")]


def test_unregister_trigger_notifies_the_provider_and_is_idempotent(engine: Engine) -> None:
    provider = engine.worker("provider")
    provider.send(RegisterTriggerType(id="webhook", description="d"))
    owner = engine.worker("owner")
    owner.send(RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config={}))
    other = engine.worker("other")
    outputs = other.send(UnregisterTrigger(id="b1"))
    assert messages_to(outputs, provider.id) == [UnregisterTrigger(id="b1", trigger_type="webhook")]
    assert other.send(UnregisterTrigger(id="b1")) == []


def test_provider_error_parks_the_binding_and_tells_the_owner(engine: Engine) -> None:
    provider = engine.worker("provider")
    provider.send(RegisterTriggerType(id="webhook", description="d"))
    owner = engine.worker("owner")
    owner.send(RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config={}))
    failure = TriggerRegistrationResult(
        id="b1",
        trigger_type="webhook",
        function_id="f",
        error=ErrorBody("trigger_registration_failed", "bad url"),
    )
    assert engine.worker("stranger").send(failure) == []  # only the provider is listened to
    outputs = provider.send(failure)
    assert messages_to(outputs, owner.id) == [failure]
    assert owner.result("engine::registered-triggers::list", {}) == {"registered_triggers": []}
    success = TriggerRegistrationResult(id="b1", trigger_type="webhook", function_id="f")
    assert provider.send(success) == []


def test_trigger_type_listing_and_info(engine: Engine) -> None:
    provider = engine.worker("provider")
    provider.send(
        RegisterTriggerType(
            id="webhook",
            description="Webhooks",
            trigger_request_format={"type": "object"},
            call_request_format={"type": "string"},
        )
    )
    owner = engine.worker("owner")
    owner.send(RegisterTrigger(id="b1", trigger_type="webhook", function_id="f", config={}))
    assert owner.result("engine::triggers::list", {}) == {
        "triggers": [
            {
                "id": "webhook",
                "namespace": "default",
                "worker_name": "provider",
                "description": "Webhooks",
            }
        ]
    }
    internal = owner.result("engine::triggers::list", {"include_internal": True})["triggers"]
    assert {t["id"]: t["worker_name"] for t in internal if t["id"].startswith("engine::")} == {
        "engine::functions-available": "iii-engine-functions",
        "engine::workers-available": "iii-engine-functions",
    }
    assert owner.result("engine::triggers::info", {"id": "webhook"}) == {
        "id": "webhook",
        "namespace": "default",
        "worker_name": "provider",
        "description": "Webhooks",
        "configuration_schema": {"type": "object"},
        "request_schema": {"type": "string"},
        "instance_count": 1,
    }
    assert owner.error("engine::triggers::info", {"id": "webhook", "namespace": "x"}) == ErrorBody(
        "NOT_FOUND", "Trigger type 'webhook' is not registered in namespace 'x'."
    )


def test_registered_trigger_info(engine: Engine) -> None:
    provider = engine.worker("provider")
    provider.send(RegisterTriggerType(id="webhook", description="d"))
    provider.send(RegisterFunction(id="svc::f"))
    long_config = {"key": "v" * 100}
    provider.send(
        RegisterTrigger(
            id="b1", trigger_type="webhook", function_id="svc::f", config=long_config, metadata=1
        )
    )
    summary = provider.result("engine::registered-triggers::list", {"search": "SVC"})
    assert summary["registered_triggers"][0]["config_summary"] == ('{"key":"' + "v" * 72 + "…")
    info = provider.result("engine::registered-triggers::info", {"id": "b1"})
    assert info["metadata"] == 1
    assert info["trigger"]["instance_count"] == 1
    assert info["function"]["registered_triggers"] == [
        {"id": "b1", "trigger_type": "webhook", "config": long_config}
    ]
    assert provider.error("engine::registered-triggers::info", {"id": "nope"}) == ErrorBody(
        "NOT_FOUND", "Registered trigger 'nope' was not found."
    )


def test_register_trigger_builtin_waits_for_the_worker_provider(engine: Engine) -> None:
    provider = engine.worker("provider")
    provider.send(RegisterTriggerType(id="webhook", description="d"))
    caller = engine.worker("caller")
    outputs = caller.send(
        InvokeFunction(
            "engine::register_trigger",
            data={"trigger_type": "webhook", "function_id": "svc::f", "config": {"a": 1}},
            invocation_id=CALL_ID,
        )
    )
    request = registration_to(outputs, provider.id)
    assert isinstance(request, RegisterTrigger)
    assert messages_to(outputs, caller.id) == []
    assert TimerArmed(engine.now + 10.0) in outputs
    (reply,) = provider.send(
        TriggerRegistrationResult(id=request.id, trigger_type="webhook", function_id="svc::f")
    )
    assert reply == Send(
        caller.id, InvocationResult(CALL_ID, "engine::register_trigger", result={"id": request.id})
    )
    caller.disconnect()  # durable: survives its creator
    assert len(provider.result("engine::registered-triggers::list", {})["registered_triggers"]) == 1


def test_register_trigger_builtin_reports_provider_errors_and_timeouts(engine: Engine) -> None:
    provider = engine.worker("provider")
    provider.send(RegisterTriggerType(id="webhook", description="d"))
    caller = engine.worker("caller")
    data = {"trigger_type": "webhook", "function_id": "svc::f"}
    outputs = caller.send(
        InvokeFunction("engine::register_trigger", data=data, invocation_id=CALL_ID)
    )
    request = registration_to(outputs, provider.id)
    (reply,) = provider.send(
        TriggerRegistrationResult(
            id=request.id,
            trigger_type="webhook",
            function_id="svc::f",
            error=ErrorBody("bad_config", "no"),
        )
    )
    assert result_of(reply).error == ErrorBody("trigger_registration_failed", "bad_config: no")

    outputs = caller.send(
        InvokeFunction("engine::register_trigger", data=data, invocation_id=CALL_ID)
    )
    assert messages_to(outputs, caller.id) == []
    assert engine.advance(9.9) == []
    (timeout_reply,) = engine.advance(0.1)
    assert result_of(timeout_reply).result == {"id": registration_to(outputs, provider.id).id}


def test_register_trigger_builtin_parks_without_a_provider(engine: Engine) -> None:
    caller = engine.worker("caller")
    result = caller.result(
        "engine::register_trigger", {"trigger_type": "cron", "function_id": "svc::f"}
    )
    assert canonical_uuid(result["id"]) == result["id"]
    assert caller.result("engine::unregister_trigger", {"id": result["id"]}) == {"removed": True}
    assert caller.result("engine::unregister_trigger", {"id": result["id"]}) == {"removed": False}
    assert caller.error("engine::register_trigger", {"trigger_type": "cron"}).message.endswith(
        "missing field `function_id`"
    )


def test_workers_available_fires_on_connect_register_and_leave(engine: Engine) -> None:
    watcher = engine.worker("watcher")
    watcher.send(RegisterFunction(id="watch::workers"))
    watcher.send(
        RegisterTrigger(
            id="w1",
            trigger_type="engine::workers-available",
            function_id="watch::workers",
            config={},
            metadata={"tag": 1},
        )
    )
    connection_id, outputs = engine.connect()
    (event,) = messages_to(outputs, watcher.id)
    assert isinstance(event, InvokeFunction)
    assert event.data == {"event": "worker_connected", "worker_id": connection_id}
    assert event.metadata == {"tag": 1}
    assert event.invocation_id is not None
    assert watcher.send(InvocationResult(event.invocation_id, "watch::workers")) == []
    newcomer = Worker(engine, connection_id)
    newcomer.call("engine::workers::register", {"name": "n"})
    (updated,) = list(messages_to(newcomer.outputs, watcher.id))
    assert isinstance(updated, InvokeFunction)
    assert updated.data == {"event": "worker_metadata_updated", "worker_id": connection_id}
    (left,) = messages_to(newcomer.disconnect(), watcher.id)
    assert isinstance(left, InvokeFunction)
    assert left.data == {"event": "worker_disconnected", "worker_id": connection_id}


def test_functions_available_fires_after_a_change_at_the_next_poll() -> None:
    engine = Engine(poll=5.0)
    watcher = engine.worker("watcher")
    watcher.send(RegisterFunction(id="watch::functions"))
    watcher.send(
        RegisterTrigger(
            id="f1",
            trigger_type="engine::functions-available",
            function_id="watch::functions",
            config={},
        )
    )
    first = engine.advance(5.0)
    (event,) = messages_to(first, watcher.id)
    assert isinstance(event, InvokeFunction)
    assert event.data["event"] == "functions_changed"
    listed = {f["function_id"] for f in event.data["functions"]}
    assert {"watch::functions", "engine::functions::list"} <= listed
    assert messages_to(engine.advance(5.0), watcher.id) == []
    watcher.send(RegisterFunction(id="watch::more"))
    watcher.send(UnregisterFunction(id="watch::more"))
    assert messages_to(engine.advance(5.0), watcher.id) == []  # coalesced: no net change
    watcher.send(RegisterFunction(id="watch::more"))
    assert len(messages_to(engine.advance(5.0), watcher.id)) == 1


# --- the routing fast paths -----------------------------------------------------------------------


def routed_fast(engine: Engine, connection_id: str, message: Message) -> list[Output] | None:
    """What ``route_invocation``/``route_result`` do with ``message``, as the outputs
    ``receive`` would give; ``None`` when they decline it (or it is not theirs to take)."""
    state = engine.state
    if (
        isinstance(message, InvokeFunction)
        and message.action is None
        and message.invocation_id is not None
    ):
        data = copy.deepcopy(message.data)  # the fast path adds the caller's id in place
        routed = state.route_invocation(
            connection_id,
            message.function_id,
            data,
            message.invocation_id,
            message.traceparent,
            message.baggage,
            message.metadata,
            message.namespace,
        )
        if routed is None:
            return None
        executor_id, traceparent, baggage = routed
        delivery = InvokeFunction(
            message.function_id,
            data=data,
            invocation_id=message.invocation_id,
            traceparent=traceparent,
            baggage=baggage,
            metadata=message.metadata,
        )
        return [Send(executor_id, delivery)]
    if isinstance(message, InvocationResult) and message.error is None:
        caller = state.route_result(connection_id, message.invocation_id, message.result)
        if caller is False:
            return None
        if caller is True:
            return []
        answer = InvocationResult(
            caller.invocation_id,
            caller.function_id,
            result=message.result,
            traceparent=caller.traceparent,
            baggage=caller.baggage,
        )
        return [Send(caller.connection.id, answer)]
    return None


class Twins:
    """Two identical engines: one takes every message through ``receive``, the other through
    the fast paths where they accept it. Every step must give both the same outputs."""

    def __init__(self) -> None:
        self.slow = Engine()
        self.fast = Engine()
        self.taken_fast = 0

    def worker(self, name: str, *, namespace: str | None = None) -> str:
        slow = self.slow.worker(name, namespace=namespace)
        fast = self.fast.worker(name, namespace=namespace)
        assert slow.id == fast.id
        assert slow.outputs == fast.outputs
        return slow.id

    def send(self, connection_id: str, message: Message, *, fast: bool) -> list[Output]:
        expected = self.slow.receive(connection_id, message)
        before = self.fast.state.statistics()
        got = routed_fast(self.fast, connection_id, message)
        assert (got is not None) == fast, message
        if got is None:
            assert self.fast.state.statistics() == before  # declining changed nothing
            got = self.fast.receive(connection_id, message)
        else:
            self.taken_fast += 1
        assert got == expected, message
        assert self.fast.state.statistics() == self.slow.state.statistics()
        return expected


def test_the_fast_paths_do_what_receive_does() -> None:
    twins = Twins()
    caller = twins.worker("caller")
    server = twins.worker("server")
    orders = twins.worker("orders", namespace="orders")
    queue = twins.worker("queue")
    late = twins.worker("late")
    for connection_id, function_id in (
        (server, "svc::echo"),
        (orders, "svc::echo"),
        (queue, "engine::queue::enqueue"),
        (late, "late::fn"),
    ):
        twins.send(connection_id, RegisterFunction(id=function_id), fast=False)
    ids = (str(uuid.UUID(int=(0xABCDEF << 96) + n)) for n in itertools.count())

    def call(function_id: str, data: Any = None, *, fast: bool, **fields: Any) -> str:
        invocation_id = fields.pop("invocation_id", None) or next(ids)
        message = InvokeFunction(function_id, data=data, invocation_id=invocation_id, **fields)
        twins.send(caller, message, fast=fast)
        return invocation_id

    def answer(sender: str, invocation_id: str, result: Any = None, **fields: Any) -> None:
        fast = fields.pop("fast")
        message = InvocationResult(invocation_id, "svc::echo", result=result, **fields)
        twins.send(sender, message, fast=fast)

    # The common case, with every optional field, and data of every shape.
    first = call("svc::echo", {"a": 1}, fast=True)
    answer(server, first, {"x": 1}, fast=True)
    second = call("svc::echo", [1, 2], fast=True, traceparent="tp", metadata={"m": 1})
    answer(server, second, None, traceparent="other", baggage="o=1", fast=True)
    third = call("svc::echo", {"_caller_worker_id": "spoof", "b": 2}, fast=True, baggage="k=v")
    call("svc::echo", "text", fast=False, invocation_id=third)  # same id again: channel closed
    answer(server, third, 3, fast=True)
    answer(server, third, 3, fast=False)  # settled already
    fourth = call("svc::echo", None, fast=True, namespace="orders")
    answer(orders, fourth, error=ErrorBody("boom", "failed"), fast=False)
    call("svc::echo", {}, fast=True, namespace="default")
    # What the fast path leaves to receive().
    call("svc::echo", {}, fast=False, namespace=" ")
    call("nope::fn", {}, fast=False)
    call("engine::functions::list", {}, fast=False)
    call("svc::echo", {}, fast=False, invocation_id="not-a-uuid")
    upper = call("svc::echo", {}, fast=False, invocation_id=next(ids).upper())
    answer(server, upper.lower(), 1, fast=True)
    lenient = call("svc::echo", {}, fast=True)
    answer(server, "{" + lenient + "}", 1, fast=False)
    answer(server, next(ids), 1, fast=False)  # unknown id
    void = twins.send(caller, InvokeFunction("svc::echo", data={}, action=VoidAction()), fast=False)
    answer(server, invocation_to(void, server).invocation_id or "", 1, fast=True)
    enqueued = twins.send(
        caller,
        InvokeFunction("jobs::run", data={}, invocation_id=next(ids), action=EnqueueAction("q")),
        fast=False,
    )
    answer(queue, invocation_to(enqueued, queue).invocation_id or "", None, fast=False)
    # Connections that are closing: the late worker's name is taken, so it is told to close.
    in_flight = next(ids)
    twins.send(late, InvokeFunction("svc::echo", data={}, invocation_id=in_flight), fast=True)
    late_register = InvokeFunction(
        "engine::workers::register", data={"name": "server"}, invocation_id=next(ids)
    )
    twins.send(late, late_register, fast=False)
    twins.send(late, InvokeFunction("svc::echo", data={}, invocation_id=next(ids)), fast=False)
    answer(server, in_flight, 1, fast=True)  # its caller is closing: nobody is answered
    call("late::fn", {}, fast=False)  # the executor is closing
    answer(late, next(ids), 1, fast=False)
    assert twins.taken_fast == 13


def test_route_invocation_takes_ownership_of_dict_data(engine: Engine) -> None:
    client = engine.worker("client")
    server = engine.worker("server")
    server.send(RegisterFunction(id="svc::echo"))
    data = {"n": 1}
    routed = engine.state.route_invocation(
        client.id, "svc::echo", data, CALL_ID, None, None, None, None
    )
    assert routed == (server.id, None, None)
    assert data == {"n": 1, "_caller_worker_id": client.id}


# --- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baggage", "expected"),
    [
        (None, "iii.function.id=math::add"),
        ("", "iii.function.id=math::add"),
        ("a=1", "a=1,iii.function.id=math::add"),
        (" a=1 , iii.function.id=old;prop , b=2", "a=1,b=2,iii.function.id=math::add"),
    ],
)
def test_baggage_gets_the_target_function_id(baggage: str | None, expected: str) -> None:
    assert baggage_with_function_id(baggage, "math::add") == expected


def test_baggage_values_are_percent_encoded() -> None:
    assert baggage_with_function_id(None, "a b,c") == "iii.function.id=a%20b%2Cc"


def test_announced_and_disconnected_events_name_the_worker(engine: Engine) -> None:
    worker = engine.worker("svc", namespace="orders")
    assert WorkerAnnounced(worker.id, "svc", "orders") in worker.outputs
    assert WorkerDisconnected(worker.id, "svc", "orders") in worker.disconnect()


def test_grace_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="grace"):
        EngineState(grace=-1)


# --- trace context as the engine hands it on -----------------------------------------------------

_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
_SPAN_ID = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("sent", "delivered"),
    [
        (None, None),
        (f"00-{_TRACE_ID}-{_SPAN_ID}-01", f"00-{_TRACE_ID}-{_SPAN_ID}-01"),
        (f" 00-{_TRACE_ID}-{_SPAN_ID}-01- ", f"00-{_TRACE_ID}-{_SPAN_ID}-01"),
        (f"00-{_TRACE_ID}-{_SPAN_ID}-02", f"00-{_TRACE_ID}-{_SPAN_ID}-00"),
        (f"00-{_TRACE_ID}-{_SPAN_ID}-03", None),
        (f"00-{_TRACE_ID}-{_SPAN_ID}-01-extra", None),
        (f"01-{_TRACE_ID}-{_SPAN_ID}-ff-extra", f"00-{_TRACE_ID}-{_SPAN_ID}-01"),
        (f"ff-{_TRACE_ID}-{_SPAN_ID}-01", None),
        (f"00-abc-{_SPAN_ID}-01", f"00-{'abc':0>32}-{_SPAN_ID}-01"),
        (f"00-+abc-{_SPAN_ID}-01", f"00-{'abc':0>32}-{_SPAN_ID}-01"),
        (f"00-{'0' * 32}-{_SPAN_ID}-01", None),
        (f"00-{_TRACE_ID}-{'0' * 16}-01", None),
        (f"00-{_TRACE_ID.upper()}-{_SPAN_ID}-01", None),
        (f"00-{_TRACE_ID}0-{_SPAN_ID}-01", None),
        (f"00-{_TRACE_ID}-{_SPAN_ID}-100", None),
        (f"00-{_TRACE_ID}--{_SPAN_ID}-01", None),
        ("00-not-a-trace-01", None),
    ],
)
def test_a_traceparent_is_handed_on_as_the_engines_propagator_writes_it(
    sent: str | None, delivered: str | None
) -> None:
    assert engine_traceparent(sent) == delivered
