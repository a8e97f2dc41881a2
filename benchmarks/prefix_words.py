"""Answer-time cost of the prefix's salient words: every retrieved memory's read, then the chosen
one's kept (the route before), against the attention first and the kept memory's words read only.

    .venv/bin/python benchmarks/prefix_words.py [--users 5] [--facts 20] [--json PATH]

With the shipped channel (salient words on, `PrefixConfig.salient_memories` = 1), a `prefix` or
`hybrid` answer reads its memories' most surprising words with a forward pass of the backbone over
their texts (`HFBackbone.salient_ids`). The route before read every retrieved memory's and threw
all but one memory's away; `Memory._plan(example=True)` still reads them all (training examples
need them), so the two routes are timed side by side, alternating, on the same questions: held-out
synthetic users, `hybrid`, k = 3, through the retrieval and gate `generate` uses. Reported: median
and 90th-percentile planning time (retrieval, attention, salient words, prompt; what
`Generation.retrieve_ms` reports), their ratio, the memories retrieved, and whether both routes
built the same prefix. Results go to benchmarks/results/prefix_words_<facts>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import ams
from ams.bench.synthetic import generate_session
from ams.config import MemoryConfig, PrefixConfig
from ams.train import VAL_SEEDS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--facts", type=int, default=20)
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    p.add_argument("--json", default=None, help="default: benchmarks/results/prefix_words_<facts>.json")
    args = p.parse_args()
    ms: dict[str, list[float]] = {"every memory's words, then kept": [], "the kept memory's words only": []}
    retrieved, same, questions = [], 0, 0
    for u in range(args.users):
        s = generate_session(args.facts, seed=VAL_SEEDS + u, split="heldout")
        config = MemoryConfig(prefix=PrefixConfig(hybrid_text="retrieved"))  # the same prompt both ways
        with ams.Memory.open(":memory:", backbone=args.backbone, config=config) as mem:
            mem.write_many([{"text": f.text, "ts": f.ts} for f in s.facts])
            now = max(f.ts for f in s.facts) + 3600
            mem._plan(s.queries[0].text, "hybrid", 3, 30, None, None, now)  # warm up
            for i, q in enumerate(s.queries):
                plans = {}
                for every in ((True, False) if i % 2 else (False, True)):  # alternate which goes first
                    t0 = time.perf_counter()
                    plans[every] = mem._plan(q.text, "hybrid", 3, 30, None, None, now, example=every)
                    ms[list(ms)[0 if every else 1]].append(1000 * (time.perf_counter() - t0))
                questions += 1
                retrieved.append(len(plans[True].rows))
                a, b = plans[True].prefix, plans[False].prefix
                same += a is None and b is None or a is not None and b is not None and a.shape == b.shape \
                    and bool(torch.allclose(a, b))
    report = {"users": args.users, "facts": args.facts, "questions": questions, "k": 3, "mode": "hybrid",
              "mean_retrieved": round(float(np.mean(retrieved)), 2), "same_prefix": same,
              "plan_ms": {name: {"p50": round(float(np.median(x)), 1), "p90": round(float(np.percentile(x, 90)), 1)}
                          for name, x in ms.items()},
              "command": f"python benchmarks/prefix_words.py --users {args.users} --facts {args.facts}"}
    before, after = (report["plan_ms"][n]["p50"] for n in ms)
    report["p50_ratio"] = round(after / before, 3)
    Path(args.json or f"benchmarks/results/prefix_words_{args.facts}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
