"""The two ends of the channel benchmark (``python -m benchmarks.channels``), each a process.

``channel_stream.py MODE ...``; every mode prints its results as one JSON line on stdout:

- ``sink URL``: an iii-trio worker serving ``bench::sink``, which reads the channel reader in
  its payload's ``source`` to the end and returns ``{"bytes", "seconds"}`` (first byte to the
  end of the stream). Prints ``{"ready": true}`` once registered; serves until killed.
- ``source URL SIZE``: an iii-trio worker that creates a channel, calls ``bench::sink`` with its
  reader, writes SIZE bytes into the writer in 64 KiB chunks and closes it; prints what the
  sink measured, and its own time from the first write to the sink's answer.
- ``pipe-server``: a bare WebSocket server on a loopback port (iii-trio's transport, no engine):
  prints ``{"url": ...}``, then, for one connection, reads binary frames to the end and prints
  ``{"bytes", "seconds"}`` (first byte to the close).
- ``pipe-client URL SIZE``: writes SIZE bytes in 64 KiB binary frames to that server, flushing
  every 1 MiB, then closes.
- ``relay``: a bare WebSocket relay on a loopback port, the least an engine in between can do:
  prints ``{"url": ...}``; a client on ``/read`` gets every binary frame a client on
  ``/write`` sends (the writer is read only while the reader takes what it is sent), then a
  close.
- ``pipe-reader URL``: reads binary frames from ``URL`` to the close, as ``pipe-server`` does.

Each end also reports the CPU time its process spent on the transfer (``*_cpu_seconds``).

Both ends move the same bytes in the same frames with the same WebSocket code, so the ratio of
the two figures is the cost of the channel: the engine hop and the SDK around the socket.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import trio

CHUNK = 64 * 1024
FLUSH_EVERY = 16  # chunks: what ChannelWriter frames before one write


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def sink(url: str) -> None:
    import iii_trio

    async with iii_trio.open_worker(url, name="bench-sink") as worker:

        @worker.function("bench::sink")
        async def read_all(payload: dict[str, Any]) -> dict[str, Any]:
            reader: iii_trio.ChannelReader = payload["source"]
            received = 0
            started = None
            cpu = time.process_time()
            async for chunk in reader:
                if started is None:
                    started = time.perf_counter()
                received += len(chunk)
            seconds = time.perf_counter() - started if started is not None else 0.0
            return {
                "bytes": received,
                "seconds": seconds,
                "reader_cpu_seconds": time.process_time() - cpu,
            }

        await worker.wait_registered()
        emit({"ready": True})
        await trio.sleep_forever()


async def source(url: str, size: int) -> None:
    import iii_trio

    block = bytes(range(256)) * (CHUNK // 256)
    async with iii_trio.open_worker(url, name="bench-source") as worker:
        channel = await worker.create_channel()
        measured: dict[str, Any] = {}

        async def call_sink() -> None:
            measured.update(await worker.trigger("bench::sink", {"source": channel.reader_ref}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_sink)
            started = time.perf_counter()
            cpu = time.process_time()
            async with channel.writer as writer:
                for _ in range(size // CHUNK):
                    await writer.send_all(block)
            writer_cpu = time.process_time() - cpu
        emit(
            {
                **measured,
                "writer_seconds": time.perf_counter() - started,
                "writer_cpu_seconds": writer_cpu,
            }
        )


async def pipe_server() -> None:
    from iii_trio._transport import UpgradeRequest, WebSocket, serve_websockets

    done = trio.Event()

    async def handler(websocket: WebSocket, request: UpgradeRequest) -> None:
        received = 0
        started = None
        cpu = time.process_time()
        while True:
            try:
                messages = await websocket.receive_messages()
            except trio.BrokenResourceError:  # the client's close frame
                break
            if started is None:
                started = time.perf_counter()
            received += sum(len(payload) for _, payload in messages)
        seconds = time.perf_counter() - started if started is not None else 0.0
        emit(
            {"bytes": received, "seconds": seconds, "reader_cpu_seconds": time.process_time() - cpu}
        )
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve_websockets(
                handler, lambda request: None, host="127.0.0.1", port=0, task_status=task_status
            )
        )
        emit({"url": f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"})
        await done.wait()
        nursery.cancel_scope.cancel()


async def pipe_client(url: str, size: int) -> None:
    from iii_trio._transport import connect_websocket

    block = bytes(range(256)) * (CHUNK // 256)
    websocket = await connect_websocket(url)
    cpu = time.process_time()
    for n in range(size // CHUNK):
        websocket.send_binary(block)
        if n % FLUSH_EVERY == FLUSH_EVERY - 1:
            await websocket.flush()
    await websocket.flush()
    await websocket.aclose()
    emit({"writer_cpu_seconds": time.process_time() - cpu})


async def relay() -> None:
    from iii_trio._transport import UpgradeRequest, WebSocket, serve_websockets

    reader_ready = trio.Event()
    done = trio.Event()
    readers: list[WebSocket] = []

    async def handler(websocket: WebSocket, request: UpgradeRequest) -> None:
        if request.path == "/read":
            readers.append(websocket)
            reader_ready.set()
            await done.wait()
            return
        await reader_ready.wait()
        reader = readers[0]
        while True:
            try:
                messages = await websocket.receive_messages()
            except trio.BrokenResourceError:  # the writer's close frame
                break
            for _, payload in messages:
                reader.send_binary(payload)
            await reader.flush()
        await reader.aclose()
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve_websockets(
                handler, lambda request: None, host="127.0.0.1", port=0, task_status=task_status
            )
        )
        emit({"url": f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"})
        await done.wait()
        await trio.sleep(0.1)  # the reader's close handshake
        nursery.cancel_scope.cancel()


async def pipe_reader(url: str) -> None:
    from iii_trio._transport import connect_websocket

    websocket = await connect_websocket(url, max_frame_size=64 * 1024 * 1024)
    emit({"connected": True})
    received = 0
    started = None
    cpu = time.process_time()
    while True:
        try:
            messages = await websocket.receive_messages()
        except trio.BrokenResourceError:  # the relay's close frame
            break
        if started is None:
            started = time.perf_counter()
        received += sum(len(payload) for _, payload in messages)
    seconds = time.perf_counter() - started if started is not None else 0.0
    await websocket.aclose()
    emit({"bytes": received, "seconds": seconds, "reader_cpu_seconds": time.process_time() - cpu})


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "sink":
        trio.run(sink, argv[1])
    elif mode == "source":
        trio.run(source, argv[1], int(argv[2]))
    elif mode == "pipe-server":
        trio.run(pipe_server)
    elif mode == "pipe-client":
        trio.run(pipe_client, argv[1], int(argv[2]))
    elif mode == "relay":
        trio.run(relay)
    elif mode == "pipe-reader":
        trio.run(pipe_reader, argv[1])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
