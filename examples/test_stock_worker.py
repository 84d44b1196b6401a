"""Testing a worker with iii-trio's pytest fixtures: ``pytest examples/test_stock_worker.py``.

``iii_worker`` is a worker connected to ``iii_engine``, a dev engine started for the test; the
plugin runs these tests under trio, with no marker or setting of your own.
"""

from __future__ import annotations

import pytest
from two_workers import serve_shop, serve_stock

import iii_trio


async def test_an_order_is_priced_by_the_shop_and_reserved_by_the_stock(
    iii_engine, iii_worker
) -> None:
    await serve_shop(iii_worker)
    async with iii_trio.open_worker(iii_engine.url, name="stock") as stock:
        await serve_stock(stock)
        answer = await iii_worker.trigger("shop::order", {"item": "pear", "quantity": 5})
    assert answer == {"item": "pear", "reserved": 2, "total": 1.5}


async def test_an_unknown_item_fails_the_call_not_the_worker(iii_worker) -> None:
    await serve_shop(iii_worker)
    with pytest.raises(iii_trio.InvocationError) as failed:
        await iii_worker.trigger("shop::price", "plum")
    assert failed.value.code == "invocation_failed"
    assert await iii_worker.trigger("shop::price", "apple") == 0.5
