"""Reopen: `Memory.open` of a large store plus its first answered `search`, and where the time goes.

    .venv/bin/python benchmarks/reopen.py --n 100000 [--store PATH] [--repeats 3] [--catch-up 1000]

Builds (or reuses, with --store) a store of N synthetic train-split facts written with
`write_many` in batches of 2,000, then times, in a process whose models are already loaded,
`Memory.open` and the first `search` after it, --repeats times (median reported), two ways,
alternating: from the rows (the user's snapshot ignored, as every open was before snapshots) and
from the snapshot (`ams.snapshot`). Then: how long after that first search the background scans
are ready and what a search on them costs; the open that reads the rows and stores a new snapshot
(the first open after a store grew by more than a tenth); with --catch-up K, opens from a snapshot
K writes behind (on a copy of the store, K more facts written by another handle); opens in new
processes (models loaded, then one open), where every array is fresh pages; and one profiled
reopen each way, split by stage. The store is written with a 2-layer, 64-wide Llama of
random weights and SmolLM2's tokenizer (seed 0) instead of SmolLM2 itself: encoding 10^5
memories with SmolLM2 takes about an hour here, and reopening reads nothing the backbone made
except its fibers' codec frames (the retrieval keys are MiniLM's, as with the default backbone).
Results go to benchmarks/results/reopen_<n>.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from scale import facts_and_questions

import ams
from ams.bench.tiny import tiny_llama

STAGES = {  # profiled function -> stage name
    "memory_columns": "read memory rows and their content and context vectors (checksums verified)",
    "snapshot": "read the snapshot blob",
    "unpack_snapshot": "check and parse the snapshot",
    "_decode": "decode codes into keys",
    "_append": "row bookkeeping and bundle keys",
    "_sync": "catch up through the history log",
    "_write_snapshot": "store a new snapshot",
    "build": "first search: code the scans (in background threads, which the profile does not see)",
}


@contextmanager
def ignoring_snapshots():
    """Open as before snapshots: from the rows, storing none."""
    saved = ams.Memory._from_snapshot, ams.Memory._write_snapshot
    ams.Memory._from_snapshot = lambda self: False
    ams.Memory._write_snapshot = lambda self: None
    try:
        yield
    finally:
        ams.Memory._from_snapshot, ams.Memory._write_snapshot = saved


def timed_open(path: Path, backbone, questions: list[str], now: float) -> dict:
    """Seconds to open, to the first answered search, for the scans to be ready, and of a search on them."""
    t = time.perf_counter()
    with ams.Memory.open(path, backbone=backbone) as mem:
        t1 = time.perf_counter()
        mem.search(questions[0], k=5, now=now)
        t2 = time.perf_counter()
        for index in mem._index.values():  # scans built in the background: wait, so the next
            index.wait()                   # open does not share the CPU with them
        t3 = time.perf_counter()
        mem.search(questions[1], k=5, now=now)
        t4 = time.perf_counter()
    return {"open_s": t1 - t, "first_search_s": t2 - t1, "reopen_to_first_search_s": t2 - t,
            "scans_ready_after_first_search_s": t3 - t2, "search_on_scans_s": t4 - t3}


def medians(runs: list[dict]) -> dict:
    return {k: round(float(np.median([r[k] for r in runs])), 4) for k in runs[0]} | {
        "runs_reopen_to_first_search_s": [round(r["reopen_to_first_search_s"], 3) for r in runs]}


def profiled(path: Path, backbone, question: str, now: float) -> dict:
    prof = cProfile.Profile()
    prof.enable()
    with ams.Memory.open(path, backbone=backbone) as mem:
        mem.search(question, k=5, now=now)
    prof.disable()
    stats = pstats.Stats(prof).stats
    return {label: round(sum(v[3] for (f, _, name), v in stats.items() if name == fn and "/ams/" in f), 3)
            for fn, label in STAGES.items()}


def drop_snapshot(path: Path) -> None:
    con = sqlite3.connect(path)
    with con:
        con.execute("DELETE FROM snapshots")
    con.close()


def child(path: Path, backbone, how: str, questions: list[str], now: float) -> None:
    """One open in this new process, after loading the models: print its timings as JSON."""
    ams.memory._shared_embedder().encode(["load the models before the clock starts"])
    ams.memory._shared_backbone(backbone)
    with ignoring_snapshots() if how == "rows" else nullcontext():
        print(json.dumps(timed_open(path, backbone, questions, now)))


def in_new_processes(path: Path, n: int, repeats: int) -> dict:
    """Opens from the rows and from the snapshot, each in a process of its own, alternating: a
    server's first open, whose arrays are all fresh pages (the other figures reuse the pages an
    earlier open in the same process freed)."""
    runs: dict[str, list[dict]] = {"rows": [], "snapshot": []}
    for _ in range(repeats):
        for how in runs:
            got = subprocess.run([sys.executable, __file__, "--n", str(n), "--store", str(path), "--child", how],
                                 capture_output=True, text=True, check=True)
            runs[how].append(json.loads(got.stdout.strip().splitlines()[-1]))
    return {f"from_{how}": medians(r) for how, r in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--store", type=Path, help="reuse (or create) the store at this path")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--catch-up", type=int, default=0, help="also time opens from a snapshot this many writes behind")
    ap.add_argument("--json", type=Path, help="where the results go (default benchmarks/results/reopen_<n>.json)")
    ap.add_argument("--child", choices=("rows", "snapshot"), help=argparse.SUPPRESS)  # one open in a new process
    args = ap.parse_args()
    path = args.store or Path(tempfile.mkdtemp()) / "reopen.db"
    backbone = tiny_llama(path.parent / "tiny-backbone")
    items, questions = facts_and_questions(args.n + args.catch_up)
    if args.child:
        return child(path, backbone, args.child, questions[:2], items[args.n - 1]["ts"] + 86400)
    out: dict = {"n": args.n}
    if not path.exists():
        t = time.time()
        with ams.Memory.open(path, backbone=backbone) as mem:
            for i in range(0, args.n, 2000):
                mem.write_many(items[i : min(i + 2000, args.n)])
                print(f"{min(i + 2000, args.n)}/{args.n} written", flush=True)
        out["build_s"] = round(time.time() - t, 1)
    now = items[args.n - 1]["ts"] + 86400
    with ams.Memory.open(path, backbone=backbone) as mem:  # load the models, migrate, store a snapshot
        assert len(mem) == args.n, f"the store holds {len(mem)} memories, not {args.n}"
    rows, snaps = [], []
    for _ in range(args.repeats):
        with ignoring_snapshots():
            rows.append(timed_open(path, backbone, questions, now))
        snaps.append(timed_open(path, backbone, questions, now))
    out["from_rows"], out["from_snapshot"] = medians(rows), medians(snaps)
    out["in_new_processes"] = in_new_processes(path, args.n, args.repeats)
    writes = []
    for _ in range(args.repeats):  # the open that reads the rows and stores the snapshot
        drop_snapshot(path)
        t = time.perf_counter()
        ams.Memory.open(path, backbone=backbone).close()
        writes.append(time.perf_counter() - t)
    out["open_storing_a_snapshot_s"] = round(float(np.median(writes)), 3)
    with sqlite3.connect(path) as con:
        out["snapshot_bytes"] = con.execute("SELECT length(data) FROM snapshots").fetchone()[0]
    out["profiled_stages_s"] = {"from_rows": None, "from_snapshot": profiled(path, backbone, questions[0], now)}
    with ignoring_snapshots():
        out["profiled_stages_s"]["from_rows"] = profiled(path, backbone, questions[0], now)
    if args.catch_up:
        behind = Path(tempfile.mkdtemp()) / "behind.db"
        with sqlite3.connect(path) as src, sqlite3.connect(behind) as dst:
            src.backup(dst)
        with ams.Memory.open(behind, backbone=backbone) as mem:
            mem.write_many(items[args.n : args.n + args.catch_up])
        caught = []
        for _ in range(args.repeats):
            caught.append(timed_open(behind, backbone, questions, now))
            with sqlite3.connect(behind) as con:
                assert con.execute("SELECT rows FROM snapshots").fetchone()[0] == args.n, "the snapshot was replaced"
        out[f"from_snapshot_{args.catch_up}_writes_behind"] = medians(caught)
    out["file_bytes"] = path.stat().st_size
    out["command"] = f"python benchmarks/reopen.py --n {args.n}" + (f" --store {args.store}" if args.store else "") \
        + (f" --repeats {args.repeats}" if args.repeats != 3 else "") \
        + (f" --catch-up {args.catch_up}" if args.catch_up else "") + (f" --json {args.json}" if args.json else "")
    dest = args.json or Path(f"benchmarks/results/reopen_{args.n}.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
