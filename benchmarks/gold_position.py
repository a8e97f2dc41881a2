"""Where the gold memory was among the memories an answer used, and whether it was answered.

    .venv/bin/python benchmarks/gold_position.py 'benchmarks/results/channel_heldout/attended_s*.json'
    .venv/bin/python benchmarks/gold_position.py 'benchmarks/results/channel_heldout/hybrid_attended_s*.json' \
        --versus 'benchmarks/results/channel_heldout/attended_s*.json'

Reads `ams bench session-viability --json` reports (one per session seed) and, per N, tabulates
the `hybrid` answers (`--mode` for another) by where the gold memory stood in `memory_ids` (first,
later, or not used), how many memories were used, and whether the answer was a hit. With
`--versus`, the same questions in other reports: how often the first memory used is gold in one
and not the other (say, the channel's choice against retrieval's first).
"""

from __future__ import annotations

import argparse
import glob
import json
from collections import Counter


def answers(pattern: str, mode: str) -> dict[tuple[int, int], list[dict]]:
    """(seed, n) -> the mode's answers, from the reports matching `pattern`."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SystemExit(f"no report matches {pattern!r}")
    out = {}
    for path in paths:
        report = json.load(open(path))
        for r in report["results"]:
            if r["mode"] == mode:
                out[(report["config"]["seed"], r["n"])] = r["answers"]
    return out


def position(a: dict) -> str:
    gold = set(a["gold"])
    if not gold & set(a["used"]):
        return "not used"
    return "first" if a["used"][0] in gold else "later"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("reports", help="glob of session-viability reports")
    p.add_argument("--versus", default=None, help="glob of reports of the same sessions to compare the first memory with")
    p.add_argument("--mode", default="hybrid")
    args = p.parse_args()
    mine = answers(args.reports, args.mode)
    for n in sorted({n for _, n in mine}):
        rows = [a for (s, m), xs in sorted(mine.items()) if m == n for a in xs]
        table = Counter((position(a), len(a["used"]), a["hit"]) for a in rows)
        print(f"N={n} ({len(rows)} questions): gold memory, memories used, hit -> questions")
        for key in sorted(table):
            print(f"   {key[0]:>8}  {key[1]}  {'hit ' if key[2] else 'miss'}  {table[key]}")
        if args.versus:
            other = answers(args.versus, args.mode)
            both = Counter()
            for key, xs in mine.items():
                if key[1] != n or key not in other:
                    continue
                for a, b in zip(xs, other[key]):
                    if a["query"] != b["query"]:
                        raise SystemExit(f"the reports ask different questions (seed {key[0]}, N={n})")
                    both[(position(a) == "first", position(b) == "first")] += 1
            print(f"   first memory gold: here and not there {both[(True, False)]}, there and not here "
                  f"{both[(False, True)]}, both {both[(True, True)]}, neither {both[(False, False)]}")


if __name__ == "__main__":
    main()
