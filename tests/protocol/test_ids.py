"""Invocation ids are canonical random UUIDv4 strings, never repeated."""

from __future__ import annotations

import uuid

from iii_trio._protocol._ids import new_invocation_id


def test_ids_are_canonical_version_4_uuids() -> None:
    for _ in range(3000):  # crosses several refills of the random pool
        text = new_invocation_id()
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lowercase, hyphenated: the engine's canonical form


def test_ids_do_not_repeat() -> None:
    ids = [new_invocation_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
