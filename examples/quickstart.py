"""Quickstart: register two functions, call them, print the results.

Run it with ``python examples/quickstart.py``. With ``III_URL`` unset it starts iii_trio's dev
engine in-process, so no iii binary is needed; with ``III_URL`` set (for example
``ws://127.0.0.1:49134``) it uses that engine instead.
"""

from __future__ import annotations

import attrs
import trio

import iii_trio
from iii_trio.testing import engine_url


@attrs.frozen
class Pair:
    a: float
    b: float


async def main(url: str) -> None:
    async with iii_trio.open_worker(url, name="quickstart") as worker:

        @worker.function("math::add", description="Add two numbers")
        async def add(pair: Pair) -> float:
            return pair.a + pair.b

        @worker.function("math::sum", description="Add up a list of numbers with math::add")
        async def total(numbers: list[float]) -> float:
            result = 0.0
            for number in numbers:
                result = await worker.trigger("math::add", {"a": result, "b": number})
            return result

        print("math::add(2, 3) =", await worker.trigger("math::add", {"a": 2, "b": 3}))
        print("math::sum([1..5]) =", await worker.trigger("math::sum", [1, 2, 3, 4, 5]))
        try:
            await worker.trigger("math::add", {"a": "two", "b": 3})
        except iii_trio.InvocationError as error:
            print("math::add('two', 3) failed:", error.code)


async def run() -> None:
    async with engine_url() as url:  # $III_URL, else a dev engine started here
        await main(url)


if __name__ == "__main__":
    trio.run(run)
