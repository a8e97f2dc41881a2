"""Text-mode answers on dialogue transcripts under other prompt frames, neighbour budgets and gates.

    python benchmarks/dialogue_frames.py --split train --seeds 0,1,2 --neighbours 0,1,2
    python benchmarks/dialogue_frames.py --split train --seeds 0,1 --frames current,notes,quoted,question-twice
    python benchmarks/dialogue_frames.py --split train --seeds 0,1,2 --gates 0.8,0.9,0.95,1.0

For choosing how `generate` shows retrieved turns to the reader, on `train` transcripts only.
Each transcript (`ams.bench.dialogue`, N turns) is written to a real store as
`benchmarks/dialogue.py` writes it, then every question is answered in `text` mode (k = 3, greedy,
30 new tokens) under each frame, `neighbour_turns` and `relative_gate` setting, and scored by
`ams.session.is_hit`.
A frame other than `current` replaces the library's dialogue frame (`ams.memory._with_facts`) for
the run; the fact-list frame is never touched. Stores are kept in --store-dir when given, so
several sweeps reuse one encoding.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from dialogue import _ints, _write

import ams
import ams.memory
from ams.bench.dialogue import generate_dialogue
from ams.session import is_hit


def _listed(texts: list[str]) -> str:
    return "\n".join(f"- {t}" for t in texts)


FRAMES = {  # name -> the user turn for a dialogue question, or None for the library's own
    "current": None,
    "notes": lambda q, texts: (f"Notes from earlier conversations:\n{_listed(texts)}\n\nQuestion: {q}\n"
                               "Answer the question using the notes, in one short sentence."),
    "quoted": lambda q, texts: ("Here are excerpts of earlier conversations between friends:\n\n"
                                + "\n\n".join(f'"""\n{t}\n"""' for t in texts)
                                + f"\n\nBased on the excerpts, answer this question in one short sentence: {q}"),
    "question-twice": lambda q, texts: (f"Question: {q}\n\nExcerpts of earlier conversations that may answer it:\n"
                                        f"{_listed(texts)}\n\nAnswer the question in one short sentence: {q}"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="train", choices=("train", "heldout"))
    ap.add_argument("--seeds", type=_ints, default=[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--frames", default="current", help=f"comma-separated, of {', '.join(FRAMES)}")
    ap.add_argument("--neighbours", type=_ints, default=None, help="neighbour_turns settings (default: the library's)")
    ap.add_argument("--gates", type=lambda t: [float(v) for v in t.split(",")], default=None,
                    help="relative_gate settings (default: the library's); 1.0 keeps only the best turn and its ties")
    ap.add_argument("--store-dir", type=Path, help="keep the written stores here and reuse them")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    frames = [f for f in args.frames.split(",") if f]
    if unknown := set(frames) - set(FRAMES):
        ap.error(f"unknown frames: {sorted(unknown)}")
    base = ams.MemoryConfig()
    neighbours = args.neighbours or [base.retrieval.neighbour_turns]
    gates = args.gates or [base.retrieval.relative_gate]
    where = args.store_dir or Path(tempfile.mkdtemp())
    where.mkdir(parents=True, exist_ok=True)
    sessions = {}
    for seed in args.seeds:
        session = generate_dialogue(args.n, seed=seed, split=args.split, n_queries=args.queries)
        path = where / f"{args.split}_{seed}_{args.n}.db"
        if not path.exists():
            _write(path, session, base)
        sessions[seed] = session, path
    library_frame = ams.memory._with_facts
    rows = []
    for frame in frames:
        make = FRAMES[frame]
        ams.memory._with_facts = library_frame if make is None else (
            lambda q, texts, dialogue=False, make=make: make(q, texts) if dialogue else library_frame(q, texts))
        try:
            for nb, gate in ((nb, gate) for nb in neighbours for gate in gates):
                cfg = base.model_copy(update={"retrieval": base.retrieval.model_copy(
                    update={"neighbour_turns": nb, "relative_gate": gate})})
                hits = total = 0
                for session, path in sessions.values():
                    now = max(f.ts for f in session.facts) + 86400
                    with ams.Memory.open(path, config=cfg) as mem:
                        gens = mem.generate_many([q.text for q in session.queries], mode="text", k=3,
                                                 max_new_tokens=30, now=now)
                    hits += sum(is_hit(g.text, q.keywords, q.forbidden) for q, g in zip(session.queries, gens))
                    total += len(session.queries)
                rows.append({"frame": frame, "neighbour_turns": nb, "relative_gate": gate, "questions": total,
                             "hit_rate": round(hits / max(1, total), 3)})
                print(f"{frame:<15} neighbours {nb} gate {gate}: {hits}/{total} = {hits / max(1, total):.3f}",
                      flush=True)
        finally:
            ams.memory._with_facts = library_frame
    report = {"split": args.split, "seeds": args.seeds, "n": args.n, "rows": rows,
              "command": "python " + " ".join(sys.argv)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
