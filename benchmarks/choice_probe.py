"""Which retrieved memory is the gold one: the channel's attention against retrieval's fused score,
per question, for choosing how `hybrid` and `prefix` pick one memory (`PrefixConfig.choice_retrieval_weight`).

    .venv/bin/python benchmarks/choice_probe.py --first-seed 10000 --users 8 --facts 20,50 --json PATH
    .venv/bin/python benchmarks/choice_probe.py --read PATH [PATH ...]     # the table over saved records
    .venv/bin/python benchmarks/choice_probe.py ... --holder-weights 0,0.2   # one table per holder_weight

Synthetic users of the held-out split, written to stores on the shipped channel, asked a day after
their last fact; for each question with an answer and a gold fact, the gated retrieved rows (as
`generate` retrieves them), their fused retrieval scores, the channel's relevance of each
(`CrossBundleAttention.relevance`) and which of them are gold: one JSON record per question. Then,
over the records, how often each rule keeps a gold memory: retrieval's first, the attention's first,
and the most log(relevance) + w x fused for a grid of w.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

import ams
from ams.bench.synthetic import generate_session
from ams.bench.viability import write_session
from ams.memory import _gate

WEIGHTS = (2, 5, 10, 14, 20, 33, 50)


def table(records: list[dict]) -> dict[str, int]:
    """Questions whose kept memory is gold, per rule."""
    def right(score) -> int:
        return sum(r["gold"][max(range(len(r["gold"])), key=lambda i: score(r, i))] for r in records)

    def log(x: float) -> float:
        return math.log(max(x, 1e-30))

    out = {"questions": len(records), "gold retrieved": sum(any(r["gold"]) for r in records),
           "retrieval": right(lambda r, i: r["fused"][i]), "attention": right(lambda r, i: r["relevance"][i])}
    for w in WEIGHTS:
        out[f"log relevance + {w} x fused"] = right(lambda r, i, w=w: log(r["relevance"][i]) + w * r["fused"][i])
    several = [r for r in records if len(r["fused"]) > 1]  # the questions with a choice to make
    if several:
        fused = np.concatenate([r["fused"] for r in several])
        out["fused p5 / p50 / p95"] = [round(float(x), 3) for x in np.percentile(fused, [5, 50, 95])]
        out["fused gap, first to second, p50"] = round(float(np.median([r["fused"][0] - r["fused"][1]
                                                                        for r in several])), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--read", nargs="+", default=None, help="print the table over these saved records, pooled")
    p.add_argument("--first-seed", type=int, default=None)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--facts", default="20,50")
    p.add_argument("--holder-weights", default=None,
                   help="comma-separated RetrievalConfig.holder_weight values to collect records under "
                        "(default: the configured one)")
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.read:
        records = [r for path in args.read for r in json.loads(Path(path).read_text())["records"]]
        tables = {w: table([r for r in records if r.get("holder_weight") == w])
                  for w in dict.fromkeys(r.get("holder_weight") for r in records)}
        print(json.dumps(tables if len(tables) > 1 else next(iter(tables.values())), indent=1))
        return
    if args.first_seed is None or args.json is None:
        p.error("--first-seed and --json are needed to collect records")
    facts = [int(x) for x in args.facts.split(",")]
    base = ams.MemoryConfig()
    weights = ([float(w) for w in args.holder_weights.split(",")] if args.holder_weights
               else [base.retrieval.holder_weight])
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for u in range(args.users):
            session = generate_session(facts[u % len(facts)], seed=args.first_seed + u, split="heldout", n_queries=20)
            path = Path(tmp) / f"user{u}.db"
            with ams.Memory.open(path, backbone=args.backbone) as mem:
                memory_of, now = write_session(mem, session)
            for w in weights:
                config = base.model_copy(update={"retrieval": base.retrieval.model_copy(update={"holder_weight": w})})
                with ams.Memory.open(path, backbone=args.backbone, config=config) as mem:
                    records += _records(mem, session, memory_of, now, u, w)
            print(f"user {u}: {len(records)} records", file=sys.stderr, flush=True)
    tables = {w: table([r for r in records if r["holder_weight"] == w]) for w in weights}
    Path(args.json).write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "tables": tables,
                                           "records": records}))
    print(json.dumps(tables, indent=1))


def _records(mem: ams.Memory, session, memory_of: dict[str, str], now: float, user: int, w: float) -> list[dict]:
    """One record per question with an answer and a gold fact: the gated retrieved rows' fused
    scores, the channel's relevance of each, and which are gold."""
    gate = mem.config.retrieval.for_store(False).relative_gate
    out = []
    for q in session.queries:
        gold = {memory_of[f] for f in q.fact_ids if f in memory_of}
        if not q.keywords or not gold:
            continue
        points = mem._query_points(q.text, None, now, {})
        rows, fused, _ = mem._retrieve(points, 3, q.text, now, {})
        kept = _gate(rows, fused, gate)
        _, choice = mem._prefix(mem._prefix_inputs(q.text, points, kept, now), kept)  # no fused: log relevance
        out.append({"user": user, "n": len(session.facts), "holder_weight": w, "query": q.text,
                    "fused": [float(x) for x in fused[: len(kept)]],
                    "relevance": choice.exp().tolist(),
                    "gold": [mem._ids[r] in gold for r in kept]})
    return out


if __name__ == "__main__":
    main()
