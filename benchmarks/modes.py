"""Hit-rate of every injection mode on a session file, through the public API.

    python benchmarks/modes.py                      # the seed session (20 facts, 10 questions)
    python benchmarks/modes.py benchmarks/dev_session.jsonl
    python benchmarks/modes.py --weights runs/channel/channel.safetensors --modes text,prefix,hybrid
    python benchmarks/modes.py --modes prefix,hybrid --salient-order content_first

Prints recall@1 of AMS retrieval, then per mode: hits (whole-word rule), hits (the original
substring rule), mean prompt tokens including prefix slots, and median retrieve / generate ms.
The full session-viability benchmark (synthetic sessions, sweeps over N) is `ams bench`, a later step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import ams
from ams.config import MemoryConfig, PrefixConfig
from ams.session import is_hit, is_substring_hit, load_session, seed_path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("session", nargs="?", default=str(seed_path()))
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=30)
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    p.add_argument("--weights", default=None, help="channel weights for prefix and hybrid: a file, or untrained (default: the shipped channel)")
    p.add_argument("--modes", default="none,full,flat,text,prefix,hybrid", help="modes to answer in, comma-separated")
    p.add_argument("--salient-memories", type=int, default=PrefixConfig().salient_memories,
                   help="memories whose salient words the prefix keeps, 0 for all (default: the store's default)")
    p.add_argument("--salient-order", default=PrefixConfig().salient_order, choices=["surprisal", "content_first"],
                   help="how each memory's salient words are ranked (default: the store's default)")
    p.add_argument("--hybrid-text", default=PrefixConfig().hybrid_text, choices=["chosen", "retrieved", "chosen_first"],
                   help="what hybrid's prompt shows of the retrieved memories (default: the store's default)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ams.MODES]
    if bad or not modes:
        p.error(f"--modes takes modes among {', '.join(ams.MODES)}; got {args.modes!r}")
    s = load_session(args.session)
    config = MemoryConfig(prefix=PrefixConfig(salient_memories=args.salient_memories, hybrid_text=args.hybrid_text,
                                              salient_order=args.salient_order))
    with ams.Memory.open(":memory:", backbone=args.backbone, weights=args.weights, config=config) as mem:
        t0 = time.perf_counter()
        ids = mem.write_many([f.text for f in s.facts])
        write_ms = (time.perf_counter() - t0) * 1000 / len(ids)
        fact_of = dict(zip(ids, (f.id for f in s.facts)))
        r1 = sum(fact_of[mem.search(q.text, k=1)[0].id] in q.fact_ids for q in s.queries) / len(s.queries)
        print(f"{args.session}: {len(s.facts)} facts, {len(s.queries)} questions, k={args.k}, "
              f"max_new_tokens={args.max_new_tokens}; channel {mem.weights or 'untrained'}; "
              f"write {write_ms:.0f} ms/memory; recall@1 {r1:.2f}")
        print(f"{'mode':>7} {'hits':>5} {'substr':>6} {'tokens':>6} {'ret ms':>7} {'gen ms':>7}")
        for mode in modes:
            gens = [mem.generate(q.text, mode=mode, k=args.k, max_new_tokens=args.max_new_tokens) for q in s.queries]
            hits = sum(is_hit(g.text, q.keywords, q.forbidden) for g, q in zip(gens, s.queries))
            sub = sum(is_substring_hit(g.text, q.keywords) for g, q in zip(gens, s.queries))
            print(f"{mode:>7} {hits:>2}/{len(s.queries):<2} {sub:>3}/{len(s.queries):<2} "
                  f"{statistics.mean(g.in_tokens for g in gens):>6.0f} "
                  f"{statistics.median(g.retrieve_ms for g in gens):>7.1f} "
                  f"{statistics.median(g.generate_ms for g in gens):>7.0f}", flush=True)
            if args.verbose:
                for g, q in zip(gens, s.queries):
                    print(f"        {'+' if is_hit(g.text, q.keywords, q.forbidden) else '-'} {q.text} -> {g.text[:80]!r}")


if __name__ == "__main__":
    main()
