"""Write throughput of `Memory.write_many` with the memory encoding in fp32 against bf16, side by side.

    .venv/bin/python benchmarks/write_throughput.py [--n 2000] [--batch 500] [--repeats 3] [--json PATH]

Each repeat writes the same N synthetic train-split facts (batches of --batch) into a fresh store
once per encoding precision, the precisions alternating so that drift in the machine's speed
falls on both. The default backbone (SmolLM2-135M-Instruct) is loaded twice, as
`load_backbone(encode_dtype="float32")` and `load_backbone(encode_dtype="bfloat16")`; generation
is untouched by the choice. Reported per precision: memories/s (median of the repeats, and each
repeat), and where a write's time goes: the backbone's encoding passes, MiniLM, and the rest
(codec coding, SQLite, checksums). Then how far bf16 moves the encodings: the cosine of each
memory's `hidden` and `salient` vectors to fp32's (min and median over the N facts).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import ams
from ams.backbone import load_backbone
from ams.backbone.hf import _native_bf16
from ams.bench.synthetic import generate_session


def _timed(obj, name: str, key: str, spent: collections.Counter) -> None:
    f = getattr(obj, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent[key] += time.perf_counter() - t
    setattr(obj, name, wrapper)


def write_once(backbone, texts: list[str], batch: int) -> dict:
    spent: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp, ams.Memory.open(Path(tmp) / "w.db", backbone=backbone) as mem:
        _timed(mem.backbone, "encode", "backbone", spent)
        _timed(mem.embedder, "encode", "minilm", spent)
        try:
            t = time.perf_counter()
            for i in range(0, len(texts), batch):
                mem.write_many(texts[i : i + batch])
            total = time.perf_counter() - t
        finally:  # the backbone is shared beyond this store: give it its own method back
            del mem.backbone.encode, mem.embedder.encode
    return {"seconds": total, "per_s": len(texts) / total, "backbone_s": spent["backbone"],
            "minilm_s": spent["minilm"], "rest_s": total - spent["backbone"] - spent["minilm"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    facts = generate_session(min(args.n, 10_000), seed=11, split="train").facts
    texts = [f.text for f in facts][: args.n]
    backbones = {d: load_backbone(encode_dtype=d) for d in ("float32", "bfloat16")}
    runs: dict[str, list[dict]] = {d: [] for d in backbones}
    write_once(backbones["float32"], texts[:50], args.batch)  # first-touch costs fall outside the timings
    write_once(backbones["bfloat16"], texts[:50], args.batch)
    for r in range(args.repeats):
        for d, bb in backbones.items():
            runs[d].append(write_once(bb, texts, args.batch))
            print(f"repeat {r} {d}: {runs[d][-1]['per_s']:.1f} memories/s", file=sys.stderr, flush=True)
    a, b = (bb.encode(texts) for bb in backbones.values())
    drift = {f: torch.nn.functional.cosine_similarity(getattr(a, f), getattr(b, f)) for f in ("hidden", "salient")}
    report = {
        "command": "benchmarks/write_throughput.py " + " ".join(sys.argv[1:]),
        "n": len(texts), "batch": args.batch, "repeats": args.repeats,
        "cpu_native_bf16": _native_bf16(torch.device("cpu")), "torch_threads": torch.get_num_threads(),
        "runs": runs,
        "median_per_s": {d: statistics.median(x["per_s"] for x in v) for d, v in runs.items()},
        "cosine_to_fp32": {f: {"min": float(c.min()), "median": float(c.median())} for f, c in drift.items()},
    }
    report["speedup"] = report["median_per_s"]["bfloat16"] / report["median_per_s"]["float32"]
    print(json.dumps({k: report[k] for k in ("median_per_s", "speedup", "cosine_to_fp32")}, indent=1))
    for d, v in runs.items():
        med = {k: statistics.median(x[k] for x in v) for k in ("seconds", "backbone_s", "minilm_s", "rest_s")}
        print(f"{d}: {report['median_per_s'][d]:.1f}/s; of {med['seconds']:.1f} s: backbone {med['backbone_s']:.1f} s, "
              f"MiniLM {med['minilm_s']:.1f} s, rest {med['rest_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
