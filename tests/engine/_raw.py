"""A raw-frame worker for driving the dev engine over loopback, with no iii_trio client code."""

from __future__ import annotations

import collections
import uuid
from typing import Any

import trio

from iii_trio._protocol._codec import decode, encode
from iii_trio._protocol._messages import InvocationResult, InvokeFunction, Message, WorkerRegistered
from iii_trio._transport import WebSocket, connect_websocket

#: Upper bound for any single wait in these tests; loopback answers take milliseconds.
PATIENCE = 5.0


class RawWorker:
    """One WebSocket connection speaking protocol messages frame by frame."""

    def __init__(self, websocket: WebSocket, registered: WorkerRegistered) -> None:
        self.websocket = websocket
        self.worker_id = registered.worker_id
        assert registered.reattach_token is not None
        self.reattach_token = registered.reattach_token
        self._inbox: collections.deque[Message] = collections.deque()

    @classmethod
    async def connect(cls, url: str, **options: Any) -> RawWorker:
        """Connect to ``url``; ``options`` go to :func:`connect_websocket`."""
        websocket = await connect_websocket(url, **options)
        first = await _receive_one(websocket, collections.deque())
        assert isinstance(first, WorkerRegistered), first
        return cls(websocket, first)

    async def send(self, *messages: Message) -> None:
        for message in messages:
            self.websocket.send_text(encode(message))
        await self.websocket.flush()

    async def send_raw(self, text: bytes, *, binary: bool = False) -> None:
        if binary:
            self.websocket.send_binary(text)
        else:
            self.websocket.send_text(text)
        await self.websocket.flush()

    async def receive(self) -> Message:
        """The next message from the engine (every engine frame must be a text frame)."""
        return await _receive_one(self.websocket, self._inbox)

    async def call(self, function_id: str, data: Any = None, **fields: Any) -> InvocationResult:
        """A sync invocation; the next message received must be its answer."""
        invocation_id = str(uuid.uuid4())
        await self.send(
            InvokeFunction(function_id, data=data, invocation_id=invocation_id, **fields)
        )
        answer = await self.receive()
        assert isinstance(answer, InvocationResult), answer
        assert answer.invocation_id == invocation_id
        return answer

    async def result(self, function_id: str, data: Any = None, **fields: Any) -> Any:
        answer = await self.call(function_id, data, **fields)
        assert answer.error is None, answer.error
        return answer.result

    async def register(self, name: str, **metadata: Any) -> None:
        data = {"runtime": "raw", "pid": 1, "name": name, **metadata}
        assert await self.result("engine::workers::register", data) == {"success": True}

    async def aclose(self) -> None:
        await self.websocket.aclose()


async def _receive_one(websocket: WebSocket, inbox: collections.deque[Message]) -> Message:
    with trio.fail_after(PATIENCE):
        while not inbox:
            for is_text, payload in await websocket.receive_messages():
                assert is_text, "the engine sends text frames only"
                inbox.append(decode(payload))
    return inbox.popleft()


async def http_get(port: int, path: str, *, upgrade: bool = True) -> tuple[int, str]:
    """Send one GET (a WebSocket upgrade unless told otherwise); return status and body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        headers = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        if upgrade:
            headers += [
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            ]
        await stream.send_all(("\r\n".join(headers) + "\r\n\r\n").encode())
        response = b""
        with trio.fail_after(PATIENCE):
            while b"\r\n\r\n" not in response:
                chunk = await stream.receive_some()
                assert chunk, response
                response += chunk
            head, _, body = response.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += await stream.receive_some()
    status = int(head.split(b" ", 2)[1])
    return status, body.decode()
