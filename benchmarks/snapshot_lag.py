"""Reopen from a snapshot that lags the log: how the catch-up grows with the writes since, against
reading the rows. What `ams.memory.SNAPSHOT_LAG` (the lag past which opening reads the rows) is set by.

    .venv/bin/python benchmarks/snapshot_lag.py --store /tmp/rs/store/reopen.db --n 100000 --behind 1000,5000,10000

On a copy of a store made by `benchmarks/reopen.py` (with its snapshot), writes more synthetic
facts with another handle, up to each --behind count in turn, and at each times `Memory.open`
plus the first answered search from the snapshot (the lag bound lifted so it is used) and from
the rows, alternating, --repeats times (medians), in one process whose models are loaded.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
from reopen import ignoring_snapshots, timed_open
from scale import facts_and_questions

import ams
import ams.memory
from ams.bench.tiny import tiny_llama


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="a store made by benchmarks/reopen.py")
    ap.add_argument("--n", type=int, required=True, help="the memories it holds")
    ap.add_argument("--behind", default="1000,5000,10000", help="writes since the snapshot, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    behind = sorted(int(b) for b in args.behind.split(","))
    backbone = tiny_llama(args.store.parent / "tiny-backbone")
    items, questions = facts_and_questions(args.n + behind[-1])
    now = items[args.n - 1]["ts"] + 86400
    copy = Path(tempfile.mkdtemp()) / "lagging.db"
    with sqlite3.connect(args.store) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    ams.memory.SNAPSHOT_LAG = float("inf")  # always use the snapshot, however far behind
    with ams.Memory.open(copy, backbone=backbone) as mem:
        assert len(mem) == args.n and mem.verify()["snapshot"]["events_since"] == 0, "no current snapshot"
    rows, written = [], 0
    for target in behind:
        with ams.Memory.open(copy, backbone=backbone) as mem:
            for i in range(args.n + written, args.n + target, 2000):
                mem.write_many(items[i : min(i + 2000, args.n + target)])
        written = target
        snap, full = [], []
        for _ in range(args.repeats):
            snap.append(timed_open(copy, backbone, questions, now)["reopen_to_first_search_s"])
            with ignoring_snapshots():
                full.append(timed_open(copy, backbone, questions, now)["reopen_to_first_search_s"])
        rows.append({"behind": target, "from_snapshot_s": round(float(np.median(snap)), 3),
                     "from_rows_s": round(float(np.median(full)), 3), "runs_snapshot": [round(x, 3) for x in snap],
                     "runs_rows": [round(x, 3) for x in full]})
        print(json.dumps(rows[-1]), flush=True)
    report = {"n": args.n, "rows": rows, "command": "python benchmarks/snapshot_lag.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
