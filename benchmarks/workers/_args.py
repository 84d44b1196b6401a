"""Command line shared by the worker scripts, kept free of heavy imports (it counts in start-up).

``<script> [URL] [--functions N] [--extra]``

- ``URL``: engine WebSocket URL; default ``$III_URL``, then ``ws://127.0.0.1:49134``.
- ``--functions N``: register N functions in all: ``bench::fn::0`` .. ``bench::fn::N-2`` and then
  ``bench::echo`` last (default 1: only ``bench::echo``).
- ``--extra``: also register ``bench::relay`` (calls ``bench::echo`` with its payload and returns
  the result) and ``bench::sleep`` (sleeps ``SLEEP_SECONDS``, then echoes), where the worker
  supports them.
"""

from __future__ import annotations

import os
import sys

SLEEP_SECONDS = 0.02


class Args:
    def __init__(self, url: str, functions: int, extra: bool) -> None:
        self.url = url
        self.functions = functions
        self.extra = extra

    def function_ids(self) -> list[str]:
        """Every function id to register, ``bench::echo`` last."""
        return [f"bench::fn::{i}" for i in range(self.functions - 1)] + ["bench::echo"]


def parse(argv: list[str] | None = None) -> Args:
    args = list(sys.argv[1:] if argv is None else argv)
    url = os.environ.get("III_URL") or "ws://127.0.0.1:49134"
    functions = 1
    extra = False
    while args:
        arg = args.pop(0)
        if arg == "--functions":
            functions = max(1, int(args.pop(0)))
        elif arg == "--extra":
            extra = True
        elif arg.startswith("-"):
            raise SystemExit(f"unknown option {arg!r}")
        else:
            url = arg
    return Args(url, functions, extra)
