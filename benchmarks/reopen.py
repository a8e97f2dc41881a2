"""Reopen: `Memory.open` of a large store plus its first answered `search`, and where the time goes.

    .venv/bin/python benchmarks/reopen.py --n 100000 [--store PATH] [--repeats 3]

Builds (or reuses, with --store) a store of N synthetic train-split facts written with
`write_many` in batches of 2,000, then times, in a process whose models are already loaded,
`Memory.open` and the first `search` after it, --repeats times (median reported), then how long
after that first search the background scans are ready and what a search on them costs; and
profiles one more reopen to split the time by stage. The store is written with a 2-layer, 64-wide Llama of
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
import tempfile
import time
from pathlib import Path

import numpy as np
from scale import facts_and_questions

import ams
from ams.bench.tiny import tiny_llama

STAGES = {  # profiled function -> stage name
    "memory_columns": "read memory rows and their content and context vectors (checksums verified)",
    "_decode": "decode codes into keys",
    "_append": "row bookkeeping and bundle keys",
    "build": "first search: code the scans (in background threads, which the profile does not see)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--store", type=Path, help="reuse (or create) the store at this path")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="where the results go (default benchmarks/results/reopen_<n>.json)")
    args = ap.parse_args()
    path = args.store or Path(tempfile.mkdtemp()) / "reopen.db"
    backbone = tiny_llama(path.parent / "tiny-backbone")
    items, questions = facts_and_questions(args.n)
    out: dict = {"n": args.n}
    if not path.exists():
        t = time.time()
        with ams.Memory.open(path, backbone=backbone) as mem:
            for i in range(0, args.n, 2000):
                mem.write_many(items[i : i + 2000])
                print(f"{min(i + 2000, args.n)}/{args.n} written", flush=True)
        out["build_s"] = round(time.time() - t, 1)
    now = items[-1]["ts"] + 86400
    with ams.Memory.open(path, backbone=backbone) as mem:  # load the models before the clock starts
        assert len(mem) == args.n, f"the store holds {len(mem)} memories, not {args.n}"
    opens, firsts, ready, seconds = [], [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        with ams.Memory.open(path, backbone=backbone) as mem:
            t1 = time.perf_counter()
            mem.search(questions[0], k=5, now=now)
            firsts.append(time.perf_counter() - t1)
            t2 = time.perf_counter()
            for index in mem._index.values():  # scans built in the background: wait, so the next
                index.wait()                   # repeat does not share the CPU with them
            ready.append(time.perf_counter() - t2)
            t3 = time.perf_counter()
            mem.search(questions[1], k=5, now=now)
            seconds.append(time.perf_counter() - t3)
        opens.append(t1 - t)
    out["open_s"] = round(float(np.median(opens)), 3)
    out["first_search_s"] = round(float(np.median(firsts)), 3)
    out["reopen_to_first_search_s"] = round(float(np.median(np.add(opens, firsts))), 3)
    out["scans_ready_after_first_search_s"] = round(float(np.median(ready)), 3)
    out["search_on_scans_s"] = round(float(np.median(seconds)), 4)
    prof = cProfile.Profile()
    prof.enable()
    with ams.Memory.open(path, backbone=backbone) as mem:
        mem.search(questions[0], k=5, now=now)
    prof.disable()
    stats = pstats.Stats(prof).stats
    out["profiled_stages_s"] = {
        label: round(sum(v[3] for (f, _, name), v in stats.items() if name == fn and "/ams/" in f), 3)
        for fn, label in STAGES.items()}
    out["file_bytes"] = path.stat().st_size
    out["command"] = f"python benchmarks/reopen.py --n {args.n}" + (f" --store {args.store}" if args.store else "") \
        + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + (f" --json {args.json}" if args.json else "")
    dest = args.json or Path(f"benchmarks/results/reopen_{args.n}.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
