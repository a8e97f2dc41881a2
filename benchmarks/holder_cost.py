"""What the holder channel costs a search: `Memory.search` with `RetrievalConfig.holder_weight` 0
and the default, alternating on the same questions, on one store of held-out synthetic facts.

    .venv/bin/python benchmarks/holder_cost.py --facts 1000 --repeats 5

Two handles on one store file, one per setting; the first search of each question per handle is
left out (it reads the pool's texts once; later searches find them cached), and so is reported
apart as the first-read cost.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import ams
from ams.bench.synthetic import generate_session
from ams.bench.viability import write_session


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--facts", type=int, default=1000)
    p.add_argument("--seed", type=int, default=20_200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    args = p.parse_args()
    session = generate_session(args.facts, seed=args.seed, split="heldout", n_queries=20)
    questions = [q.text for q in session.queries]
    base = ams.MemoryConfig()
    settings = {"0": 0.0, "default": base.retrieval.holder_weight}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.db"
        with ams.Memory.open(path, backbone=args.backbone) as mem:
            _, now = write_session(mem, session)
        handles = {name: ams.Memory.open(path, backbone=args.backbone, config=base.model_copy(update={
            "retrieval": base.retrieval.model_copy(update={"holder_weight": w})})) for name, w in settings.items()}
        ms: dict[str, list[float]] = {name: [] for name in settings}
        first: dict[str, list[float]] = {name: [] for name in settings}
        try:
            for r in range(args.repeats + 1):
                for q in questions:
                    for name, mem in handles.items():
                        t0 = time.perf_counter()
                        mem.search(q, k=3, now=now)
                        (first if r == 0 else ms)[name].append(1000 * (time.perf_counter() - t0))
        finally:
            for mem in handles.values():
                mem.close()
    out = {"facts": args.facts, "questions": len(questions), "repeats": args.repeats,
           **{f"holder_weight {settings[n]}: search ms p50 / p90": [round(float(x), 2) for x in
                                                                  np.percentile(ms[n], [50, 90])] for n in settings},
           **{f"holder_weight {settings[n]}: first search ms p50": round(float(np.median(first[n])), 2)
              for n in settings},
           "p50 ratio": round(float(np.median(ms["default"]) / np.median(ms["0"])), 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
