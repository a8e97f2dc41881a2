"""Channels side by side on session-viability reports of the same sessions, pooled over seeds.

    .venv/bin/python benchmarks/channel_compare.py \
        untrained='benchmarks/results/channel_heldout/untrained_s*.json' \
        shipped='benchmarks/results/channel_heldout/text_targets_s*.json'

Each argument names a channel and a glob (or comma-separated globs, the first taking precedence)
of `ams bench session-viability --json` reports, one per session seed, all run with the same `--n`. Per channel and N it prints every mode's hit-rate over
all the questions of all the seeds, then `hybrid` against `text` on the same questions: how often
`hybrid` is right where `text` is wrong, the reverse, and the two-sided sign-test p-value. `text`
and `oracle` do not use the channel, so a report without them borrows them from another channel's
report of the same seed (`--modes prefix,hybrid` runs are enough for a new channel). Every channel
after the first is then compared with the first on the questions both answered, per N and mode:
right answers, and right in one only. Retrieval
settings do change `text`: compare runs under other retrieval settings with each one's own `text`
reports in its globs.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
from collections import defaultdict
from pathlib import Path


def sign_test(a: int, b: int) -> float:
    """Two-sided exact sign test of a successes against b (ties left out)."""
    n = a + b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a, b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def load(patterns: str) -> dict[tuple[int, int, str], list[dict]]:
    """(seed, n, mode) -> the answers of the reports matching `patterns`, comma-separated globs: a
    mode and session found by an earlier glob are not taken from a later one."""
    out: dict[tuple[int, int, str], list[dict]] = {}
    for pattern in patterns.split(","):
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise SystemExit(f"no report matches {pattern!r}")
        for path in paths:
            report = json.loads(Path(path).read_text())
            seed = report["config"]["seed"]
            for r in report["results"]:
                out.setdefault((seed, r["n"], r["mode"]), r["answers"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("channels", nargs="+", help="name=glob of session-viability reports")
    p.add_argument("--json", default=None, help="write the table here too")
    args = p.parse_args()
    runs = {name: load(pattern) for name, pattern in (c.split("=", 1) for c in args.channels)}
    shared: dict[tuple[int, int, str], list[dict]] = {}
    for answers in runs.values():  # modes that do not use the channel, from whichever report has them
        shared.update({key: a for key, a in answers.items() if key[2] in ("text", "oracle")})
    table: dict = {}
    for name, answers in runs.items():
        sessions = {(seed, n) for seed, n, _ in answers}
        answers = {**{key: a for key, a in shared.items() if key[:2] in sessions}, **answers}
        by_n: dict[int, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        paired: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for (seed, n, mode), rows in sorted(answers.items()):
            by_n[n][mode] += [row["hit"] for row in rows]
            if mode == "hybrid" and (seed, n, "text") in answers:
                text = {row["query"]: row["hit"] for row in answers[(seed, n, "text")]}
                for row in rows:
                    paired[n][0] += row["hit"] and not text[row["query"]]
                    paired[n][1] += text[row["query"]] and not row["hit"]
        table[name] = {}
        for n in sorted(by_n):
            rates = {mode: sum(h) / len(h) for mode, h in sorted(by_n[n].items())}
            line = "  ".join(f"{mode} {rate:.2f}" for mode, rate in rates.items())
            row = {"questions": len(next(iter(by_n[n].values()))), **rates}
            if n in paired:
                gained, lost = paired[n]
                row |= {"hybrid_only": gained, "text_only": lost, "sign_p": sign_test(gained, lost)}
                line += f"  | hybrid vs text: +{gained} / -{lost} (p = {row['sign_p']:.2g})"
            table[name][n] = row
            print(f"{name:>12}  N={n:<5} ({row['questions']} questions)  {line}")
    first, *others = runs
    for name in others:  # each channel against the first, question by question, on the modes both ran
        both: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # hits here, there, only, only
        for key in sorted(set(runs[first]) & set(runs[name])):
            if key[2] in ("text", "oracle"):
                continue
            there = {row["query"]: row["hit"] for row in runs[first][key]}
            for row in runs[name][key]:
                c = both[(key[1], key[2])]
                c[0] += row["hit"]
                c[1] += there[row["query"]]
                c[2] += row["hit"] and not there[row["query"]]
                c[3] += there[row["query"]] and not row["hit"]
        for (n, mode), (here, there, gained, lost) in sorted(both.items()):
            print(f"{name} against {first}  N={n:<5} {mode}: {here} against {there} right; "
                  f"+{gained} / -{lost} on the same questions (p = {sign_test(gained, lost):.2g})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
