"""How long memories are in backbone tokens: synthetic users of both splits and the hand-written sessions.

    .venv/bin/python benchmarks/memory_lengths.py

The prefix carries `salient_tokens` tokens of a memory's words; this says how much of a memory
that is. Held-out users of session seeds 10,000-10,012 (50 facts each, the validation users),
train-split users of seeds 0-9 (50 facts each), the seed session and `benchmarks/dev_session.jsonl`.
"""

from __future__ import annotations

import statistics

from ams.backbone.registry import load_backbone
from ams.bench.synthetic import generate_session
from ams.session import load_session, seed_path


def main() -> None:
    tok = load_backbone("smollm2-135m-instruct").tokenizer
    sets = {
        "synthetic held-out": [f.text for s in range(10_000, 10_013) for f in generate_session(50, seed=s, split="heldout").facts],
        "synthetic train": [f.text for s in range(10) for f in generate_session(50, seed=s, split="train").facts],
        "seed session": [f.text for f in load_session(seed_path()).facts],
        "dev session": [f.text for f in load_session("benchmarks/dev_session.jsonl").facts],
    }
    print(f"{'memories':>20} {'n':>5} {'median':>7} {'p90':>4} {'max':>4} {'> 8':>6} {'> 12':>6}")
    for name, texts in sets.items():
        n = sorted(len(tok(t, add_special_tokens=False).input_ids) for t in texts)
        print(f"{name:>20} {len(n):>5} {statistics.median(n):>7} {n[int(0.9 * len(n))]:>4} {n[-1]:>4} "
              f"{sum(x > 8 for x in n) / len(n):>6.2f} {sum(x > 12 for x in n) / len(n):>6.2f}")


if __name__ == "__main__":
    main()
