"""Does an SPCE backbone answer better when memories' write times reach its rotary phases?

    python benchmarks/spce_timeline.py --out benchmarks/results/spce_timeline.json

With `timeline_tokens_per_day = r`, memories in the prompt are shown oldest first and each one's
tokens sit r token steps further back per day of age (see `MemoryConfig`). The sweep compares, on
synthetic sessions (facts over nine months, some overridden later), through `ams bench`'s runner:
    plain      r = 0: token positions, memories best first (the source model's behaviour)
    ordered    r = 1e-6: oldest first, no gaps (separates the ordering from the gaps)
    r = 1, 4   oldest first with gaps of r tokens a day
The rate is chosen on the train split; the held-out split is the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ams.bench.viability import BenchConfig, run

SETTINGS = {"plain": 0.0, "ordered": 1e-6, "r=1": 1.0, "r=4": 4.0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="spce:smollm2-135m-instruct")
    p.add_argument("--ns", type=int, nargs="+", default=[20, 100])
    p.add_argument("--modes", nargs="+", default=["text", "full"])
    p.add_argument("--queries", type=int, default=40)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--splits", nargs="+", default=["train", "heldout"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", default="benchmarks/results/spce_timeline.json")
    args = p.parse_args()
    settings = {k: SETTINGS[k] for k in args.settings}
    rows = []
    for split in args.splits:
        for seed in args.seeds:
            for name, rate in settings.items():
                t0 = time.perf_counter()
                cfg = BenchConfig(session="synthetic", ns=tuple(args.ns), modes=tuple(args.modes), backbone=args.backbone,
                                  queries=args.queries, seed=seed, split=split,
                                  store_config={"timeline_tokens_per_day": rate})
                report = run(cfg, progress=False)
                for r in report["results"]:
                    rows.append({"split": split, "seed": seed, "setting": name, "rate": rate, "n": r["n"],
                                 "mode": r["mode"], "hit_rate": r["hit_rate"], "queries": r["queries"],
                                 "mean_prompt_tokens": r["mean_prompt_tokens"]})
                    print(f"{split:>8} seed {seed} {name:>8} N={r['n']:<4} {r['mode']:>5} hit {r['hit_rate']:.3f}",
                          flush=True)
                print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "settings": settings,
                                          "rows": rows}, indent=1))
    print(f"{'split':>8} {'setting':>8} " + " ".join(f"{m}@{n:<5}" for n in args.ns for m in args.modes))
    for split in args.splits:
        for name in settings:
            cells = []
            for n in args.ns:
                for m in args.modes:
                    hs = [r for r in rows if (r["split"], r["setting"], r["n"], r["mode"]) == (split, name, n, m)]
                    hits = sum(r["hit_rate"] * r["queries"] for r in hs)
                    cells.append(f"{hits:.0f}/{sum(r['queries'] for r in hs):<6}")
            print(f"{split:>8} {name:>8} " + " ".join(f"{c:>11}" for c in cells))


if __name__ == "__main__":
    main()
