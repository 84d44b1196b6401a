"""Drive the dev engine's sans-io core by hand: raw workers, a hand-driven clock, fixed ids."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import Any

from iii_trio._protocol._messages import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    RegisterTrigger,
)
from iii_trio.testing._engine import EnginePlugin, EngineState, Output, Send, canonical_uuid

GRACE = 5.0
CALL_ID = "6b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3e"


class Engine:
    """An :class:`EngineState` with a hand-driven clock and deterministic UUIDs."""

    def __init__(
        self,
        *,
        grace: float = GRACE,
        poll: float = 1000.0,
        plugins: Sequence[EnginePlugin] = (),
        wall_clock_offset: float = 0.0,
    ) -> None:
        counter = itertools.count(1)
        self.now = 100.0
        self.state = EngineState(
            grace=grace,
            new_uuid=lambda: uuid.UUID(int=next(counter)),
            started_at_ms=1_700_000_000_000,
            wall_clock_offset=wall_clock_offset,
            functions_poll_interval=poll,
            version="9.9.9",
            plugins=plugins,
        )

    def connect(self, peer: str | None = "127.0.0.1") -> tuple[str, list[Output]]:
        return self.state.connect(peer_host=peer, now=self.now, connected_at_ms=42)

    def worker(
        self, name: str | None = None, *, namespace: str | None = None, pid: int | None = 7
    ) -> Worker:
        connection_id, outputs = self.connect()
        worker = Worker(self, connection_id)
        worker.outputs.extend(outputs)
        data: dict[str, Any] = {"runtime": "python", "pid": pid}
        if name is not None:
            data["name"] = name
        if namespace is not None:
            data["namespace"] = namespace
        worker.call("engine::workers::register", data)
        return worker

    def receive(self, connection_id: str, message: Message) -> list[Output]:
        return self.state.receive(connection_id, message, self.now)

    def advance(self, seconds: float) -> list[Output]:
        self.now += seconds
        return self.state.tick(self.now)


class Worker:
    """One raw connection; ``call`` sends a sync invoke and returns the engine's answer."""

    def __init__(self, engine: Engine, connection_id: str) -> None:
        self.engine = engine
        self.id = connection_id
        self.outputs: list[Output] = []
        self._ids = (str(uuid.UUID(int=(1 << 120) + n)) for n in itertools.count())

    def send(self, message: Message) -> list[Output]:
        outputs = self.engine.receive(self.id, message)
        self.outputs.extend(outputs)
        return outputs

    def call(self, function_id: str, data: Any = None, **fields: Any) -> InvocationResult | None:
        invocation_id = fields.pop("invocation_id", next(self._ids))
        outputs = self.send(
            InvokeFunction(function_id, data=data, invocation_id=invocation_id, **fields)
        )
        answers = [
            m
            for m in messages_to(outputs, self.id)
            if isinstance(m, InvocationResult) and m.invocation_id == canonical_uuid(invocation_id)
        ]
        assert len(answers) <= 1
        return answers[0] if answers else None

    def result(self, function_id: str, data: Any = None, **fields: Any) -> Any:
        answer = self.call(function_id, data, **fields)
        assert answer is not None
        assert answer.error is None, answer.error
        return answer.result

    def error(self, function_id: str, data: Any = None, **fields: Any) -> ErrorBody:
        answer = self.call(function_id, data, **fields)
        assert answer is not None
        assert answer.error is not None, answer.result
        return answer.error

    def disconnect(self) -> list[Output]:
        return self.engine.state.disconnect(self.id, self.engine.now)


def messages_to(outputs: list[Output], connection_id: str) -> list[Message]:
    return [o.message for o in outputs if isinstance(o, Send) and o.connection_id == connection_id]


def only_message_to(outputs: list[Output], connection_id: str) -> Message:
    (message,) = messages_to(outputs, connection_id)
    return message


def invocation_to(outputs: list[Output], connection_id: str) -> InvokeFunction:
    message = only_message_to(outputs, connection_id)
    assert isinstance(message, InvokeFunction)
    return message


def result_of(output: Output) -> InvocationResult:
    assert isinstance(output, Send)
    assert isinstance(output.message, InvocationResult)
    return output.message


def registration_to(outputs: list[Output], connection_id: str) -> RegisterTrigger:
    message = only_message_to(outputs, connection_id)
    assert isinstance(message, RegisterTrigger)
    return message


def function_ids(worker: Worker, **filters: Any) -> list[str]:
    listed = worker.result("engine::functions::list", filters)["functions"]
    return [entry["function_id"] for entry in listed]
