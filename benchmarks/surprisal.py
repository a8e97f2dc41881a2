"""The surprisal step of the encoding pass: one sequence at a time against the whole batch at once.

    .venv/bin/python benchmarks/surprisal.py [--n 512] [--repeats 5] [--json PATH]

`HFBackbone.encode` weighs each memory's token embeddings by the tokens' surprisal, a
log-sum-exp over the 49,152-word vocabulary at every position. Computed for a padded batch at
once, in fp32, that pass reads and writes arrays of 16 x T x 49,152 floats, out of cache; the
library now computes it one sequence at a time. This times `encode` on N synthetic train-split
facts (batches of 16, the default backbone, its default encoding precision) with each form,
alternating, and checks that both give the same vectors.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ams.backbone import load_backbone
from ams.backbone.hf import HFBackbone
from ams.bench.synthetic import generate_session


def whole_batch(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The earlier form: the batch's logits in fp32 at once."""
    lg = logits[:, :-1].float()
    return torch.logsumexp(lg, -1) - lg.gather(-1, ids[:, 1:, None]).squeeze(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    texts = [f.text for f in generate_session(max(args.n, 20), seed=3, split="train").facts][: args.n]
    backbone = load_backbone()
    per_sequence = HFBackbone.__dict__["_surprisal"]  # the staticmethod itself
    forms = {"per sequence (now)": per_sequence, "whole batch (before)": staticmethod(whole_batch)}
    backbone.encode(texts[:32])  # warm up: the bf16 copy is made on first use
    times: dict[str, list[float]] = {k: [] for k in forms}
    out = {}
    for _ in range(args.repeats):
        for name, form in forms.items():
            HFBackbone._surprisal = form
            t = time.perf_counter()
            out[name] = backbone.encode(texts)
            times[name].append(time.perf_counter() - t)
    HFBackbone._surprisal = per_sequence
    a, b = out.values()
    report = {
        "n": len(texts), "encode_dtype": str(next(backbone._encoding_model.parameters()).dtype),
        "ms_per_memory": {k: round(1000 * statistics.median(v) / len(texts), 2) for k, v in times.items()},
        "ms_per_memory_each_repeat": {k: [round(1000 * t / len(texts), 2) for t in v] for k, v in times.items()},
        "max_abs_difference": {"hidden": float((a.hidden - b.hidden).abs().max()),
                               "salient": float((a.salient - b.salient).abs().max())},
        "command": "python benchmarks/surprisal.py " + f"--n {args.n} --repeats {args.repeats}",
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
