"""The demo function's description and request schema, shared by the CLI tests and the
official-SDK peer that serves the same function, so ``--help`` output is checked against one
definition whichever worker serves it."""

from __future__ import annotations

from typing import Any

DEMO_DESCRIPTION = "Echo the payload back.\nUsed by the CLI tests."
DEMO_REQUEST_FORMAT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "who is asking"},
        "count": {"type": ["integer", "null"], "description": "how many\ntimes"},
        "extra": {},
    },
    "required": ["name"],
}
