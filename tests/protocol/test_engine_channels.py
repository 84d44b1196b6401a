"""The dev engine core's channels (spec/protocol.md 6.1, 6.3, 6.6): ``engine::channels::create``,
the buffer size clamp, the upgrade check, attaching each end once, and the sweep."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from iii_trio._protocol._messages import InvokeFunction
from iii_trio.testing._engine import ChannelDropped, TimerArmed
from iii_trio.testing._engine._channels import (
    CHANNEL_TTL,
    SWEEP_INTERVAL,
    ChannelRegistry,
    clamp_buffer_size,
)

from .engine_driver import Engine, Worker


@pytest.fixture
def engine() -> Engine:
    return Engine()


@pytest.fixture
def worker(engine: Engine) -> Worker:
    return engine.worker("maker")


def _registry(engine: Engine) -> ChannelRegistry:
    return engine.state.channels


def test_create_returns_a_writer_and_a_reader_ref_of_one_channel(worker: Worker) -> None:
    refs = worker.result("engine::channels::create", {"buffer_size": None})
    assert list(refs) == ["writer", "reader"]
    writer, reader = refs["writer"], refs["reader"]
    assert list(writer) == ["channel_id", "access_key", "direction"]
    assert writer["direction"] == "write"
    assert reader["direction"] == "read"
    assert writer["channel_id"] == reader["channel_id"]
    assert writer["access_key"] == reader["access_key"]
    assert writer["channel_id"] != writer["access_key"]


def test_every_channel_gets_its_own_id_and_key(worker: Worker) -> None:
    first = worker.result("engine::channels::create", {})["writer"]
    second = worker.result("engine::channels::create", {})["writer"]
    assert first["channel_id"] != second["channel_id"]
    assert first["access_key"] != second["access_key"]


@pytest.mark.parametrize(
    ("requested", "queued"),
    [(None, 64), (0, 1), (1, 1), (64, 64), (1024, 1024), (1025, 1024), (2**40, 1024)],
)
def test_the_buffer_size_is_clamped(worker: Worker, requested: Any, queued: int) -> None:
    data = {} if requested is None else {"buffer_size": requested}
    ref = worker.result("engine::channels::create", data)["reader"]
    channel = _registry(worker.engine).lookup(ref["channel_id"], ref["access_key"])
    assert channel is not None
    assert channel.buffer_size == queued
    assert clamp_buffer_size(requested) == queued


@pytest.mark.parametrize(
    ("buffer_size", "detail"),
    [
        (-1, "invalid value: integer `-1`, expected usize"),
        (1.5, "invalid type: floating point `1.5`, expected usize"),
        ("8", 'invalid type: string "8", expected usize'),
        (True, "invalid type: boolean `true`, expected usize"),
        ([8], "invalid type: sequence, expected usize"),
    ],
)
def test_a_bad_buffer_size_is_a_deserialization_error(
    worker: Worker, buffer_size: Any, detail: str
) -> None:
    error = worker.error("engine::channels::create", {"buffer_size": buffer_size})
    assert error.code == "deserialization_error"
    assert error.message == f"Failed to deserialize input for engine::channels::create: {detail}"
    assert len(_registry(worker.engine)) == 0


def test_the_input_must_be_an_object(worker: Worker) -> None:
    error = worker.error("engine::channels::create", None)
    assert error.code == "deserialization_error"
    assert "expected struct CreateChannelInput" in error.message


def test_create_is_listed_among_the_engine_functions(worker: Worker) -> None:
    listed = worker.result(
        "engine::functions::list", {"prefix": "engine::channels", "include_internal": True}
    )
    assert listed["functions"] == [
        {
            "function_id": "engine::channels::create",
            "namespace": "default",
            "worker_name": "engine",
            "description": "Create a streaming channel pair",
        }
    ]


# --- the upgrade check and attaching ------------------------------------------------------------


def test_lookup_needs_the_right_id_and_key(worker: Worker) -> None:
    ref = worker.result("engine::channels::create", {})["reader"]
    registry = _registry(worker.engine)
    assert registry.lookup(ref["channel_id"], ref["access_key"]) is not None
    assert registry.lookup(ref["channel_id"], "wrong") is None
    assert registry.lookup("no-such-channel", ref["access_key"]) is None


def test_each_end_attaches_once_whichever_ref_is_used(worker: Worker) -> None:
    ref = worker.result("engine::channels::create", {})["reader"]
    registry = _registry(worker.engine)
    channel_id, key = ref["channel_id"], ref["access_key"]
    assert registry.attach(channel_id, "wrong", "read") is None
    channel = registry.attach(channel_id, key, "write")
    assert channel is not None
    assert channel.writer_attached
    assert not channel.reader_attached
    assert registry.attach(channel_id, key, "write") is None
    assert registry.attach(channel_id, key, "read") is channel
    assert registry.attach(channel_id, key, "read") is None
    # The entry stays once both ends were attached, as the engine keeps it.
    assert registry.lookup(channel_id, key) is channel


def test_a_workers_disconnect_leaves_its_channels_alone(worker: Worker) -> None:
    ref = worker.result("engine::channels::create", {})["reader"]
    worker.disconnect()
    assert _registry(worker.engine).lookup(ref["channel_id"], ref["access_key"]) is not None


# --- the sweep ----------------------------------------------------------------------------------


def test_the_sweep_removes_old_channels_with_an_end_never_attached(
    engine: Engine, worker: Worker
) -> None:
    registry = _registry(engine)
    outputs = worker.send(
        InvokeFunction("engine::channels::create", data={}, invocation_id=str(uuid.uuid4()))
    )
    assert TimerArmed(engine.now + SWEEP_INTERVAL) in outputs
    refs = [worker.result("engine::channels::create", {})["reader"] for _ in range(3)]
    keys = {ref["channel_id"]: ref["access_key"] for ref in refs}
    untouched, half, full = keys
    registry.attach(half, keys[half], "read")
    registry.attach(full, keys[full], "read")
    registry.attach(full, keys[full], "write")

    # Sweeps before the channels are five minutes old remove nothing.
    for _ in range(int(CHANNEL_TTL // SWEEP_INTERVAL)):
        assert not [o for o in engine.advance(SWEEP_INTERVAL) if isinstance(o, ChannelDropped)]
    assert len(registry) == 4

    outputs = engine.advance(SWEEP_INTERVAL)
    dropped = {o.channel_id for o in outputs if isinstance(o, ChannelDropped)}
    assert untouched in dropped
    assert half in dropped
    assert full not in dropped
    assert len(dropped) == 3  # with the first channel, never attached either
    assert registry.lookup(untouched, keys[untouched]) is None
    assert registry.lookup(full, keys[full]) is not None
    # Nothing left that could be swept: the sweep sleeps until the next channel is created.
    assert not [o for o in outputs if isinstance(o, TimerArmed)]
    later = worker.send(
        InvokeFunction("engine::channels::create", data={}, invocation_id=str(uuid.uuid4()))
    )
    assert TimerArmed(engine.now + SWEEP_INTERVAL) in later


def test_a_channel_younger_than_the_ttl_keeps_the_sweep_armed(
    engine: Engine, worker: Worker
) -> None:
    worker.result("engine::channels::create", {})
    engine.advance(CHANNEL_TTL - 1)
    worker.result("engine::channels::create", {})
    outputs = engine.advance(SWEEP_INTERVAL + 2)
    assert len([o for o in outputs if isinstance(o, ChannelDropped)]) == 1
    assert len(_registry(engine)) == 1
    assert engine.state.next_deadline() is not None
