"""Streaming decode with long histories: SPCE (window w, ring buffer + carry) against its HF source (full KV cache).

For each history length N, each model decodes `--steps` tokens after a state holding N tokens, in a
fresh subprocess (so peak RSS is its own). The state is filled with random keys and values of the
exact shapes a prefill would leave: prefilling 64K tokens of full attention takes far too long on a
CPU, and neither latency nor memory depends on the values. Reported: median per-token latency (one
thread), the state's bytes, and how far the process's resident memory rises above the loaded model
while it decodes; ratios SPCE / source within each N.

    python benchmarks/spce_streaming.py --ns 1024 4096 16384 65536 --json benchmarks/results/spce_streaming.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def convert(window: int, carry: int, out: Path) -> None:
    """Save the converted model once, so each run loads one model (conversion holds two)."""
    from ams.backbone import load_backbone
    from ams.backbone.spce import SpceForCausalLM

    SpceForCausalLM.from_llama(load_backbone().model, sliding_window=window, carry_size=carry).save_pretrained(out)


def one(kind: str, n: int, steps: int, spce_dir: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from ams.backbone import load_backbone
    from ams.backbone.spce import SpceCache

    torch.manual_seed(0)
    torch.set_num_threads(1)
    if kind == "source":
        model = load_backbone().model
    else:
        model = AutoModelForCausalLM.from_pretrained(spce_dir).eval()
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long))  # touch every weight (safetensors load lazily)
    base = rss()
    cfg = model.config
    Hk, D, L = cfg.num_key_value_heads, cfg.head_dim, cfg.num_hidden_layers
    window = getattr(cfg, "sliding_window", None)
    if kind == "source":
        cache = DynamicCache(config=cfg)
        for i in range(L):
            cache.update(torch.randn(1, Hk, n, D), torch.randn(1, Hk, n, D), i)
        state_bytes = 2 * L * Hk * n * D * 4
    else:
        cache = SpceCache(model.config, 1)
        w = min(window, n)
        cache.reserve(w)
        pos = torch.arange(n - w, n)
        cache.slot_pos[pos % window] = pos
        cache.slot_valid[:] = True
        for i in range(L):
            cache.keys[i].normal_()
            cache.values[i].normal_()
        cache.seen = n
        cache.t_prev = torch.full((1,), n - 1.0, dtype=torch.float64)
        state_bytes = cache.nbytes()
    ids = torch.randint(0, cfg.vocab_size, (1, 1))
    times, held = [], []
    with torch.no_grad():
        for s in range(steps + 2):  # two warm-up steps
            t0 = time.perf_counter()
            out = model(ids, past_key_values=cache, use_cache=True, position_ids=torch.tensor([[n + s]]))
            times.append(time.perf_counter() - t0)
            cache = out.past_key_values
            ids = out.logits[:, -1:].argmax(-1)
            held.append(rss() - base)
    return {"model": kind, "n": n, "ms_per_token": 1000 * statistics.median(times[2:]), "state_bytes": state_bytes,
            "rss_over_model_bytes": max(held)}


def rss() -> int:
    """Resident bytes of this process now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--carry", type=int, default=64)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", nargs=3, metavar=("KIND", "N", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.steps, Path(args.one[2]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        convert(args.window, args.carry, Path(tmp))
        for n in args.ns:
            for kind in ("source", "spce"):
                cmd = [sys.executable, __file__, "--one", kind, str(n), tmp, "--steps", str(args.steps)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    print("\n| history | source ms/token | SPCE ms/token | ratio | source state MB | SPCE state MB | ratio "
          "| source RSS over model MB | SPCE RSS over model MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.ns:
        a, b = (next(r for r in rows if r["n"] == n and r["model"] == k) for k in ("source", "spce"))
        print(f"| {n} | {a['ms_per_token']:.1f} | {b['ms_per_token']:.1f} | {b['ms_per_token'] / a['ms_per_token']:.2f} "
              f"| {a['state_bytes'] / 1e6:.1f} | {b['state_bytes'] / 1e6:.1f} | {b['state_bytes'] / a['state_bytes']:.3f} "
              f"| {a['rss_over_model_bytes'] / 1e6:.0f} | {b['rss_over_model_bytes'] / 1e6:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"window": args.window, "carry": args.carry, "steps": args.steps,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
