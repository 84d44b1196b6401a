"""The dev engine core's plugin interface, exercised by a small in-process worker of the tests'.

``ticker::after`` answers later: it arms a timer, and when the timer fires it calls a worker's
function on the engine's own behalf, fires its ``ticker::tick`` trigger type, and answers its
caller with what the worker returned. That is the shape of every built-in worker to come (cron
calls a function at a deadline, the HTTP trigger waits for a function's answer, queue retries
wait and call again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from iii_trio._protocol._messages import (
    JSON,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
)
from iii_trio.testing._engine import EnginePlugin, EngineState, Output
from iii_trio.testing._engine._conditions import run_if_condition_allows
from iii_trio.testing._engine._model import Binding, Connection
from iii_trio.testing._engine._plugin import (
    DEFERRED,
    BuiltinFailure,
    BuiltinFunction,
    Call,
    Deferred,
    Input,
)
from iii_trio.testing._engine._timers import Timer

from .engine_driver import Engine, Worker, invocation_to, messages_to


class Ticker(EnginePlugin):
    name = "test-ticker"

    def __init__(self) -> None:
        self.disconnected: list[str] = []
        self._engine: EngineState

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    def functions(self) -> Mapping[str, BuiltinFunction]:
        return {"ticker::after": BuiltinFunction(self._after, "Call a function later", "After")}

    def trigger_types(self) -> Mapping[str, str]:
        return {"ticker::tick": "Fires whenever a ticker::after timer does"}

    def worker_disconnected(self, connection: Connection, out: list[Output]) -> None:
        self.disconnected.append(connection.id)

    def _after(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        target = data.required_str("function_id")
        seconds = data.any("seconds")
        if not isinstance(seconds, int):
            raise BuiltinFailure("INVALID_ARGUMENTS", "seconds must be an integer")
        payload = data.any("payload")

        def fire(now: float, out: list[Output]) -> None:
            self._engine.fire_trigger("ticker::tick", {"at": now}, out)
            function = self._engine.functions.get(("default", target))
            if function is None or function.owner is None:
                error = ErrorBody("function_not_found", target)
                self._engine.answer(call.caller, out, error=error)
                return

            def reply(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
                self._engine.answer(call.caller, out, result={"got": result}, error=error)

            self._engine.start_call(function.owner, target, payload, out, then=reply)

        self._engine.arm(call.now + seconds, fire, out)
        return DEFERRED


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
def engine(ticker: Ticker) -> Engine:
    return Engine(plugins=[ticker])


def doubler(engine: Engine) -> Worker:
    worker = engine.worker("doubler")
    worker.send(RegisterFunction(id="svc::double"))
    return worker


def test_a_plugin_is_an_in_process_worker_with_its_functions_and_trigger_types(
    engine: Engine,
) -> None:
    caller = engine.worker("caller")
    workers = caller.result("engine::workers::list", {})["workers"]
    (listed,) = [w for w in workers if w["name"] == "test-ticker"]
    assert listed["function_count"] == 1
    assert listed["isolation"] == "in-process"
    info = caller.result("engine::workers::info", {"name": "test-ticker"})
    assert [f["function_id"] for f in info["functions"]] == ["ticker::after"]
    assert [t["id"] for t in info["trigger_types"]] == ["ticker::tick"]
    described = caller.result("engine::functions::info", {"function_id": "ticker::after"})
    assert described["description"] == "Call a function later"
    assert described["worker_name"] == "ticker"  # the first segment, as for any built-in
    triggers = caller.result("engine::triggers::list", {})["triggers"]
    (tick,) = [t for t in triggers if t["id"] == "ticker::tick"]
    assert tick["worker_name"] == "test-ticker"


def test_a_worker_cannot_take_over_a_plugin_function(engine: Engine) -> None:
    caller = engine.worker("caller")
    workers = caller.result("engine::workers::list", {})["workers"]
    (plugin_id,) = [w["id"] for w in workers if w["name"] == "test-ticker"]
    rejected = caller.send(RegisterFunction(id="ticker::after"))
    (message,) = messages_to(rejected, caller.id)
    assert message == RegistrationRejected(
        code="FUNCTION_NAMESPACE_CONFLICT",
        namespace="default",
        owner_worker_id=plugin_id,
        function_id="ticker::after",
    )


def test_a_deferred_call_continues_through_a_timer_and_an_engine_started_call(
    engine: Engine,
) -> None:
    executor = doubler(engine)
    caller = engine.worker("caller")
    asked = {"function_id": "svc::double", "seconds": 2, "payload": 21}
    assert caller.call("ticker::after", asked, invocation_id=CALL) is None
    assert engine.state.next_deadline() == engine.now + 2
    assert engine.advance(1.0) == []
    fired = engine.advance(1.0)
    delivery = invocation_to(fired, executor.id)
    assert delivery.function_id == "svc::double"
    assert delivery.data == 21
    assert delivery.invocation_id is not None
    assert messages_to(fired, caller.id) == []
    # The shell's shortcut leaves a continued call to receive().
    assert engine.state.route_result(executor.id, delivery.invocation_id, 42) is False
    answered = executor.send(InvocationResult(delivery.invocation_id, "svc::double", result=42))
    (reply,) = messages_to(answered, caller.id)
    assert reply == InvocationResult(CALL, "ticker::after", result={"got": 42})
    assert engine.state.statistics().pending_invocations == 0


def test_the_continuation_hears_when_the_executor_goes_away(engine: Engine) -> None:
    executor = doubler(engine)
    caller = engine.worker("caller")
    asked = {"function_id": "svc::double", "seconds": 1, "payload": 1}
    caller.call("ticker::after", asked, invocation_id=CALL)
    invocation_to(engine.advance(1.0), executor.id)
    gone = executor.disconnect()
    (reply,) = messages_to(gone, caller.id)
    assert isinstance(reply, InvocationResult)
    assert reply.error == ErrorBody("invocation_stopped", "Invocation stopped")


def test_a_plugin_fires_its_trigger_type_to_every_binding(engine: Engine) -> None:
    listener = engine.worker("listener")
    listener.send(RegisterFunction(id="listener::on-tick"))
    listener.send(
        RegisterTrigger(
            id="b1", trigger_type="ticker::tick", function_id="listener::on-tick", config={}
        )
    )
    caller = engine.worker("caller")
    caller.call("ticker::after", {"function_id": "nobody::home", "seconds": 3})
    fired = engine.advance(3.0)
    delivered = invocation_to(fired, listener.id)
    assert delivered == InvokeFunction(
        "listener::on-tick", data={"at": engine.now}, invocation_id=delivered.invocation_id
    )
    (reply,) = messages_to(fired, caller.id)
    assert isinstance(reply, InvocationResult)
    assert reply.error == ErrorBody("function_not_found", "nobody::home")


def test_a_plugin_function_failure_is_its_callers_error(engine: Engine) -> None:
    caller = engine.worker("caller")
    error = caller.error("ticker::after", {"function_id": "x", "seconds": "soon"})
    assert error == ErrorBody("INVALID_ARGUMENTS", "seconds must be an integer")
    error = caller.error("ticker::after", [1])
    assert error.code == "deserialization_error"
    assert "expected struct After" in error.message


def test_a_plugin_follows_worker_events(engine: Engine, ticker: Ticker) -> None:
    worker = engine.worker("leaving")
    worker.disconnect()
    assert ticker.disconnected == [worker.id]


def test_two_plugins_cannot_provide_the_same_function() -> None:
    with pytest.raises(ValueError, match="ticker::after"):
        EngineState(plugins=[Ticker(), Ticker()])


class Alarm(EnginePlugin):
    """Provides ``alarm``: each binding's function is called once, ``seconds`` after the
    binding goes live; what it answers is kept in :attr:`answers`."""

    name = "test-alarm"

    def __init__(self) -> None:
        self.answers: list[tuple[str, JSON, ErrorBody | None]] = []
        self.stopped: list[str] = []
        self._timers: dict[str, Timer] = {}
        self._engine: EngineState

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    def trigger_types(self) -> Mapping[str, str]:
        return {"alarm": "Calls the bound function once, after config.seconds"}

    def check_binding(self, binding: Binding) -> None:
        config = binding.config
        if not isinstance(config, dict) or not isinstance(config.get("seconds"), int):
            raise BuiltinFailure("INVALID_ARGUMENTS", "seconds is required for alarm triggers")

    def start_binding(self, binding: Binding, out: list[Output]) -> None:
        assert isinstance(binding.config, dict)

        def ring(now: float, out: list[Output]) -> None:
            del self._timers[binding.id]

            def heard(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
                self.answers.append((binding.id, result, error))

            self._engine.fire_binding(binding, {"rang_at": now}, out, then=heard)

        deadline = self._engine.now + binding.config["seconds"]
        self._timers[binding.id] = self._engine.arm(deadline, ring, out)

    def stop_binding(self, binding: Binding, out: list[Output]) -> None:
        self.stopped.append(binding.id)
        timer = self._timers.pop(binding.id, None)
        if timer is not None:
            timer.cancel()


@pytest.fixture
def alarm() -> Alarm:
    return Alarm()


@pytest.fixture
def alarmed(alarm: Alarm) -> Engine:
    return Engine(plugins=[alarm])


def bind_alarm(worker: Worker, binding_id: str, config: JSON, **fields: Any) -> list[Output]:
    return worker.send(
        RegisterTrigger(
            id=binding_id, trigger_type="alarm", function_id="svc::wake", config=config, **fields
        )
    )


def test_a_refused_binding_is_answered_and_not_kept(alarmed: Engine, alarm: Alarm) -> None:
    worker = alarmed.worker("sleeper")
    worker.send(RegisterFunction(id="svc::wake"))
    assert messages_to(bind_alarm(worker, "b1", {"seconds": 5}), worker.id) == []
    refused = bind_alarm(worker, "b1", {"seconds": "soon"})
    assert messages_to(refused, worker.id) == [
        TriggerRegistrationResult(
            id="b1",
            trigger_type="alarm",
            function_id="svc::wake",
            error=ErrorBody(
                "trigger_registration_failed", "seconds is required for alarm triggers"
            ),
        )
    ]
    # The binding it would have replaced is untouched: still live, still ringing.
    assert alarm.stopped == []
    assert alarmed.state.bindings["b1"].config == {"seconds": 5}
    assert invocation_to(alarmed.advance(5.0), worker.id).data == {"rang_at": alarmed.now}


def test_a_plugin_fires_one_binding_and_hears_the_answer(alarmed: Engine, alarm: Alarm) -> None:
    worker = alarmed.worker("sleeper")
    worker.send(RegisterFunction(id="svc::wake"))
    other = alarmed.worker("other")
    other.send(RegisterFunction(id="svc::wake"))
    bind_alarm(worker, "b1", {"seconds": 2}, metadata={"who": "b1"})
    bind_alarm(worker, "b2", {"seconds": 9})
    rung = alarmed.advance(2.0)
    delivery = invocation_to(rung, worker.id)
    assert delivery.metadata == {"who": "b1"}
    assert delivery.invocation_id is not None
    worker.send(InvocationResult(delivery.invocation_id, "svc::wake", result="awake"))
    assert alarm.answers == [("b1", "awake", None)]


def test_unregistering_or_leaving_stops_a_plugin_binding(alarmed: Engine, alarm: Alarm) -> None:
    worker = alarmed.worker("sleeper")
    worker.send(RegisterFunction(id="svc::wake"))
    bind_alarm(worker, "b1", {"seconds": 2})
    bind_alarm(worker, "b2", {"seconds": 2})
    worker.send(UnregisterTrigger(id="b1"))
    assert alarm.stopped == ["b1"]
    worker.disconnect()
    assert alarm.stopped == ["b1", "b2"]
    assert alarmed.advance(5.0) == []
    assert alarm.answers == []


def test_engine_register_trigger_fails_with_the_plugins_refusal(alarmed: Engine) -> None:
    caller = alarmed.worker("caller")
    asked = {"trigger_type": "alarm", "function_id": "svc::wake", "config": {}}
    assert caller.error("engine::register_trigger", asked) == ErrorBody(
        "trigger_registration_failed", "seconds is required for alarm triggers"
    )
    assert alarmed.state.statistics().bindings == 0
    asked["config"] = {"seconds": 1}
    assert set(caller.result("engine::register_trigger", asked)) == {"id"}


CALL = "0f0e0d0c-0b0a-4999-8888-777766665555"


class Gate(EnginePlugin):
    """Provides ``gate``: :meth:`open` fires every binding whose condition allows it; what
    happened to each is kept in :attr:`events`."""

    name = "test-gate"

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._engine: EngineState

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    def trigger_types(self) -> Mapping[str, str]:
        return {"gate": "Fires when the test opens the gate"}

    def open(self, payload: JSON) -> list[Output]:
        out: list[Output] = []
        for binding in list(self._engine.bindings.values()):
            if binding.trigger_type != "gate":
                continue

            def proceed(out: list[Output], binding: Binding = binding) -> None:
                self.events.append(("fired", binding.id))
                self._engine.fire_binding(binding, payload, out)

            def failed(error: ErrorBody, out: list[Output], binding: Binding = binding) -> None:
                self.events.append(("failed", error.code))

            run_if_condition_allows(self._engine, binding, payload, out, proceed, failed=failed)
        return out


def test_a_condition_decides_whether_the_binding_fires() -> None:
    gate = Gate()
    engine = Engine(plugins=[gate])
    worker = engine.worker("gated")
    worker.send(RegisterFunction(id="svc::handle"))
    worker.send(RegisterFunction(id="svc::allow"))
    config = {"condition_function_id": "svc::allow"}
    worker.send(
        RegisterTrigger(id="b1", trigger_type="gate", function_id="svc::handle", config=config)
    )
    for answer in (False, None, {"yes": 1}, "error"):
        asked = invocation_to(gate.open({"n": 1}), worker.id)
        assert (asked.function_id, asked.data, asked.metadata) == ("svc::allow", {"n": 1}, None)
        assert asked.invocation_id is not None
        if answer == "error":
            failure = ErrorBody("invocation_failed", "no")
            reply = InvocationResult(asked.invocation_id, "svc::allow", error=failure)
        else:
            reply = InvocationResult(asked.invocation_id, "svc::allow", result=answer)
        outputs = worker.send(reply)
        if answer in (None, {"yes": 1}):
            assert invocation_to(outputs, worker.id).function_id == "svc::handle"
        else:
            assert messages_to(outputs, worker.id) == []
    assert gate.events == [("fired", "b1"), ("fired", "b1"), ("failed", "invocation_failed")]
    # A condition nobody serves fails the event at once.
    worker.send(UnregisterFunction(id="svc::allow"))
    assert messages_to(gate.open({}), worker.id) == []
    assert gate.events[-1] == ("failed", "function_not_found")
