"""The enqueue action of ``invokefunction`` (spec/protocol.md section 4.3), as the engine routes it.

The engine does not queue anything itself: it hands the message to whoever provides
``engine::queue::enqueue`` (the queue worker) and answers the caller with a receipt once the
provider accepted it, or with ``enqueue_error`` when it refused it or nobody provides it. The
provider's call is one the engine starts on its own behalf, continued by :func:`route_enqueue`'s
continuation when the provider answers. The provider is the dev engine's own ``iii-queue``
plugin unless it is turned off, and then whichever worker registers that id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..._protocol._messages import JSON, EnqueueAction, ErrorBody, InvokeFunction
from ._model import DEFAULT_NAMESPACE, Caller, Connection, Output, baggage_with_function_id

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = ["ENQUEUE_PROVIDER", "route_enqueue"]

ENQUEUE_PROVIDER: Final = "engine::queue::enqueue"

_NO_QUEUE_PROVIDER: Final = (
    "No queue provider is installed. `TriggerAction::Enqueue` routes through the "
    "`engine::queue::enqueue` provider, which the standalone queue worker registers. Add it with "
    "`iii worker add queue`. (underlying: Function engine::queue::enqueue not found in "
    "namespace default)"
)


def route_enqueue(
    engine: EngineState,
    connection: Connection,
    message: InvokeFunction,
    action: EnqueueAction,
    caller: Caller | None,
    namespace: str,
    out: list[Output],
) -> None:
    """Hand ``message``, which ``connection`` sent, to the queue provider; ``caller`` (if any)
    gets the receipt."""
    provider = engine.functions.get((DEFAULT_NAMESPACE, ENQUEUE_PROVIDER))
    if provider is None:
        engine.answer(caller, out, error=ErrorBody("enqueue_error", _NO_QUEUE_PROVIDER))
        return
    receipt_id = engine.new_id()
    request: dict[str, JSON] = {
        "queue": action.queue,
        "function_id": message.function_id,
        "data": message.data,
        "messageReceiptId": receipt_id,
        "traceparent": message.traceparent,
        "baggage": baggage_with_function_id(message.baggage, message.function_id),
    }
    if namespace != DEFAULT_NAMESPACE:
        request["namespace"] = namespace

    def give_receipt(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
        # The caller gets a receipt, not the provider's answer.
        if error is not None:
            engine.answer(
                caller, out, error=ErrorBody("enqueue_error", f"{error.code}: {error.message}")
            )
        else:
            engine.answer(caller, out, result={"messageReceiptId": receipt_id})

    if provider.owner is None:
        engine.call_builtin(connection, ENQUEUE_PROVIDER, request, out, then=give_receipt)
        return
    engine.start_call(
        provider.owner,
        provider.id,
        request,
        out,
        origin=connection,
        caller=caller,
        then=give_receipt,
    )
