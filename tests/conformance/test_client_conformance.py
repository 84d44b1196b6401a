"""Autobahn-style conformance of our WebSocket client, and tests of the harness that measures it.

``test_client_conformance`` runs the client of ``iii_trio._transport`` (through the echo
adapter in ``_clients``) against the fuzzing server, one test per case, and requires each
behaviour verdict to be OK, NON-STRICT or INFORMATIONAL and each close verdict OK (or
INFORMATIONAL, the verdict of the cases whose outcome the spec leaves open).

Which cases: all of groups 1 to 7 and 10, and twelve of the 54 of group 9, one per subgroup:
9.1.1, 9.1.6, 9.2.1, 9.2.6, 9.3.2, 9.3.9, 9.4.2, 9.4.9, 9.5.6, 9.6.6, 9.7.1 and 9.8.6. The 16 MiB
messages (9.1.6, 9.2.6) are kept because they are the largest frame the transport accepts; the
other picks are the cheap end of their subgroup (the same code paths at other sizes). All 54
take 25 to 35 s, most of it in the 64- and 128-octet chops of 9.5 and 9.6, over the budget of
this module; ``python -m tests.conformance`` runs them all.

Time: the cases run once per pytest run, in a module-scoped fixture, 8 at a time (most of a
case is waiting on the server's timers), then the 9.x sample 3 at a time; the tests only read
the results. A conformant client takes a few seconds. More cases at once would not be faster
(the 1-2 s cases set the pace) but would make the ones that trickle octets slower to detect
a bad frame, against timers of 1 s, on a busy machine. A case is bounded by its timers, so a
client that stalls in every case still finishes, in about three minutes.

The harness tests run deliberately broken clients on cases where the defect must show, next
to cases it must not affect, so that neither a harness that fails everything nor one that
passes everything gets through.
"""

from __future__ import annotations

import functools

import pytest
import trio

from ._cases import CASES, CASES_BY_ID, Behavior, Case, CloseBehavior, Message, SendMessage
from ._clients import iii_trio_echo_client, raw_echo_client, wsproto_echo_client
from ._fuzzing_server import (
    CLIENT_EXIT_GRACE,
    CLOSE_HANDSHAKE_TIMEOUT,
    PASSING_BEHAVIORS,
    PASSING_CLOSE_BEHAVIORS,
    CaseResult,
    EchoClient,
    run_cases,
)

_PERFORMANCE_SAMPLE = frozenset(
    {
        "9.1.1",
        "9.1.6",
        "9.2.1",
        "9.2.6",
        "9.3.2",
        "9.3.9",
        "9.4.2",
        "9.4.9",
        "9.5.6",
        "9.6.6",
        "9.7.1",
        "9.8.6",
    }
)
PYTEST_CASES: tuple[Case, ...] = tuple(
    case for case in CASES if case.group != "9" or case.id in _PERFORMANCE_SAMPLE
)


