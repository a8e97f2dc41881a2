"""Does compression cost answers? The session-viability benchmark with raw, int8 and PQ vectors.

    .venv/bin/python benchmarks/codec_hitrate.py [--n 2000] [--modes text,hybrid]

Three stores of the same held-out synthetic session (N facts, 20 questions), differing only in how
the four per-memory vectors are kept:
    raw   never coded (float32; `min_entries` above N)
    int8  what a store of this size gets by default (dense int8 residual, d + 8 bytes a vector)
    pq    every vector PQ-coded as a store past 4096 vectors a set codes them: `min_entries` =
          `pq_min_train` = 1024, so each set first trains with PQ and re-codes every earlier row
          (at N = 2000 that covers all four fields; 248 bytes of codes a memory)
Reports hit-rate per mode, retrieval recall@1/@3 and bytes of vector data per memory.
Results: benchmarks/results/codec_hitrate.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ams.bench.viability import BenchConfig, run

VARIANTS = {
    "raw": {"kakeya": {"min_entries": 10**9}},
    "int8": None,
    "pq": {"kakeya": {"min_entries": 1024, "pq_min_train": 1024}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--modes", default="text,hybrid")
    args = ap.parse_args()
    rows = []
    for name, store_config in VARIANTS.items():
        report = run(BenchConfig(ns=(args.n,), modes=tuple(args.modes.split(",")), store_config=store_config),
                     progress=False)
        for r in report["results"]:
            rows.append({"vectors": name, "mode": r["mode"], "hit_rate": r["hit_rate"], "recall_at_1": r["recall_at_1"],
                         "recall_at_k": r["recall_at_k"], "bytes_per_memory_file": r["bytes_per_memory"]})
            print(json.dumps(rows[-1]), flush=True)
    out = {"command": f"python benchmarks/codec_hitrate.py --n {args.n} --modes {args.modes}", "n": args.n, "rows": rows}
    Path("benchmarks/results/codec_hitrate.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
