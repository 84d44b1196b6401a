"""A small REST API: functions behind ``http`` triggers, served by the engine's HTTP port.

Run it against the dev engine and call it with curl::

    iii-trio dev                                  # engine on 49134, REST API on 3111
    III_URL=ws://127.0.0.1:49134 python examples/http_api.py
    curl -X POST localhost:3111/todos -H 'content-type: application/json' -d '{"title":"milk"}'
    curl localhost:3111/todos/1
    curl localhost:3111/todos/export              # streamed, one line per todo

With ``III_URL`` set it serves until Ctrl-C. With ``III_URL`` unset it starts iii_trio's dev
engine in-process, makes those requests itself, prints the answers and stops.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import httpx
import trio

import iii_trio
from iii_trio.testing import open_dev_engine

todos: dict[str, dict[str, Any]] = {}


async def serve(worker: iii_trio.Worker) -> None:
    """Register the API's functions and routes on ``worker``."""

    @worker.function("todos::create", description="Add a todo from a JSON body")
    async def create(request: iii_trio.ApiRequest) -> iii_trio.ApiResponse:
        if not isinstance(request.body, dict) or not isinstance(request.body.get("title"), str):
            return iii_trio.ApiResponse(422, body={"error": 'send {"title": "..."}'})
        todo_id = str(len(todos) + 1)
        todos[todo_id] = {"id": todo_id, "title": request.body["title"], "done": False}
        return iii_trio.ApiResponse(201, body=todos[todo_id])

    @worker.function("todos::get", description="One todo by id")
    async def get(request: iii_trio.ApiRequest) -> iii_trio.ApiResponse:
        todo = todos.get(request.path_params["id"])
        if todo is None:
            return iii_trio.ApiResponse(404, body={"error": "no such todo"})
        return iii_trio.ApiResponse(200, body=todo)

    @worker.function("todos::export", description="Every todo, streamed as text lines")
    async def export(request: iii_trio.ApiRequest) -> None:
        response = request.response
        assert isinstance(response, iii_trio.ChannelWriter)
        async with response:  # closing the writer ends the HTTP response
            await response.send_message(
                '{"type":"set_headers","headers":{"content-type":"text/plain"}}'
            )
            for todo in todos.values():
                await response.send_all(f"{todo['id']}. {todo['title']}\n".encode())

    # Literal segments win over parameters: /todos/export is not /todos/:id.
    await worker.register_trigger(
        "http", "todos::create", {"api_path": "todos", "http_method": "POST"}
    )
    await worker.register_trigger("http", "todos::get", {"api_path": "todos/:id"})
    await worker.register_trigger("http", "todos::export", {"api_path": "todos/export"})


async def demo(url: str, http_url: str) -> None:
    """Serve the API and call it as curl would, printing each answer."""
    async with iii_trio.open_worker(url, name="todo-api") as worker:
        await serve(worker)
        async with httpx.AsyncClient(base_url=http_url) as client:
            created = await client.post("/todos", json={"title": "milk"})
            print(created.status_code, created.text)
            fetched = await client.get("/todos/1")
            print(fetched.status_code, fetched.text)
            missing = await client.get("/todos/9")
            print(missing.status_code, missing.text)
            exported = await client.get("/todos/export")
            print(exported.status_code, exported.text.strip())


async def run() -> None:
    url = os.environ.get("III_URL")
    if url:
        async with iii_trio.open_worker(url, name="todo-api") as worker:
            await serve(worker)
            print("todo API registered; press Ctrl-C to stop")
            await trio.sleep_forever()
    async with open_dev_engine() as engine:
        assert engine.http_url is not None
        await demo(engine.url, engine.http_url)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the served API quietly
        trio.run(run)
