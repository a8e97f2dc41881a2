"""Adapting converted SmolLM2 to a window shorter than its sequences, with and without the carry.

SmolLM2-135M-Instruct is converted three ways: full attention (as the source), a window of w
without carry, and a window of w with a carry whose gate starts at zero. Each is evaluated as
converted, then fine-tuned (all weights, same recipe, seed and batches) on sequences of 8w tokens
of the Python standard library's source (one file in ten held out, as `spce_window.py`), and
evaluated again. Fine-tuning full attention too separates what the window loses from what the
domain gains. Reported: held-out loss over all tokens, and over tokens at position >= w.

    python benchmarks/spce_adapt.py --window 64 --steps 40 --out benchmarks/results/spce_adapt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ams.backbone import load_backbone
from ams.backbone.spce import SpceForCausalLM
from ams.backbone.spce.train import LMTrainConfig, evaluate, token_stream, train_lm, validation_batches

sys.path.insert(0, str(Path(__file__).parent))
from spce_window import python_sources  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--carry", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--max-chars", type=int, default=4_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/spce_adapt"))
    args = ap.parse_args()

    bb = load_backbone()
    encode = lambda s: bb.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    train_texts, val_texts = python_sources(args.max_chars)
    sep = bb.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    train, val = token_stream(train_texts, encode, sep=sep), token_stream(val_texts, encode, sep=sep)
    w, T = args.window, 8 * args.window
    print(f"train {train.numel()} tokens, held-out {val.numel()} tokens, sequences of {T} = 8 windows of {w}")
    cfg = LMTrainConfig(steps=args.steps, batch_size=args.batch, seq_len=T, lr=args.lr, warmup=max(1, args.steps // 10),
                        weight_decay=0.0, eval_every=args.steps, eval_batches=args.eval_batches,
                        checkpoint_every=args.steps, seed=args.seed)
    val_batches = validation_batches(val, args.batch, T, args.eval_batches)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    variants = {"full attention": (None, 0), f"window {w}": (w, 0), f"window {w} + carry": (w, args.carry)}
    for name, (window, carry) in variants.items():
        if name in results:
            continue
        model = SpceForCausalLM.from_llama(bb.model, sliding_window=window or T, carry_size=carry)
        for p in model.parameters():
            p.requires_grad_(True)
        before = evaluate(model, val_batches, skip=w)
        t0 = time.perf_counter()
        hist = train_lm(model, train, val, cfg, out_dir=args.out / name.replace(" ", "_").replace("+", "plus"),
                        val_skip=w)
        after = hist["val"][-1]
        results[name] = {"before": list(before), "after": after[1:], "seconds": time.perf_counter() - t0,
                         "history": hist}
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{name}: held-out loss {before[0]:.4f} -> {after[1]:.4f}; tokens >= {w}: {before[1]:.4f} -> {after[2]:.4f}")
        del model
    print(f"\n| model | held-out loss, converted | after {args.steps} steps | tokens >= {w}, converted | after |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['before'][0]:.4f} | {r['after'][0]:.4f} | {r['before'][1]:.4f} | {r['after'][1]:.4f} |")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
