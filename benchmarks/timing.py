"""What the kernel benchmarks share: the device to time on, and medians of timed calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


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
