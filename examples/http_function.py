"""HTTP-invoked function: the engine calls an HTTP endpoint; the worker only registers it.

Run it with ``python examples/http_function.py``. It starts a small price service on loopback
(standing in for a service written in anything that speaks HTTP), registers its ``/price``
endpoint as the function ``quote::price`` with HMAC signing, and calls it through the engine.

The signing secret is read by the *engine* from its environment variable
``QUOTE_SIGNING_SECRET``; the worker sends only that name. With ``III_URL`` unset the example
runs iii_trio's dev engine in-process, so this process's environment is the engine's (the
example sets a random secret when none is set). With ``III_URL`` set, the engine there needs the
variable, and an ``iii-http-functions`` entry in its config that allows plain http to 127.0.0.1
(``security: {require_https: false, block_private_ips: false}``), or it drops the registration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets

import trio

import iii_trio
from iii_trio import HttpAuth, HttpInvocation
from iii_trio.testing import engine_url

SECRET_VARIABLE = "QUOTE_SIGNING_SECRET"
PRICES = {"widget": 9.99, "sprocket": 2.5}


# --- the endpoint: any HTTP service; this one is a few lines of trio ----------------------------


def _signed_by_the_engine(headers: dict[str, str], body: bytes) -> bool:
    # The engine signs "<x-iii-Timestamp>:<base64 of the body>" with the shared secret.
    secret = os.environ[SECRET_VARIABLE].encode()
    signed = f"{headers.get('x-iii-timestamp', '')}:{base64.b64encode(body).decode()}"
    expected = "sha256=" + hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("x-iii-signature", ""))


def _price(headers: dict[str, str], body: bytes) -> tuple[str, object]:
    if not _signed_by_the_engine(headers, body):
        return "401 Unauthorized", {"error": {"code": "unauthorized", "message": "bad signature"}}
    order = json.loads(body)
    item, quantity = order["item"], order["quantity"]
    if item not in PRICES:
        error = {"code": "unknown_item", "message": f"no price for {item!r}"}
        return "404 Not Found", {"error": error}
    return "200 OK", {"item": item, "total": round(PRICES[item] * quantity, 2)}


async def _serve_one(stream: trio.SocketStream) -> None:
    async with stream:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some()
            if not chunk:
                return
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        fields = (line.split(":", 1) for line in head.decode("latin-1").split("\r\n")[1:])
        headers = {name.strip().lower(): value.strip() for name, value in fields}
        while len(body) < int(headers.get("content-length", "0")):
            body += await stream.receive_some()
        status, answer = _price(headers, body)
        payload = json.dumps(answer).encode()
        await stream.send_all(
            f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode()
            + payload
        )


async def serve_prices(*, task_status: trio.TaskStatus[int]) -> None:
    """Serve the price endpoint on a free loopback port, reported through ``task_status``."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(_serve_one, listeners)


# --- the worker: registers the endpoint, then calls it like any function ------------------------


async def main(url: str) -> None:
    # The engine's environment (here, with the dev engine, this process's).
    os.environ.setdefault(SECRET_VARIABLE, secrets.token_hex(16))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_prices)
        async with iii_trio.open_worker(url, name="http-function-example") as worker:
            worker.register_function(
                "quote::price",
                HttpInvocation(
                    f"http://127.0.0.1:{port}/price",
                    timeout_ms=5_000,
                    auth=HttpAuth.hmac(SECRET_VARIABLE),  # the variable's name, not the secret
                ),
                description="Price an order (served over HTTP)",
            )
            await worker.wait_registered()
            with trio.fail_after(10):
                order = {"item": "widget", "quantity": 3}
                print("quote::price(3 widgets) =", await worker.trigger("quote::price", order))
                try:
                    await worker.trigger("quote::price", {"item": "gizmo", "quantity": 1})
                except iii_trio.InvocationError as error:
                    print("quote::price(1 gizmo) failed:", error.code, "-", error.message)
        nursery.cancel_scope.cancel()


async def run() -> None:
    async with engine_url() as url:  # $III_URL, else a dev engine started here
        await main(url)


if __name__ == "__main__":
    trio.run(run)
