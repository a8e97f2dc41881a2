"""SPCE rotary throughput: the Triton kernel, eager PyTorch and torch.compile, in GB/s of q and k moved.

Bytes counted: q and k read once and written once (time, streams and frequencies are negligible).
On a machine without CUDA only eager and compiled PyTorch run (the kernel needs a GPU; its
correctness is tested on CPU in the interpreter). Medians of `--reps` timed calls after warm-up.

    python benchmarks/spce_rotary.py --json benchmarks/results/spce_rotary.json
"""

from __future__ import annotations

import json

import torch
from ams.kernels.spce_rotary import HAS_TRITON, spce_rotary, spce_rotary_ref
from timing import device_and_sync, kernel_args, timed


def main() -> None:
    args = kernel_args(__doc__, ["1x2048x9x3x64", "1x16384x9x3x64", "4x16384x32x8x128"], "BxTxHxHkxD",
                       dtype="bfloat16", reps=20)
    device, sync = device_and_sync()
    cuda = device == "cuda"
    dtype = getattr(torch, args.dtype)
    compiled = torch.compile(spce_rotary_ref)
    rows = []
    for shape in args.shapes:
        B, T, H, Hk, D = map(int, shape.split("x"))
        if not cuda and B * T * H * D > 2**24:
            continue  # too slow to time on a CPU
        q = torch.randn(B, T, H, D, device=device, dtype=dtype)
        k = torch.randn(B, T, Hk, D, device=device, dtype=dtype)
        t = (1.79e9 + torch.arange(T, dtype=torch.float64, device=device)).expand(B, T)
        omega = torch.rand(1, Hk, D // 2, device=device)
        phi = torch.zeros(1, Hk, D // 2, device=device)
        nbytes = 2 * (q.numel() + k.numel()) * q.element_size()
        inputs = (q, k, t, omega, phi)
        impls = {"eager": lambda a=inputs: spce_rotary_ref(*a), "compile": lambda a=inputs: compiled(*a)}
        if cuda and HAS_TRITON:
            impls["triton"] = lambda a=inputs: spce_rotary(*a, use_kernel=True)
        row = {"shape": shape, "dtype": args.dtype, "device": torch.cuda.get_device_name() if cuda else "cpu"}
        for name, fn in impls.items():
            row[f"{name}_gbps"] = nbytes / timed(fn, args.reps, sync) / 1e9
        rows.append(row)
        print(row, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