@pytest.fixture(scope="module")
def our_client_results(request: pytest.FixtureRequest) -> dict[str, CaseResult]:
    """The results of the cases selected for this run (all, unless ``-k`` narrows them)."""
    selected = {
        item.callspec.params["case_id"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is request.module
        and hasattr(item, "callspec")
        and "case_id" in item.callspec.params
    }
    cases = [case for case in PYTEST_CASES if case.id in selected]
    run = functools.partial(
        run_cases, cases, iii_trio_echo_client, concurrency=8, heavy_concurrency=3
    )
    return {result.case.id: result for result in trio.run(run)}


@pytest.mark.parametrize("case_id", [case.id for case in PYTEST_CASES])
def test_client_conformance(case_id: str, our_client_results: dict[str, CaseResult]) -> None:
    result = our_client_results[case_id]
    assert result.behavior in PASSING_BEHAVIORS, result.explain()
    assert result.behavior_close in PASSING_CLOSE_BEHAVIORS, result.explain()


# -- the harness -------------------------------------------------------------------------------


async def _run(client: EchoClient, *case_ids: str) -> dict[str, CaseResult]:
    results = await run_cases([CASES_BY_ID[case_id] for case_id in case_ids], client)
    return {result.case.id: result for result in results}


def test_the_case_table_has_the_testsuites_cases() -> None:
    groups = [case.group for case in CASES]
    counts = {group: groups.count(group) for group in dict.fromkeys(groups)}
    assert counts == {
        "1": 16, "2": 11, "3": 7, "4": 10, "5": 20, "6": 145, "7": 37, "9": 54, "10": 1
    }  # fmt: skip
    assert len(CASES_BY_ID) == len(CASES)  # no id twice


def test_utf8_cases_agree_with_pythons_decoder() -> None:
    """6.5.x to 6.23.x say which payloads are valid UTF-8; a mistake there would turn a right
    client into a failure, or the reverse."""
    stress_cases = [c for c in CASES if c.group == "6" and int(c.id.split(".")[1]) >= 5]
    assert len(stress_cases) == 132
    for case in stress_cases:
        (send,) = [step for step in case.steps if isinstance(step, SendMessage)]
        try:
            send.payload.decode("utf-8")
        except UnicodeDecodeError:
            expected: tuple[Message, ...] = ()
        else:
            expected = (Message(send.payload, False),)
        assert case.expected == {Behavior.OK: expected}, case.id


async def test_a_conformant_client_passes() -> None:
    """wsproto, driven directly, on one case of each subgroup (of each kind, in groups 3 to 5)."""
    sample = (
        "1.1.8", "1.2.3", "2.6", "2.9", "3.4", "3.7", "4.1.5", "4.2.2", "5.8", "5.15", "5.20",
        "6.2.3", "6.3.2", "6.4.2", "6.4.4", "6.12.8", "6.22.34", "7.1.5", "7.3.6", "7.5.1",
        "7.7.13", "7.9.5", "9.1.3", "9.3.4", "9.7.2", "10.1.1",
    )  # fmt: skip
    with trio.fail_after(15):
        results = await _run(wsproto_echo_client, *sample)
    failures = [result.explain() for result in results.values() if not result.passed]
    assert not failures, "\n".join(failures)


async def test_a_client_that_never_echoes_fails_the_echo_cases() -> None:
    client = functools.partial(raw_echo_client, echo=False)
    with trio.fail_after(15):
        results = await _run(client, "1.1.1", "5.3", "2.1")
    for case_id in ("1.1.1", "5.3"):
        assert results[case_id].behavior is Behavior.FAILED, results[case_id].explain()
        assert results[case_id].received == ()
    # The server gave up with 1001 (1.1.1: KillAfter) or no code (5.3: CloseAfter), and the
    # client answered with the same: 1001 is not the 1000 that 1.1.1 wants.
    assert results["1.1.1"].behavior_close is CloseBehavior.WRONG_CODE
    assert results["1.1.1"].server_close_code == 1001
    assert results["1.1.1"].duration >= 1.0  # waited for the echo until KillAfter(1)
    assert results["5.3"].behavior_close is CloseBehavior.OK
    # Pings do not need echoes: that case passes.
    assert results["2.1"].passed, results["2.1"].explain()


async def test_a_client_that_drops_tcp_without_a_close_frame_is_unclean() -> None:
    client = functools.partial(raw_echo_client, answer_close=False)
    with trio.fail_after(15):
        results = await _run(client, "1.1.1", "2.1", "7.3.3", "7.9.1")
    for case_id in ("1.1.1", "2.1", "7.3.3"):
        result = results[case_id]
        assert result.behavior is Behavior.OK, result.explain()
        assert result.behavior_close is CloseBehavior.UNCLEAN, result.explain()
        assert not result.was_clean
        assert not result.dropped_by_server
    # 7.9.1 (an invalid close code from the server) allows a dropped connection.
    assert results["7.9.1"].passed, results["7.9.1"].explain()


async def test_a_client_that_ignores_invalid_utf8_fails_the_utf8_cases() -> None:
    invalid = ("6.3.1", "6.4.1", "6.12.1", "6.20.1")
    valid = ("6.2.3", "6.22.1")
    careless: dict[str, CaseResult] = {}
    careful: dict[str, CaseResult] = {}

    async def run_into(results: dict[str, CaseResult], client: EchoClient, *ids: str) -> None:
        results.update(await _run(client, *ids))

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            careless_client = functools.partial(raw_echo_client, check_utf8=False)
            nursery.start_soon(run_into, careless, careless_client, *invalid, *valid)
            nursery.start_soon(run_into, careful, raw_echo_client, *invalid)
    for case_id in invalid:
        assert careless[case_id].behavior is Behavior.FAILED, careless[case_id].explain()
        assert careless[case_id].behavior_close is CloseBehavior.FAILED
        assert careless[case_id].closed_by_server
        assert careless[case_id].server_close_code == 1007  # it refused the echoed text
    for case_id in valid:
        assert careless[case_id].passed, careless[case_id].explain()
    # The same client checking whole messages: conformant, but not fail-fast in 6.4.1.
    for case_id in invalid:
        assert careful[case_id].passed, careful[case_id].explain()
        assert careful[case_id].client_close_code == 1007
    assert careful["6.4.1"].behavior is Behavior.NON_STRICT
    assert careful["6.3.1"].behavior is Behavior.OK


async def test_a_stuck_client_ends_its_case_in_bounded_time() -> None:
    client = functools.partial(raw_echo_client, read=False)
    started = trio.current_time()
    with trio.fail_after(15):
        result = (await _run(client, "1.1.1"))["1.1.1"]
    elapsed = trio.current_time() - started
    assert result.behavior is Behavior.FAILED
    assert result.behavior_close is CloseBehavior.UNCLEAN
    assert result.not_clean_reason == "peer did not respond (in time) in closing handshake"
    assert not result.client_returned
    # KillAfter(1), then the close handshake timeout, then the grace given to the client.
    assert result.duration < 1 + CLOSE_HANDSHAKE_TIMEOUT + 1
    assert elapsed < result.duration + CLIENT_EXIT_GRACE + 1


async def test_a_client_that_raises_is_recorded() -> None:
    async def broken_client(url: str) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError(f"cannot reach {url}")

    with trio.fail_after(5):
        result = (await _run(broken_client, "1.1.1"))["1.1.1"]
    assert result.behavior is Behavior.FAILED
    assert result.behavior_close is CloseBehavior.FAILED
    assert not result.was_open
    assert result.client_error is not None
    assert result.client_error.startswith("RuntimeError: cannot reach ws://127.0.0.1:")
    assert result.duration < 1  # no waiting for a connection that cannot come
