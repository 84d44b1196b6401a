"""Two workers calling each other through the engine: a shop and a stock keeper.

``shop::order`` (the shop) asks ``stock::reserve`` (the stock keeper) to put items aside, and the
stock keeper asks ``shop::price`` (the shop again) what they cost. Neither knows where the other
runs: the engine routes every call. Run it with ``python examples/two_workers.py`` (the dev
engine starts in-process unless ``III_URL`` names an engine).
"""

from __future__ import annotations

import attrs
import trio

import iii_trio
from iii_trio.testing import engine_url

PRICES = {"apple": 0.5, "pear": 0.75}


@attrs.frozen
class Line:
    item: str
    quantity: int


async def serve_shop(worker: iii_trio.Worker) -> None:
    @worker.function("shop::price")
    async def price(item: str) -> float:
        return PRICES[item]

    @worker.function("shop::order")
    async def order(line: Line) -> dict[str, object]:
        reserved = await worker.trigger("stock::reserve", attrs.asdict(line))
        return {"item": line.item, "reserved": reserved["quantity"], "total": reserved["value"]}

    await worker.wait_registered()


async def serve_stock(worker: iii_trio.Worker) -> None:
    stock = {"apple": 10, "pear": 2}

    @worker.function("stock::reserve")
    async def reserve(line: Line) -> dict[str, float]:
        taken = min(line.quantity, stock[line.item])
        stock[line.item] -= taken
        unit = await worker.trigger("shop::price", line.item)
        return {"quantity": taken, "value": taken * unit}

    await worker.wait_registered()


async def main(url: str) -> None:
    async with (
        iii_trio.open_worker(url, name="shop") as shop,
        iii_trio.open_worker(url, name="stock") as stock,
    ):
        await serve_shop(shop)
        await serve_stock(stock)
        print(await shop.trigger("shop::order", {"item": "apple", "quantity": 4}))
        print(await stock.trigger("shop::order", {"item": "pear", "quantity": 5}))


async def run() -> None:
    async with engine_url() as url:  # $III_URL, else a dev engine started here
        await main(url)


if __name__ == "__main__":
    trio.run(run)
