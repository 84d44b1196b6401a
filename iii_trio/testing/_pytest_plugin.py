"""pytest fixtures for testing iii workers: ``iii_engine`` and ``iii_worker``.

Registered through the ``pytest11`` entry point, so they are available wherever iii_trio is
installed. Both are async fixtures for pytest-trio, function-scoped, and torn down with the
test. A test that requests one of them is marked ``@pytest.mark.trio`` here, so it runs under
trio without the project setting ``trio_mode = true`` or marking it. Importing this module is
cheap and has no side effects: the dev engine is imported only when a fixture is used.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from iii_trio import Worker

    from ._dev_engine import DevEngine

_worker_numbers = itertools.count(1)
_FIXTURES = frozenset({"iii_engine", "iii_worker"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark for pytest-trio the tests that use this plugin's fixtures: they are trio tests,
    whatever the project's own settings."""
    for item in items:
        wanted = _FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if wanted and item.get_closest_marker("trio") is None:
            item.add_marker(pytest.mark.trio)


@pytest.fixture
async def iii_engine() -> AsyncIterator[DevEngine]:
    """A dev engine serving the real wire protocol on a free loopback port."""
    from ._dev_engine import open_dev_engine

    async with open_dev_engine() as engine:
        yield engine


@pytest.fixture
async def iii_worker(iii_engine: DevEngine) -> AsyncIterator[Worker]:
    """A worker connected to ``iii_engine``, with a name unique to this test session."""
    from iii_trio import open_worker

    name = f"pytest-worker-{next(_worker_numbers)}"
    async with open_worker(iii_engine.url, name=name) as worker:
        yield worker
