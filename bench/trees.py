"""Before and after, in one run: the worker of another tree (a commit checked out with ``git worktree``) and the
worker of this one drain the same backlog in alternating rounds, as ``bench/worker.py`` drains it.

    git worktree add /tmp/before <commit>
    python bench/trees.py /tmp/before [--rounds 4] [--count 30000] [--per-message 32] [--traffic new-people]

Each drain is ``python -m workers worker --drain`` started in the tree measured, with that tree first on the
path, so only the worker's code differs; the backlog, the broker, Postgres and this script are shared. Rounds
alternate which tree goes first, so that the machine's drift (shared machines drift) falls on both. Prints each
drain on stderr and the medians as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import worker as worker_bench
from traffic import callbacks

from workers.tools.simulator import scenario

HERE = Path(__file__).resolve().parent.parent


def drain(name: str, tree: Path, count: int, bodies: list[bytes], per_message: int) -> float:
    """Callbacks/s, first consume to drained, of the worker of ``tree``."""
    os.chdir(tree)  # `python -m` puts the working directory first on the path
    os.environ["PYTHONPATH"] = str(tree)
    try:
        _, rate, _ = worker_bench.run(name, "worker", count, bodies, per_message=per_message)
    finally:
        os.chdir(HERE)
    if rate is None:
        raise RuntimeError(f"the worker of {tree} logged no drain")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="the other tree: a checkout of the commit to compare with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--count", type=int, default=30_000, help="backlog per drain")
    parser.add_argument("--per-message", type=int, nargs="+", default=[32], help="callbacks per message (1: none)")
    parser.add_argument("--traffic", choices=("new-people", "simulate"), default="new-people")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": HERE}
    if args.traffic == "simulate":
        bodies = [callback.body for callback in scenario(seed=1, people=args.count // 6).callbacks][: args.count]
    else:
        bodies = [json.dumps(c, separators=(",", ":")).encode() for c in callbacks(args.count)]

    rates: dict[tuple[str, int], list[float]] = {}
    for number in range(args.rounds):
        order = list(trees) if number % 2 == 0 else list(reversed(trees))
        for per_message in args.per_message:
            for name in order:
                print(f"round {number + 1}/{args.rounds}, {per_message} per message: {name}", file=sys.stderr)
                rates.setdefault((name, per_message), []).append(
                    drain(name, trees[name], args.count, bodies, per_message)
                )

    print(f"\n{args.count:,} callbacks ({args.traffic}), {args.rounds} rounds; callbacks/s draining, median (range)\n")
    print("| callbacks per message | before | after | after / before |")
    print("|---:|---:|---:|---:|")
    for per_message in args.per_message:
        before, after = rates[("before", per_message)], rates[("after", per_message)]
        cells = [f"{statistics.median(r):,.0f} ({min(r):,.0f} to {max(r):,.0f})" for r in (before, after)]
        ratio = statistics.median(after) / statistics.median(before)
        print(f"| {per_message} | {cells[0]} | {cells[1]} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
