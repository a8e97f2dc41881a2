"""The cost of retraining a codec set in a large store: gathering its training vectors, and training.

    .venv/bin/python benchmarks/retrain.py --store /tmp/rs/store/reopen.db [--repeats 5] [--json PATH]

A codec set trains a new version each time it has grown fourfold (`ams.kakeya.registry`), inside
the write that crossed the mark, holding the store's write lock. On a store built by
`benchmarks/reopen.py --n N --store PATH` (the tiny backbone; reused, never written), this times
for each set, alternating, --repeats times (medians):
- `every vector`: what a retrain read before: every stored vector of the set's fields, all users,
  decoded (then sampled down to `max_train` by the codec);
- `sampled`: what it reads now (`Memory._training_vectors`): the vectors of a seeded sample of
  memories, about `max_train`, looked up by write order;
and the peak memory (tracemalloc, which numpy reports to) of each, and the time to train the new
version on the sample (`KakeyaRegistry.train`, on a copy of the registry, so nothing is stored).
Results go to benchmarks/results/retrain_<n>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

import ams
from ams.bench.tiny import tiny_llama


def every_vector(mem: ams.Memory, fields: tuple[str, ...]) -> np.ndarray:
    """The training read a retrain made before sampling: every stored vector, decoded."""
    return np.concatenate([mem._decoded(mem.store.vectors(None, f), f) for f in fields])


def sampled(mem: ams.Memory, fields: tuple[str, ...]) -> np.ndarray:
    """The training read a retrain makes now."""
    return mem._training_vectors(fields)[0]


def measured(fn, *args) -> tuple[float, float, object]:
    """(seconds, peak MB traced, result) of one call."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        out = fn(*args)
        seconds = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    return seconds, peak, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="a store built by benchmarks/reopen.py")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    backbone = tiny_llama(args.store.parent / "tiny-backbone")
    out: dict = {"command": "python " + " ".join(sys.argv), "sets": {}}
    with ams.Memory.open(args.store, backbone=backbone) as mem:
        out["memories"] = mem.store.count()
        out["max_train"] = mem.registry.cfg.max_train
        for name, codec_set in mem.registry.sets.items():
            fields = codec_set.spec.fields
            runs: dict[str, list] = {"every vector": [], "sampled": []}
            for _ in range(args.repeats):
                runs["every vector"].append(measured(every_vector, mem, fields))
                runs["sampled"].append(measured(sampled, mem, fields))
            sample = runs["sampled"][-1][2]
            registry = copy.deepcopy(mem.registry)
            train_s = []
            for _ in range(max(1, args.repeats // 2)):
                t = time.perf_counter()
                registry.train(name, sample, seed=mem.config.prefix.seed, n_vectors=len(runs["every vector"][-1][2]))
                train_s.append(time.perf_counter() - t)
            out["sets"][name] = {
                **{how: {"seconds": round(statistics.median(r[0] for r in rs), 3),
                         "peak_mb": round(statistics.median(r[1] for r in rs), 1), "vectors": len(rs[-1][2])}
                   for how, rs in runs.items()},
                "train_on_sample_s": round(statistics.median(train_s), 3),
            }
            print(name, json.dumps(out["sets"][name]), flush=True)
    path = args.json or Path(__file__).parent / "results" / f"retrain_{out['memories']}.json"
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
