"""Run the conformance cases against an echo client and print a report.

    python -m tests.conformance [--client iii-trio|trio-websocket|wsproto] [--cases 6.4.*,7.*]

Prints, per case group, how many cases got each behaviour verdict and each close verdict, then
every case that is not OK on both, with the reasons. Exits with 1 if any case failed (a
behaviour other than OK, NON-STRICT or INFORMATIONAL, or a close verdict other than OK or
INFORMATIONAL), as the pytest module would.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from collections import Counter
from collections.abc import Sequence

import trio

from ._cases import CASES, Behavior, Case, CloseBehavior
from ._clients import iii_trio_echo_client, trio_websocket_echo_client, wsproto_echo_client
from ._fuzzing_server import CaseResult, EchoClient, run_cases

_CLIENTS: dict[str, EchoClient] = {
    "iii-trio": iii_trio_echo_client,
    "trio-websocket": trio_websocket_echo_client,
    "wsproto": wsproto_echo_client,
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.conformance",
        description="Autobahn-style conformance run (client cases 1-10) of a WebSocket client.",
    )
    parser.add_argument("--client", choices=sorted(_CLIENTS), default="iii-trio")
    parser.add_argument(
        "--cases",
        default="*",
        help="comma-separated case ids or patterns, e.g. '6.4.*,7.*' (default: all)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="cases run at once, except the 9.x ones, which run one at a time (default: 16)",
    )
    return parser


def select_cases(patterns: str) -> list[Case]:
    """The cases whose id matches one of the comma-separated patterns."""
    wanted = [pattern.strip() for pattern in patterns.split(",") if pattern.strip()]
    return [case for case in CASES if any(fnmatch.fnmatchcase(case.id, p) for p in wanted)]


def format_report(results: Sequence[CaseResult]) -> str:
    behaviors = list(Behavior)
    closes = list(CloseBehavior)
    header = ["group", "cases", *(str(b) for b in behaviors), "|", *(str(c) for c in closes)]
    rows: list[list[str]] = []
    groups = sorted({r.case.group for r in results}, key=int)
    for group in [*groups, "all"]:
        members = [r for r in results if group in ("all", r.case.group)]
        behavior_counts = Counter(r.behavior for r in members)
        close_counts = Counter(r.behavior_close for r in members)
        rows.append(
            [
                group,
                str(len(members)),
                *(str(behavior_counts[b]) for b in behaviors),
                "|",
                *(str(close_counts[c]) for c in closes),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    behavior_width = sum(widths[2 : 2 + len(behaviors)]) + 2 * (len(behaviors) - 1)
    lines = [
        " " * (sum(widths[:2]) + 4) + "behaviour".ljust(behavior_width + 2) + "| close behaviour",
    ]
    lines += [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    not_ok = [
        r
        for r in results
        if r.behavior is not Behavior.OK
        or r.behavior_close is not CloseBehavior.OK
        or r.client_error is not None
        or not r.client_returned
    ]
    raised = sum(r.client_error is not None for r in results)
    stuck = sum(not r.client_returned for r in results)
    lines.append("")
    lines.append(
        f"{sum(r.passed for r in results)} of {len(results)} cases pass; "
        f"the client raised in {raised} and had to be cancelled in {stuck}."
    )
    if not_ok:
        lines.append("")
        lines.append(f"Cases not OK ({len(not_ok)}):")
        lines.extend(r.explain() for r in not_ok)
    return "\n".join(lines)


async def _run(client_name: str, cases: list[Case], concurrency: int) -> list[CaseResult]:
    done = 0

    show_progress = sys.stderr.isatty()

    def progress(_result: CaseResult) -> None:
        nonlocal done
        done += 1
        print(f"\r{done}/{len(cases)} cases", end="", file=sys.stderr, flush=True)

    results = await run_cases(
        cases,
        _CLIENTS[client_name],
        concurrency=concurrency,
        agent=client_name,
        on_result=progress if show_progress else None,
    )
    if show_progress:
        print(file=sys.stderr)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    cases = select_cases(args.cases)
    if not cases:
        print(f"no case matches {args.cases!r}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        results = trio.run(_run, args.client, cases, args.concurrency)
    except KeyboardInterrupt:
        return 130
    elapsed = time.monotonic() - started
    print(f"Client {args.client}: {len(results)} cases in {elapsed:.1f} s")
    print()
    print(format_report(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
