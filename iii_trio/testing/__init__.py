"""Test support for iii workers: an in-process dev engine speaking the real wire protocol.

::

    async with iii_trio.testing.open_dev_engine() as engine:
        async with iii_trio.open_worker(engine.url, name="under-test") as worker:
            ...
"""

from ._dev_engine import DevEngine as DevEngine
from ._dev_engine import open_dev_engine as open_dev_engine
from ._dev_engine import serve_dev_engine as serve_dev_engine

__all__ = ["DevEngine", "open_dev_engine", "serve_dev_engine"]
