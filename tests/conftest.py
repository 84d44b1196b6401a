"""Fixtures shared by the scenario tests.

``engine`` runs each scenario twice: against the dev engine, and against a real iii engine when
``III_ENGINE_URL`` points at one (skipped otherwise), which is what makes the dev engine a
verified fake rather than a mock. ``worker`` is a worker connected to that engine.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

import iii_trio
from iii_trio.testing import open_dev_engine

_worker_numbers = itertools.count(1)


@attrs.frozen
class RealEngine:
    """A real iii engine the tests connect to (``III_ENGINE_URL``)."""

    url: str


Engine = iii_trio.testing.DevEngine | RealEngine


_REAL_ENGINE_URL = os.environ.get("III_ENGINE_URL", "").strip()
_real = pytest.param(
    "real",
    marks=[
        pytest.mark.engine,
        pytest.mark.skipif(
            not _REAL_ENGINE_URL, reason="III_ENGINE_URL is not set: no real iii engine here"
        ),
    ],
)


@pytest.fixture(params=["dev", _real])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    if request.param == "real":
        # Fail fast and clearly when the engine is not there, instead of retrying forever.
        probe_backoff = iii_trio.Backoff(initial=0.2, max_attempts=3)
        with trio.fail_after(15):
            async with iii_trio.open_worker(
                _REAL_ENGINE_URL, name=f"probe-{os.getpid()}", backoff=probe_backoff
            ):
                pass
        yield RealEngine(_REAL_ENGINE_URL)
        return
    async with open_dev_engine() as dev_engine:
        yield dev_engine


@pytest.fixture
async def worker(engine: Engine) -> AsyncIterator[iii_trio.Worker]:
    # Distinct names per process and test: a real engine may hold other workers' leases.
    name = f"scenario-{os.getpid()}-{next(_worker_numbers)}"
    async with iii_trio.open_worker(engine.url, name=name) as connected:
        yield connected
