"""Whose salient words a prefix should carry: a probe of a trained channel, no training.

    .venv/bin/python benchmarks/salient_probe.py --json benchmarks/results/salient_probe.json

Builds the questions `ams train` validates on (8 held-out users from `ams.train.VAL_SEEDS`, as the
default recipe builds them) and, with the channel a store opens by default (or `--weights`), reports:
- how often every token of the answer is among the prefix's salient words, and how often the gold
  memory was retrieved at all;
- how often the channel's topic and context attention, and retrieval's first place, pick the gold memory;
- greedy hit-rates in `prefix` and `hybrid` mode with the salient words of every retrieved memory,
  of the first retrieved one, and of the one the channel attends to most.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

import ams
from ams.attention import CrossBundleAttention
from ams.train import VAL_SEEDS, answer_hits, build_examples, prefixes


def only(ex, keep):
    """The example with the salient words of memory `keep` only."""
    sel = ex.inputs["token_memory"] == keep
    return dataclasses.replace(ex, inputs={**ex.inputs, "token_ids": ex.inputs["token_ids"][sel],
                                           "token_memory": ex.inputs["token_memory"][sel]})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    p.add_argument("--weights", default=None, help="channel weights (default: the shipped channel)")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    examples = build_examples(args.backbone, "heldout", args.users, facts=(20, 50), queries=20, k=3, seed=0,
                              salient_tokens=8, first_seed=VAL_SEEDS)
    with ams.Memory.open(":memory:", backbone=args.backbone, weights=args.weights) as mem:
        bb, channel = mem.backbone, mem.attention
        tok = bb.tokenizer
        covered = 0
        for ex in examples:
            ids = set(ex.inputs["token_ids"].tolist())
            spellings = {f"{lead}{w}" for w in (ex.keywords[0], ex.keywords[0].lower()) for lead in ("", " ")}
            covered += any(all(t in ids for t in tok.encode(s, add_special_tokens=False)) for s in spellings)
        with torch.no_grad():
            _, w = prefixes(channel, bb, examples)
        attended = CrossBundleAttention.relevance(w).argmax(-1).tolist()
        n = len(examples)
        report = {"questions": n, "weights": mem.weights or "untrained",
                  "answer_in_salient_words": covered / n,
                  "gold_retrieved": sum(ex.gold >= 0 for ex in examples) / n,
                  "gold_first_by_attention": sum(a == ex.gold for a, ex in zip(attended, examples)) / n,
                  "gold_first_by_retrieval": sum(ex.gold == 0 for ex in examples) / n, "hits": {}}
        readings = {"every memory": examples, "first retrieved": [only(ex, 0) for ex in examples],
                    "attended": [only(ex, a) for ex, a in zip(examples, attended)]}
        for name, xs in readings.items():
            report["hits"][name] = {mode: answer_hits(channel, bb, xs, mode, max_new_tokens=30)[0]
                                    for mode in ("prefix", "hybrid")}
            print(f"{name:>16}: prefix {report['hits'][name]['prefix']:.3f}  hybrid {report['hits'][name]['hybrid']:.3f}",
                  flush=True)
    print({k: v for k, v in report.items() if k != "hits"})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
