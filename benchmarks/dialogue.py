"""The dialogue benchmark: multi-session chat transcripts, third-person questions, gold turns.

    python benchmarks/dialogue.py retrieval --n 1000 --seeds 0,1,2 --json benchmarks/results/dialogue_retrieval.json
    python benchmarks/dialogue.py answers --n 1000 --json benchmarks/results/dialogue_answers.json
    python benchmarks/dialogue.py plot benchmarks/results/dialogue_answers.json --out dialogue_answers.png

`retrieval` (also `--session synthetic`, the fact sessions) writes each transcript (`ams.bench.dialogue`, held-out split unless --split train)
to a real SQLite store through `Memory.write_many`, then measures recall@1 and recall@5 of the
gold turn for AMS retrieval with every channel, with one channel removed at a time, the dense
bundles alone, and FAISS cosine over the turn embeddings (what `flat` mode retrieves).
`answers` runs the session-viability benchmark's modes on the same transcripts and sweeps
`neighbour_turns` (how much of a retrieved turn's conversation the reader sees) for text mode.
`retrieval --sweep FIELD=V1,V2,...` measures one `RetrievalConfig` field's values instead of the
ablations, on top of any `--set FIELD=VALUE`: how the channel weights were chosen on `train`.
`people` counts the turns the people channel's detector marks, by kind (gold, asides, other);
`corrections` the turns the correction detector marks (the generator's corrections, and the rest).
`plot` draws an `answers` report: hit-rate against prompt tokens, one point per mode and per
neighbour setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ams
from ams.bench.dialogue import generate_dialogue
from ams.bench.synthetic import generate_session
from ams.bench.viability import BenchConfig, run

NO_CHANNELS = {"lexical_weight": 0.0, "dialogue_lexical_weight": 0.0, "speaker_weight": 0.0, "recency_weight": 0.0, "informative_weight": 0.0,
               "people_weight": 0.0, "question_penalty": 0.0, "speaker_rewrite": False}
VARIANTS = {  # name -> RetrievalConfig overrides (none of them changes what a store holds)
    "ams, all channels": {},
    "- lexical (FTS5 BM25)": {"lexical_weight": 0.0, "dialogue_lexical_weight": 0.0},
    "- speaker": {"speaker_weight": 0.0},
    "- people (who a turn names)": {"people_weight": 0.0},
    "- corrections superseding what they correct": {"supersede_corrections": False},
    "- recency": {"recency_weight": 0.0},
    "- informativeness prior": {"informative_weight": 0.0},
    "- question penalty": {"question_penalty": 0.0},
    "- speaker rewrite of the question": {"speaker_rewrite": False},
    "- context bundle": {"context_weight": 0.0, "turn_context_weight": 0.0},
    "- temporal bundle": {"temporal_weight": 0.0},
    "64 candidates a bundle (default 256)": {"dialogue_candidates": 64},
    "dense bundles only": {**NO_CHANNELS},
    "before the channels (dense, context 0.25)": {**NO_CHANNELS, "turn_context_weight": 0.0},
    "topic bundle only": {**NO_CHANNELS, "context_weight": 0.0, "turn_context_weight": 0.0, "temporal_weight": 0.0},
    "lexical only": {**NO_CHANNELS, "lexical_weight": 1.0, "dialogue_lexical_weight": 1.0, "topic_weight": 0.0, "context_weight": 0.0,
                     "turn_context_weight": 0.0, "temporal_weight": 0.0},
}


FLAT = "flat: FAISS cosine over the turn embeddings"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _write(path: Path, session, config: ams.MemoryConfig) -> tuple[dict[str, str], float]:
    with ams.Memory.open(path, config=config) as mem:
        t0 = time.perf_counter()
        ids = []
        for i in range(0, len(session.facts), 256):  # as the session-viability benchmark writes
            ids += mem.write_many([{"text": f.text, "ts": f.ts, "session": f.session, "speaker": f.speaker}
                                   for f in session.facts[i : i + 256]])
        rate = len(ids) / (time.perf_counter() - t0)
    return dict(zip(ids, (f.id for f in session.facts))), rate


def _recall(path: Path, session, fact_of, config: ams.MemoryConfig, method: str, now: float) -> tuple[float, float]:
    r1 = r5 = 0
    with ams.Memory.open(path, config=config) as mem:
        for q in session.queries:
            got = [fact_of[h.id] for h in mem.search(q.text, k=5, method=method, now=now)]
            r1 += bool(got[:1] and got[0] in q.fact_ids)
            r5 += bool(set(got) & set(q.fact_ids))
    n = max(1, len(session.queries))
    return r1 / n, r5 / n


def _setting(text: str) -> tuple[str, list]:
    """`FIELD=V1,V2,...` of RetrievalConfig, values parsed as JSON ("0.6", "64", "false")."""
    field, _, values = text.partition("=")
    if field not in ams.RetrievalConfig.model_fields or not values:
        raise argparse.ArgumentTypeError(f"expected FIELD=V1,V2,... of RetrievalConfig, got {text!r}")
    return field, [json.loads(v) for v in values.split(",")]


def corrections(args) -> dict:
    """How the correction detector (`ams.turns.is_correction`) marks the generator's corrections
    (its CORRECT templates) and every other turn."""
    from ams.bench.dialogue import CORRECT
    from ams.turns import is_correction

    openers = tuple(t.split("{v}")[0].lower() for t in CORRECT)
    counts = {kind: {"turns": 0, "flagged": 0} for kind in ("correction", "other")}
    for n in args.n:
        for seed in args.seeds:
            session = generate_dialogue(n, seed=seed, split=args.split, n_queries=args.queries)
            for f in session.facts:
                kind = "correction" if f.text.lower().startswith(openers) else "other"
                counts[kind]["turns"] += 1
                counts[kind]["flagged"] += is_correction(f.text)
    for kind, c in counts.items():
        print(f"{kind:<10} {c['flagged']:>5} of {c['turns']:>5} turns read as corrections")
    return {"benchmark": "dialogue-corrections", "split": args.split, "seeds": args.seeds, "n": args.n,
            "counts": counts}


def people(args) -> dict:
    """How the people channel's detector (`ams.turns.named_people`) marks each kind of turn: the gold
    turns, the asides about other people (the generator's ASIDE templates) and everything else."""
    from ams.bench.dialogue import ASIDE
    from ams.turns import named_people

    openers = tuple(t.split("{f}")[0].lower() for t in ASIDE)
    counts = {kind: {"turns": 0, "flagged": 0} for kind in ("gold", "aside", "other")}
    for n in args.n:
        for seed in args.seeds:
            session = generate_dialogue(n, seed=seed, split=args.split, n_queries=args.queries)
            gold = {fid for q in session.queries for fid in q.fact_ids}
            for f in session.facts:
                kind = "gold" if f.id in gold else "aside" if f.text.lower().startswith(openers) else "other"
                counts[kind]["turns"] += 1
                counts[kind]["flagged"] += bool(named_people(f.text))
    for kind, c in counts.items():
        print(f"{kind:<6} {c['flagged']:>5} of {c['turns']:>5} turns name someone as possessor or subject")
    return {"benchmark": "dialogue-people", "split": args.split, "seeds": args.seeds, "n": args.n, "counts": counts}


def retrieval(args) -> dict:
    variants = VARIANTS
    if args.sweep:  # one field swept instead of the ablations, each on top of --set
        field, values = args.sweep
        variants = {f"{field}={v}": {field: v} for v in values}
    fixed = {field: value for field, (value,) in args.set}
    rows = []
    for n in args.n:
        for seed in args.seeds:
            make = generate_dialogue if args.session == "dialogue" else generate_session
            session = make(n, seed=seed, split=args.split, n_queries=args.queries)
            now = max(f.ts for f in session.facts) + 86400
            with tempfile.TemporaryDirectory() as tmp:
                base, path = ams.MemoryConfig(), Path(tmp) / "store.db"
                fact_of, rate = _write(path, session, base)
                for name, over in variants.items():
                    cfg = base.model_copy(update={"retrieval": base.retrieval.model_copy(update={**fixed, **over})})
                    rows.append({"n": n, "seed": seed, "variant": name,
                                 **dict(zip(("r1", "r5"), _recall(path, session, fact_of, cfg, "ams", now)))})
                rows.append({"n": n, "seed": seed, "variant": FLAT,
                             **dict(zip(("r1", "r5"), _recall(path, session, fact_of, base, "flat", now)))})
                print(f"N={n} seed={seed}: {len(session.queries)} questions, written at {rate:.0f} turns/s",
                      file=sys.stderr, flush=True)
    table = []
    for n in args.n:
        for name in [*variants, FLAT]:
            sel = [r for r in rows if r["n"] == n and r["variant"] == name]
            table.append({"n": n, "variant": name, "recall_at_1": round(statistics.mean(r["r1"] for r in sel), 3),
                          "recall_at_5": round(statistics.mean(r["r5"] for r in sel), 3)})
    print(f"{'N':>5}  {'variant':<42} {'r@1':>5} {'r@5':>5}")
    for t in table:
        print(f"{t['n']:>5}  {t['variant']:<42} {t['recall_at_1']:>5.2f} {t['recall_at_5']:>5.2f}")
    return {"benchmark": f"{args.session}-retrieval", "split": args.split, "seeds": args.seeds, "queries": args.queries,
            "table": table, "runs": rows}


def answers(args) -> dict:
    out = {"benchmark": "dialogue-answers", "split": args.split, "seed": args.seeds[0], "runs": [],
           "neighbour_turns_default": ams.MemoryConfig().retrieval.neighbour_turns}
    sweeps = [("modes", args.modes, {})] + [
        (f"neighbour_turns={t}", ("text",), {"retrieval": {"neighbour_turns": t}}) for t in args.neighbours]
    for label, modes, store_config in sweeps:
        cfg = BenchConfig(session="dialogue", ns=tuple(args.n), modes=tuple(modes), k=args.k, seed=args.seeds[0],
                          queries=args.queries, split=args.split, store_config=store_config or None)
        report = run(cfg, progress=not args.quiet)
        for r in report["results"]:
            out["runs"].append({"sweep": label, **{k: v for k, v in r.items() if k != "answers"},
                                "answers": r["answers"]})
            print(f"{label:<18} N={r['n']:<5} {r['mode']:<7} hit {r['hit_rate']:.2f}  r@1 "
                  f"{'-' if r['recall_at_1'] is None else format(r['recall_at_1'], '.2f')}  "
                  f"tokens {r['mean_prompt_tokens']:.0f}", flush=True)
    return out


def plot(report_path: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(Path(report_path).read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    modes = [r for r in report["runs"] if r["sweep"] == "modes"]
    default = report.get("neighbour_turns_default", 1)
    sweep = [r for r in report["runs"] if r["sweep"] != "modes"]
    sweep += [{**r, "sweep": f"neighbour_turns={default}"} for r in modes if r["mode"] == "text"]
    sweep.sort(key=lambda r: r["mean_prompt_tokens"])
    for r in modes:
        ax.scatter(r["mean_prompt_tokens"], r["hit_rate"], s=40)
        ax.annotate(r["mode"], (r["mean_prompt_tokens"], r["hit_rate"]), textcoords="offset points", xytext=(5, 4))
    if sweep:
        ax.plot([r["mean_prompt_tokens"] for r in sweep], [r["hit_rate"] for r in sweep], "k--", marker="s",
                label="text, neighbour turns swept")
        for r in sweep:
            ax.annotate(r["sweep"].split("=")[1], (r["mean_prompt_tokens"], r["hit_rate"]), textcoords="offset points",
                        xytext=(5, -12), fontsize=8)
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("mean prompt tokens")
    ax.set_ylabel("hit-rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    n = sorted({r["n"] for r in report["runs"]})
    ax.set_title(f"dialogue, {report['split']} split, N = {', '.join(map(str, n))} turns, SmolLM2-135M-Instruct",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("retrieval", "answers", "people", "corrections", "plot"))
    p.add_argument("report", nargs="?", help="plot: the answers report (JSON) to draw")
    p.add_argument("--out", default="dialogue_answers.png", help="plot: the PNG to write")
    p.add_argument("--session", default="dialogue", choices=("dialogue", "synthetic"),
                   help="chat transcripts, or the fact sessions of the session-viability benchmark (retrieval)")
    p.add_argument("--n", type=_ints, default=[1000], help="transcript lengths in turns")
    p.add_argument("--seeds", type=_ints, default=[0])
    p.add_argument("--queries", type=int, default=30, help="questions per transcript")
    p.add_argument("--split", default="heldout", choices=("heldout", "train"))
    p.add_argument("--k", type=int, default=3, help="turns retrieved per question (answers)")
    p.add_argument("--modes", type=lambda s: s.split(","), default=["full", "flat", "text", "hybrid", "none", "oracle"])
    p.add_argument("--neighbours", type=_ints, default=[0, 1, 2], help="neighbour_turns values swept (answers)")
    p.add_argument("--sweep", type=_setting, help="retrieval: FIELD=V1,V2,... of RetrievalConfig, swept instead "
                   "of the ablations (e.g. people_weight=0,0.3,0.6)")
    p.add_argument("--set", type=_setting, action="append", default=[],
                   help="retrieval: FIELD=VALUE of RetrievalConfig under every variant (repeatable)")
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.what == "answers" and len(args.seeds) != 1:
        p.error("answers asks one transcript's questions: give one --seeds value")
    if any(len(values) != 1 for _, values in args.set):
        p.error("--set takes one value: FIELD=VALUE")
    if args.what == "plot":
        if not args.report:
            p.error("plot needs the answers report")
        plot(args.report, args.out)
        return
    report = {"retrieval": retrieval, "answers": answers, "people": people, "corrections": corrections}[args.what](args)
    report["command"] = "python " + " ".join(sys.argv)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
