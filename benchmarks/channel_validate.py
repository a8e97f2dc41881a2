"""Trained channels side by side on held-out users that neither training nor the benchmark sees.

    .venv/bin/python benchmarks/channel_validate.py \
        default=benchmarks/results/channel/channel.safetensors \
        prefix80=benchmarks/results/channel_prefix_80/channel.safetensors \
        --json benchmarks/results/channel_validation.json

Builds the channel's inputs for `--users` synthetic users of the held-out split whose session seeds
start at `--first-seed` (20,000: `ams train` validates on seeds from 10,000 and the benchmark
writes seed 0), exactly as `ams train` builds them (real stores, the retrieval `generate` uses,
the salient tokens per memory each channel's file names). Then, for each channel, greedy answers
(30 new tokens) in `prefix` and `hybrid` mode to the first `--answers` questions, the prefix
keeping the salient words of `--salient-memories` memories, and once in `text` mode (the hybrid
prompt without a prefix). Besides hit-rates it counts, per channel, the questions `hybrid` gets right
and `text` wrong and the reverse: on the same questions, that is the comparison that matters.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from safetensors import safe_open

import ams
from ams.config import PrefixConfig
from ams.train import answer_hits, build_examples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("channels", nargs="+", help="name=path of channel weights")
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    p.add_argument("--users", type=int, default=12)
    p.add_argument("--answers", type=int, default=120)
    p.add_argument("--first-seed", type=int, default=20_000)
    p.add_argument("--salient-memories", type=int, default=PrefixConfig().salient_memories,
                   help="memories whose salient words the prefix keeps, 0 for all (default: the store's default)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    channels = dict(c.split("=", 1) for c in args.channels)

    built: dict[int, list] = {}  # the same users and questions; salient tokens as each channel reads them

    def examples_for(path: str) -> list:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        key = int(meta.get("salient_tokens", 8))
        if key not in built:
            t0 = time.perf_counter()
            built[key] = build_examples(args.backbone, "heldout", args.users, facts=(20, 50), queries=20, k=3, seed=0,
                                        salient_tokens=key, first_seed=args.first_seed)[: args.answers]
            print(f"{len(built[key])} questions from {args.users} held-out users "
                  f"({sum(ex.gold >= 0 for ex in built[key]) / len(built[key]):.2f} with the gold memory retrieved), "
                  f"salient tokens {key}: built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return built[key]

    examples = examples_for(next(iter(channels.values())))
    report: dict = {"users": args.users, "first_seed": args.first_seed, "questions": len(examples),
                    "salient_memories": args.salient_memories, "channels": {}}
    with ams.Memory.open(":memory:", backbone=args.backbone, weights="untrained") as mem:  # text uses no channel
        text_rate, text = answer_hits(mem.attention, mem.backbone, examples, "text", max_new_tokens=30)
    report["text_hit"] = text_rate
    for name, path in channels.items():
        with ams.Memory.open(":memory:", backbone=args.backbone, weights=path) as mem:
            row = {"weights": path}
            own = examples_for(path)  # the text prompts are the same whatever the salient settings
            for mode in ("prefix", "hybrid"):
                row[f"{mode}_hit"], answers = answer_hits(mem.attention, mem.backbone, own, mode, max_new_tokens=30,
                                                          salient_memories=args.salient_memories)
                if mode == "hybrid":
                    row["hybrid_only"] = sum(a["hit"] and not b["hit"] for a, b in zip(answers, text))
                    row["text_only"] = sum(b["hit"] and not a["hit"] for a, b in zip(answers, text))
        report["channels"][name] = row
        print(f"{name:>12}: prefix {row['prefix_hit']:.3f}  hybrid {row['hybrid_hit']:.3f}  (text {text_rate:.3f}; "
              f"hybrid right and text wrong on {row['hybrid_only']}, the reverse on {row['text_only']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
