"""Test support for iii workers: an in-process dev engine speaking the real wire protocol.

::

    async with iii_trio.testing.open_dev_engine() as engine:
        async with iii_trio.open_worker(engine.url, name="under-test") as worker:
            ...

``open_dev_engine(config="config.yaml")`` starts it from an iii engine config file.
"""

from ._config import ConfigError as ConfigError
from ._config import EngineConfig as EngineConfig
from ._dev_engine import DevEngine as DevEngine
from ._dev_engine import engine_url as engine_url
from ._dev_engine import load_config as load_config
from ._dev_engine import open_dev_engine as open_dev_engine
from ._dev_engine import serve_dev_engine as serve_dev_engine

__all__ = [
    "ConfigError",
    "DevEngine",
    "EngineConfig",
    "engine_url",
    "load_config",
    "open_dev_engine",
    "serve_dev_engine",
]
