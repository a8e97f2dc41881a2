"""Salient words at answer time: one forward pass per retrieved memory against one padded batch.

    .venv/bin/python benchmarks/salient_batch.py

With trained channel weights, `prefix` and `hybrid` read each retrieved memory's most surprising
words (`HFBackbone.salient_ids`) when they answer. This times that call for k = 3 memories (30
groups of synthetic train-split facts, SmolLM2-135M-Instruct, medians) with `batch_size=1`
(one pass per memory, as before) and the default batch, and checks both pick the same words.
Results go to benchmarks/results/salient_batch.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from scale import facts_and_questions

from ams.memory import _shared_backbone


def main() -> None:
    bb = _shared_backbone("smollm2-135m-instruct")
    items, _ = facts_and_questions(300)
    texts = [it["text"] for it in items]
    bb.salient_ids(texts[:3], 8)  # warm up
    one, batched, same = [], [], 0
    for i in range(0, 90, 3):
        group = texts[i : i + 3]
        t = time.perf_counter()
        a = bb.salient_ids(group, 8, batch_size=1)
        one.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = bb.salient_ids(group, 8)
        batched.append(time.perf_counter() - t)
        same += a == b
    out = {"k": 3, "groups": 30, "one_pass_each_p50_ms": round(1000 * float(np.median(one)), 1),
           "batched_p50_ms": round(1000 * float(np.median(batched)), 1), "equal_picks": same,
           "command": "python benchmarks/salient_batch.py"}
    Path("benchmarks/results/salient_batch.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
