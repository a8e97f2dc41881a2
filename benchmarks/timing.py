"""What the kernel benchmarks share: their arguments, the device to time on, and medians of timed calls."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def kernel_args(doc: str, shapes: list[str], shape_help: str, dtype: str, reps: int) -> argparse.Namespace:
    """--shapes (each `shape_help`, e.g. NxDxSxM), --dtype, --reps and --json, with these defaults."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=shapes, help=shape_help)
    ap.add_argument("--dtype", default=dtype, choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--reps", type=int, default=reps)
    ap.add_argument("--json", type=Path)
    return ap.parse_args()


def device_and_sync() -> tuple[str, Callable[[], None]]:
    """("cuda", torch.cuda.synchronize) where CUDA is present, else ("cpu", a no-op)."""
    if torch.cuda.is_available():
        return "cuda", torch.cuda.synchronize
    return "cpu", lambda: None


def timed(fn: Callable[[], object], reps: int, sync: Callable[[], None]) -> float:
    """Median seconds of `reps` calls of `fn` after three warm-up calls, each synchronised."""
    for _ in range(3):
        fn()
    sync()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)
