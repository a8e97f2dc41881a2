"""How exactly `SpceForCausalLM.from_llama` reproduces SmolLM2-135M-Instruct: the largest logit difference.

Both models read the same text (this repository's README, repeated as needed) at several lengths
in fp32; the SPCE model has a full-width window and no carry, as the conversion test requires.
transformers computes RoPE angles as fp32(position * inv_freq), which is off by up to ~1e-4 rad at
position 2048; SPCE reduces them in fp64. The third column compares SPCE with the source model
whose angles are computed in fp64 too, to separate the two.

    python benchmarks/spce_conversion.py --lengths 64 512 2048 --json benchmarks/results/spce_conversion.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

from ams.backbone import load_backbone
from ams.backbone.spce import SpceForCausalLM


@contextlib.contextmanager
def fp64_rope(model):
    """The source model with its rotary angles computed in fp64 (then cos/sin cast to fp32)."""
    rot = model.model.rotary_emb
    original = rot.forward

    def forward(x, position_ids):
        freqs = position_ids[..., None].double() * rot.inv_freq.double()
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    rot.forward = forward
    try:
        yield
    finally:
        rot.forward = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 512, 2048])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    bb = load_backbone()
    spce = SpceForCausalLM.from_llama(bb.model).eval()
    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    ids = bb.tokenizer(text)["input_ids"]
    while len(ids) < max(args.lengths):
        ids = ids + ids
    rows = []
    with torch.no_grad():
        for n in args.lengths:
            x = torch.tensor([ids[:n]])
            a, b = bb.model(x).logits, spce(x).logits
            with fp64_rope(bb.model):
                a64 = bb.model(x).logits
            row = {"tokens": n, "max_abs_logit_diff": (a - b).abs().max().item(),
                   "max_abs_logit_diff_vs_fp64_rope": (a64 - b).abs().max().item(),
                   "logit_scale": a.abs().max().item(), "argmax_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item()}
            rows.append(row)
            print(row, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
