"""Error bodies from the engine become api.md's exception classes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from scripted_engine import answer_register_then, serve_scripted_engine

import iii_trio
from iii_trio._protocol._codec import encode
from iii_trio._protocol._messages import ErrorBody, InvocationResult, InvokeFunction
from iii_trio._transport import WebSocket


def refuse(websocket: WebSocket, message: InvokeFunction) -> None:
    assert message.invocation_id is not None
    code = message.data["code"]
    error = ErrorBody(code, f"{code} for {message.function_id}")
    websocket.send_text(
        encode(InvocationResult(message.invocation_id, message.function_id, error=error))
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("FORBIDDEN", iii_trio.Forbidden),
        ("function_not_found", iii_trio.FunctionNotFound),
        ("invocation_failed", iii_trio.InvocationError),
        ("forbidden", iii_trio.InvocationError),  # codes are case-sensitive on the wire
    ],
)
async def test_each_error_code_raises_its_class(
    nursery: trio.Nursery, code: str, kind: type[Any]
) -> None:
    url = await nursery.start(serve_scripted_engine, answer_register_then(refuse))
    async with iii_trio.open_worker(url, name="refused") as worker:
        with trio.fail_after(10), pytest.raises(iii_trio.InvocationError) as raised:
            await worker.trigger("svc::guarded", {"code": code})
    assert type(raised.value) is kind
    assert (raised.value.code, raised.value.function_id) == (code, "svc::guarded")
    assert raised.value.message == f"{code} for svc::guarded"
