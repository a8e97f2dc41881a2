"""Processes the reliability tests start: a writer to be killed, and concurrent writer-searchers.

They live in an importable module so that a forkserver (which imports `ams` once) can run them.
"""

from __future__ import annotations

import os
import random
import traceback

if os.environ.get("AMS_TEST_PRELOAD_BACKBONE"):  # in the forkserver: load models once, fork them warm
    from ams.memory import _shared_backbone, _shared_embedder

    _shared_backbone(os.environ["AMS_TEST_PRELOAD_BACKBONE"])
    _shared_embedder()


def _quiet() -> None:
    import torch

    torch.set_num_threads(1)  # several of these share two cores
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def killable_writer(store: str, backbone: str, log: str, seed: int) -> None:
    """Write batches forever, appending each returned id to `log` (one line, one `os.write`)."""
    _quiet()
    import ams

    rng = random.Random(seed)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with ams.Memory.open(store, backbone=backbone) as mem:
        os.write(fd, b"ready\n")
        i = 0
        while True:
            batch = [f"Trial {seed} note {i + j}: I keep item {rng.randrange(10**6)} in box {rng.randrange(99)}."
                     for j in range(rng.choice((1, 1, 2, 8)))]
            ids = mem.write_many([{"text": t, "session": f"s{seed}"} for t in batch])
            os.write(fd, "".join(f"{m} {t}\n" for m, t in zip(ids, batch)).encode())
            i += len(batch)


def writer_searcher(store: str, backbone: str, worker: int, n: int, out) -> None:
    """Write `n` memories one by one, searching every 10 writes; report ids, errors and torn reads."""
    errors: list[str] = []
    ids: list[str] = []
    torn: list[str] = []
    try:
        _quiet()
        import ams

        # a write that crosses a codec threshold trains inside its transaction (a PQ codec: seconds,
        # more on a loaded CI machine); the others queue behind it, so the bound is generous here
        with ams.Memory.open(store, backbone=backbone, busy_timeout=120) as mem:
            for i in range(n):
                try:
                    ids.append(mem.write(f"Worker {worker} fact {i}: my locker code is {worker * 100_000 + i}.",
                                         session=f"w{worker}"))
                    if i % 10 == 9:
                        for h in mem.search(f"locker code {i}", k=5):
                            # a whole memory: its text is one a worker wrote, complete
                            if not (h.text.startswith("Worker ") and h.text.endswith(".")):
                                torn.append(h.text)
                except Exception:  # every error that reaches a caller is a failure
                    errors.append(traceback.format_exc())
    except Exception:
        errors.append(traceback.format_exc())
    out.send({"worker": worker, "ids": ids, "errors": errors, "torn": torn})
    out.close()
