"""Does compression cost answers? The session-viability benchmark with raw, int8 and PQ vectors.

    .venv/bin/python benchmarks/codec_hitrate.py [--n 2000] [--modes text,hybrid] [--variants raw,int8,pq,kakeya-pq]
        [--queries 20] [--retrieval-only] [--out benchmarks/results/codec_hitrate.json]

Stores of the same held-out synthetic session (N facts, --queries questions), differing only in how
the four per-memory vectors are kept:
    raw   never coded (float32; `min_entries` above N)
    int8  what a store of this size gets by default (dense int8 residual, d + 8 bytes a vector)
    pq    every vector PQ-coded as a store past 4096 vectors a set codes them: `min_entries` =
          `pq_min_train` = 1024, so each set first trains its compact codec and re-codes every
          earlier row (at N = 2000 that covers all four fields; 248 bytes of codes a memory)
    kakeya-pq  the same with Kakeya-PQ as the compact codec (`codec="kakeya-pq"`), at the same bytes
Reports hit-rate per mode, retrieval recall@1/@3 and bytes of vector data per memory; with
--retrieval-only, recall@1/@3 of AMS's fused retrieval (`retrieval:ams`) and of flat MiniLM search
over the decoded content keys (`retrieval:flat`) without generating, so many questions are cheap.
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
    "pq": {"kakeya": {"min_entries": 1024, "pq_min_train": 1024, "codec": "pq"}},
    "kakeya-pq": {"kakeya": {"min_entries": 1024, "pq_min_train": 1024, "codec": "kakeya-pq"}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--modes", default="text,hybrid")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--queries", type=int, default=20,
                    help="questions asked for (the generator may make fewer: each row records how many were asked)")
    ap.add_argument("--retrieval-only", action="store_true", help="recall only, no generation")
    ap.add_argument("--out", default="benchmarks/results/codec_hitrate.json")
    args = ap.parse_args()
    if unknown := set(args.variants.split(",")) - set(VARIANTS):
        ap.error(f"unknown variants: {sorted(unknown)}")
    rows = []
    for name in args.variants.split(","):
        store_config = VARIANTS[name]
        report = run(BenchConfig(ns=(args.n,), modes=tuple(args.modes.split(",")), store_config=store_config,
                                 queries=args.queries, retrieval_only=args.retrieval_only), progress=False)
        for r in report["results"]:
            rows.append({"vectors": name, "mode": r["mode"], "questions": r["queries"], "hit_rate": r["hit_rate"],
                         "recall_at_1": r["recall_at_1"],
                         "recall_at_k": r["recall_at_k"], "bytes_per_memory_file": r["bytes_per_memory"]})
            print(json.dumps(rows[-1]), flush=True)
    out = {"command": f"python benchmarks/codec_hitrate.py --n {args.n} --modes {args.modes} --variants {args.variants}"
                      f" --queries {args.queries}" + (" --retrieval-only" if args.retrieval_only else "")
                      + f" --out {args.out}", "n": args.n, "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
