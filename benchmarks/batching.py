"""Batched against one-by-one generation, side by side in one run, through the public API.

    python benchmarks/batching.py                    # seed session, text mode, SmolLM2
    python benchmarks/batching.py --mode full --repeats 3

Writes the session into a throwaway store, then answers every question `--repeats` times with
batch_size 1 and with batch_size 8 (alternating, so both see the same machine state). Prints the
median wall time per answer for each, their ratio, and whether the answers are identical.
"""

from __future__ import annotations

import argparse
import statistics
import time

import ams
from ams.session import load_session, seed_path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("session", nargs="?", default=str(seed_path()))
    p.add_argument("--mode", default="text")
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=30)
    args = p.parse_args()
    s = load_session(args.session)
    questions = [q.text for q in s.queries]
    with ams.Memory.open(":memory:", backbone=args.backbone) as mem:
        mem.write_many([f.text for f in s.facts])
        times: dict[int, list[float]] = {1: [], args.batch_size: []}
        answers: dict[int, list[str]] = {}
        for _ in range(args.repeats):
            for bs in times:
                t0 = time.perf_counter()
                gens = mem.generate_many(questions, mode=args.mode, max_new_tokens=args.max_new_tokens,
                                         batch_size=bs, now=1.8e9)
                times[bs].append((time.perf_counter() - t0) / len(questions))
                answers[bs] = [g.text for g in gens]
    one, many = statistics.median(times[1]), statistics.median(times[args.batch_size])
    print(f"{len(questions)} questions, mode {args.mode}, {args.repeats} repeats, backbone {args.backbone}")
    print(f"batch 1: {one * 1000:.0f} ms / answer (median)")
    print(f"batch {args.batch_size}: {many * 1000:.0f} ms / answer (median)")
    print(f"ratio: {many / one:.2f}; identical answers: {answers[1] == answers[args.batch_size]}")


if __name__ == "__main__":
    main()
