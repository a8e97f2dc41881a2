"""What `hybrid`'s prompt should show of the retrieved memories (`PrefixConfig.hybrid_text`), with
the shipped channel, through the public API.

    .venv/bin/python benchmarks/hybrid_text_probe.py [--first-seed 10000] [--users 8] [--json PATH]

Synthetic users of the held-out split (by default those `ams train` validates on: session seeds
10,000 onwards, 20 and 50 facts in turn, 20 questions each, those with an answer and a gold fact),
asked a day after their last fact as the benchmark asks. Each question is answered in `text`, in
`oracle` (text mode given the gold facts alone, as the benchmark's), in `prefix`, and in
`hybrid` once per setting, each on its own copy of the store (answers count accesses, which
the prefix reads): every retrieved memory in retrieval order (as before), the memory the
store chooses moved first, or that memory alone. Reported per setting: the hit-rate,
the questions right where `text` is wrong and the reverse, and how often the store's choice
(`PrefixConfig.choice_retrieval_weight`) and retrieval's first are gold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import ams
from ams.bench.synthetic import generate_session
from ams.bench.viability import write_session
from ams.config import MemoryConfig, PrefixConfig
from ams.session import is_hit
from ams.train import VAL_SEEDS

SETTINGS = ("retrieved", "chosen_first", "chosen")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--first-seed", type=int, default=VAL_SEEDS)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--facts", default="20,50")
    p.add_argument("--max-questions", type=int, default=120)
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    p.add_argument("--weights", default=None, help="channel weights (default: the shipped channel)")
    p.add_argument("--choice-retrieval-weight", type=float, default=PrefixConfig().choice_retrieval_weight,
                   help="PrefixConfig.choice_retrieval_weight (default: the store's default)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    facts = [int(x) for x in args.facts.split(",")]
    hits: dict[str, list[bool]] = {m: [] for m in ("text", "oracle", "prefix", *SETTINGS)}
    first_gold = chosen_gold = questions = 0
    with tempfile.TemporaryDirectory() as tmp:
        for u in range(args.users):
            if questions >= args.max_questions:
                break
            session = generate_session(facts[u % len(facts)], seed=args.first_seed + u, split="heldout",
                                       n_queries=20)
            path = Path(tmp) / f"user{u}.db"
            with ams.Memory.open(path, backbone=args.backbone, weights=args.weights) as mem:
                memory_of, now = write_session(mem, session)
            asked = [q for q in session.queries if q.keywords and any(f in memory_of for f in q.fact_ids)]
            asked = asked[: args.max_questions - questions]
            questions += len(asked)
            texts = [q.text for q in asked]
            gold_ids = [[memory_of[f] for f in q.fact_ids if f in memory_of] for q in asked]
            for setting in hits:  # each on a copy: answers count accesses, which the prefix reads
                copy = shutil.copy(path, Path(tmp) / f"user{u}-{setting}.db")
                config = MemoryConfig(prefix=PrefixConfig(hybrid_text=setting if setting in SETTINGS else "retrieved",
                                                          choice_retrieval_weight=args.choice_retrieval_weight))
                with ams.Memory.open(copy, backbone=args.backbone, weights=args.weights, config=config) as mem:
                    if setting not in SETTINGS:  # oracle: text mode with the gold facts alone, as the benchmark's
                        gens = mem.generate_many(texts, mode="text" if setting == "oracle" else setting,
                                                 max_new_tokens=30, now=now,
                                                 memory_ids=gold_ids if setting == "oracle" else None)
                        hits[setting] += [is_hit(g.text, q.keywords, q.forbidden) for q, g in zip(asked, gens)]
                        continue
                    gens = mem.generate_many(texts, mode="hybrid", max_new_tokens=30, now=now)
                    for q, g, gold in zip(asked, gens, gold_ids):
                        hits[setting].append(is_hit(g.text, q.keywords, q.forbidden))
                        if setting == "retrieved":
                            first_gold += bool(g.memory_ids) and g.memory_ids[0] in gold
                        if setting == "chosen":
                            chosen_gold += bool(g.memory_ids) and g.memory_ids[0] in gold
            print(f"user {u}: {questions} questions; " + "  ".join(f"{m} {sum(h) / len(h):.3f}" for m, h in hits.items()),
                  flush=True)
    text = hits["text"]
    report = {"first_seed": args.first_seed, "users": args.users, "questions": questions,
              "weights": args.weights or "shipped", "text_hit": sum(text) / questions,
              "oracle_hit": sum(hits["oracle"]) / questions, "prefix_hit": sum(hits["prefix"]) / questions,
              "choice_retrieval_weight": args.choice_retrieval_weight,
              "gold_first_by_retrieval": first_gold / questions, "gold_chosen": chosen_gold / questions,
              "hybrid": {s: {"hit": sum(hits[s]) / questions,
                             "right_where_text_wrong": sum(h and not t for h, t in zip(hits[s], text)),
                             "text_right_where_wrong": sum(t and not h for h, t in zip(hits[s], text))}
                         for s in SETTINGS},
              "command": " ".join(["python", *sys.argv])}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
