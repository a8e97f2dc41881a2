"""Batched Kakeya encode throughput: the Triton kernel, eager PyTorch and torch.compile, in vectors/s.

Each shape is n vectors of width d coded by a random well-formed codec of S segments and m
sub-quantisers (a 384-wide MiniLM key with 64 PQ bytes is the library's `content` field; 576 is
SmolLM2's `hidden`). On a machine without CUDA only eager and compiled PyTorch run (the kernel
needs a GPU; its correctness is tested on CPU in the interpreter, `tests/test_kernels.py`). On a
GPU the kernel's codes are also compared with the reference's: a code may differ only where two
centroids are equally near, so the share of equal codes is reported. Medians of `--reps` timed
calls after warm-up.

    python benchmarks/kakeya_encode.py --json benchmarks/results/kakeya_encode_cpu.json
"""

from __future__ import annotations

import json

import torch
from ams.kernels import HAS_TRITON, kakeya_encode, kakeya_encode_ref
from timing import device_and_sync, kernel_args, timed


def codec_arrays(d: int, S: int, m: int, device: str, seed: int = 0):
    """Mean, unit t_dir, unit centres orthogonal to it, PQ centroids (m, 256, ceil(d / m))."""
    g = torch.Generator().manual_seed(seed)
    t_dir = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    c = torch.randn(S, d, generator=g)
    c = torch.nn.functional.normalize(c - (c @ t_dir)[:, None] * t_dir, dim=1)
    pq = torch.randn(m, 256, -(-d // m), generator=g) * 0.3
    return tuple(a.to(device) for a in (torch.randn(d, generator=g) * 0.1, t_dir, c, pq))


def main() -> None:
    args = kernel_args(__doc__, ["4096x384x16x64", "65536x384x16x64", "65536x576x16x48"], "NxDxSxM",
                       dtype="float32", reps=10)
    device, sync = device_and_sync()
    cuda = device == "cuda"
    compiled = torch.compile(kakeya_encode_ref)
    rows = []
    for shape in args.shapes:
        n, d, S, m = map(int, shape.split("x"))
        if not cuda and n > 2**16:
            continue  # too slow to time on a CPU
        arrays = codec_arrays(d, S, m, device)
        x = (torch.randn(n, d, device=device) * 0.5).to(getattr(torch, args.dtype))
        inputs = (x, *arrays)
        impls = {"eager": lambda a=inputs: kakeya_encode_ref(*a), "compile": lambda a=inputs: compiled(*a)}
        if cuda and HAS_TRITON:
            impls["triton"] = lambda a=inputs: kakeya_encode(*a, use_kernel=True)
        row = {"shape": shape, "dtype": args.dtype, "device": torch.cuda.get_device_name() if cuda else "cpu"}
        for name, fn in impls.items():
            row[f"{name}_vectors_per_s"] = round(n / timed(fn, args.reps, sync))
        if "triton" in impls:
            got, want = impls["triton"](), kakeya_encode_ref(x.float(), *arrays)  # the fp32 specification
            row["equal_codes"] = round(float((got[3] == want[3]).float().mean()), 5)
            row["equal_segments"] = round(float((got[2] == want[2]).float().mean()), 5)
            row["triton_over_eager"] = round(row["triton_vectors_per_s"] / row["eager_vectors_per_s"], 2)
        rows.append(row)
        print(row, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
