"""Text-mode answers on dialogue transcripts under other prompt frames, neighbour budgets and gates.

    python benchmarks/dialogue_frames.py --split train --seeds 0,1,2 --neighbours 0,1,2
    python benchmarks/dialogue_frames.py --split train --seeds 0,1 --frames current,notes,quoted,question-twice
    python benchmarks/dialogue_frames.py --split train --seeds 0,1,2 --gates 0.8,0.9,0.95,1.0
    python benchmarks/dialogue_frames.py --split train --seeds 0,1,2 --neighbours 1,0 --gates 0.8,1.0 --oracle

For choosing how `generate` shows retrieved turns to the reader, on `train` transcripts only.
Each transcript (`ams.bench.dialogue`, N turns) is written to a real store as
`benchmarks/dialogue.py` writes it, then every question is answered in `text` mode (k = 3, greedy,
30 new tokens) under each frame, `neighbour_turns` and `dialogue_relative_gate` setting, and scored
by `ams.session.is_hit`; with --oracle, also shown its gold turn(s) instead of the retrieved ones.
Each setting after the first is compared with it question by question.
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


EXAMPLE = ("From earlier conversations:\n- Sam: which bike did you get in the end?\n  Kim: the red one, obviously\n\n"
           "Question: What colour is Kim's bike?\nAnswer: Kim's bike is red.\n\n")

FRAMES = {  # name -> the user turn for a dialogue question, or None for the library's own
    "current": None,
    "notes": lambda q, texts: (f"Notes from earlier conversations:\n{_listed(texts)}\n\nQuestion: {q}\n"
                               "Answer the question using the notes, in one short sentence."),
    "quoted": lambda q, texts: ("Here are excerpts of earlier conversations between friends:\n\n"
                                + "\n\n".join(f'"""\n{t}\n"""' for t in texts)
                                + f"\n\nBased on the excerpts, answer this question in one short sentence: {q}"),
    "example": lambda q, texts: EXAMPLE + (f"From earlier conversations:\n{_listed(texts)}\n\nQuestion: {q}\n"
                                           "Answer using the conversations above, in one short sentence."),
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
                    help="dialogue_relative_gate settings (default: the library's); 1.0 keeps only the best turn "
                    "and its ties")
    ap.add_argument("--oracle", action="store_true",
                    help="also answer each question shown its gold turn(s), under each setting (the reader's ceiling)")
    ap.add_argument("--store-dir", type=Path, help="keep the written stores here and reuse them")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    frames = [f for f in args.frames.split(",") if f]
    if unknown := set(frames) - set(FRAMES):
        ap.error(f"unknown frames: {sorted(unknown)}")
    base = ams.MemoryConfig()
    neighbours = args.neighbours or [base.retrieval.neighbour_turns]
    gates = args.gates or [base.retrieval.dialogue_relative_gate]
    where = args.store_dir or Path(tempfile.mkdtemp())
    where.mkdir(parents=True, exist_ok=True)
    sessions = {}
    for seed in args.seeds:
        session = generate_dialogue(args.n, seed=seed, split=args.split, n_queries=args.queries)
        path = where / f"{args.split}_{seed}_{args.n}.db"
        ids = path.with_name(path.name + ".ids.json")  # memory id -> the generator's turn id
        if not (path.exists() and ids.exists()):
            path.unlink(missing_ok=True)
            ids.write_text(json.dumps(_write(path, session, base)[0]))
        memory_of = {turn: memory for memory, turn in json.loads(ids.read_text()).items()}
        sessions[seed] = session, path, [[memory_of[t] for t in q.fact_ids] for q in session.queries]
    library_frame = ams.memory._with_facts
    rows = []
    for frame in frames:
        make = FRAMES[frame]
        ams.memory._with_facts = library_frame if make is None else (
            lambda q, texts, dialogue=False, make=make: make(q, texts) if dialogue else library_frame(q, texts))
        try:
            for nb, gate in ((nb, gate) for nb in neighbours for gate in gates):
                cfg = base.model_copy(update={"retrieval": base.retrieval.model_copy(
                    update={"neighbour_turns": nb, "dialogue_relative_gate": gate})})
                hits, gold_hits = [], []
                for session, path, gold in sessions.values():
                    now = max(f.ts for f in session.facts) + 86400
                    questions = [q.text for q in session.queries]
                    with ams.Memory.open(path, config=cfg) as mem:
                        gens = mem.generate_many(questions, mode="text", k=3, max_new_tokens=30, now=now)
                        if args.oracle:
                            gens += mem.generate_many(questions, mode="text", max_new_tokens=30, now=now,
                                                      memory_ids=gold)
                    scored = [is_hit(g.text, q.keywords, q.forbidden) for q, g in zip(session.queries * 2, gens)]
                    hits += scored[: len(questions)]
                    gold_hits += scored[len(questions) :]
                row = {"frame": frame, "neighbour_turns": nb, "dialogue_relative_gate": gate, "questions": len(hits),
                       "hit_rate": round(sum(hits) / max(1, len(hits)), 3), "hits": hits}
                line = f"{frame:<15} neighbours {nb} gate {gate}: {sum(hits)}/{len(hits)}"
                if args.oracle:
                    row.update(oracle_hit_rate=round(sum(gold_hits) / max(1, len(gold_hits)), 3), oracle_hits=gold_hits)
                    line += f", gold turns shown: {sum(gold_hits)}/{len(gold_hits)}"
                if rows:  # paired against the first setting: questions this one gets right and it wrong, and back
                    first = rows[0]["hits"]
                    row["vs_first"] = [sum(a and not b for a, b in zip(hits, first)),
                                       sum(b and not a for a, b in zip(hits, first))]
                    line += f"  (against the first: +{row['vs_first'][0]} / -{row['vs_first'][1]})"
                rows.append(row)
                print(line, flush=True)
        finally:
            ams.memory._with_facts = library_frame
    report = {"split": args.split, "seeds": args.seeds, "n": args.n, "rows": rows,
              "command": "python " + " ".join(sys.argv)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
