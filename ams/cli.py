"""The `ams` command line: demo, chat, inspect, export, import, train, bench.

`inspect` and `export` read the SQLite file directly and load no model; `import`, `chat` and `demo`
go through `ams.Memory`, so they do what the library does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import AmsError


def _open(args: argparse.Namespace):
    from .memory import Memory
    from .store import Store

    backbone = args.backbone
    if backbone is None and Path(args.store).is_file():  # an existing store names its own backbone
        store = Store.open(args.store)
        backbone = store.get_meta("backbone_name")
        store.close()
    return Memory.open(args.store, backbone=backbone or "smollm2-135m-instruct", user_id=args.user)


@contextmanager
def _existing_store(path: str) -> Iterator:
    """The raw store of an existing file, for commands that load no model."""
    from .store import Store

    if not Path(path).is_file():
        raise AmsError(f"no store at {path}")
    store = Store.open(path)
    try:
        yield store
    finally:
        store.close()


def cmd_demo(args: argparse.Namespace) -> int:
    """Write the seed session, close the store, reopen it and answer the questions from it."""
    from .memory import Memory
    from .session import is_hit, load_session, seed_path

    session = load_session(seed_path())
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or str(Path(tmp) / "demo.db")
        print(f"writing {len(session.facts)} memories to {path} ...", flush=True)
        with Memory.open(path) as mem:
            if len(mem) == 0:
                mem.write_many([f.text for f in session.facts])
        print("store closed; reopening it to answer.\n", flush=True)
        hits = 0
        with Memory.open(path) as mem:
            for q in session.queries:
                g = mem.generate(q.text, mode=args.mode, max_new_tokens=args.max_new_tokens)
                hit = is_hit(g.text, q.keywords, q.forbidden)
                hits += hit
                print(f"[{'hit ' if hit else 'miss'}] Q: {q.text}\n       A: {g.text}\n"
                      f"       ({len(g.memory_ids)} memories, {g.in_tokens} prompt tokens, "
                      f"{g.retrieve_ms:.0f} ms retrieve, {g.generate_ms:.0f} ms generate)", flush=True)
        print(f"\n{args.mode}: {hits}/{len(session.queries)} answers contain the expected keyword.")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """An interactive chat whose user turns are remembered across runs."""
    with _open(args) as mem:
        print(f"{len(mem)} memories in {args.store}. Type a message; /search TEXT, /forget ID, /quit.")
        for line in sys.stdin if not sys.stdin.isatty() else iter(lambda: input("you> "), None):
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            try:
                if line.startswith("/search "):
                    for h in mem.search(line[8:], k=5):
                        print(f"  {h.score:.3f}  {h.id}  {h.text}")
                elif line.startswith("/forget "):
                    mem.delete(line[8:].strip())
                    print("  forgotten.")
                else:
                    g = mem.generate(line, mode=args.mode, max_new_tokens=args.max_new_tokens, session=args.session)
                    print(f"ams> {g.text}")
                    mem.write(line, session=args.session, role="user")
            except AmsError as e:
                print(f"  error: {e}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Memories, bytes per memory, codec sets and backbone of a store, without loading models."""
    from .kakeya import load_codec

    with _existing_store(args.store) as store:
        n = store.count()
        size = Path(args.store).stat().st_size
        tables = store.bytes_by_table()
        info = {
            "path": args.store, "schema_version": store.schema_version,
            "backbone": store.get_meta("backbone_name"), "backbone_identity": store.get_meta("backbone_identity"),
            "embedder": store.get_meta("embedder"), "memories": n,
            "users": {u: store.count(u) for u in store.users()},
            "file_bytes": size, "bytes_per_memory": round(size / n, 1) if n else None,
            "vector_bytes_per_memory": round(tables.get("vectors", 0) / n, 1) if n and tables else None,
            "codec_sets": [
                {"set": s, "version": v, "kind": k, "trained_on": t, "code_size": load_codec(k, d).code_size}
                for s, v, t, k, d in store.codecs()
            ],
            "snapshots": store.snapshot_info(),
        }
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for k, v in info.items():
                print(f"{k:>24}: {v}")
            for r in store.memory_rows(args.user, limit=args.limit):
                print(f"  {r['id']}  {r['session'] or '-':>8}  {r['text'][:90]}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a user's memories as session-format JSON Lines (to a file or stdout)."""
    with _existing_store(args.store) as store:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
        try:
            for r in store.memory_rows(args.user):
                rec = {"type": "fact", "id": r["id"], "text": r["text"], "ts": r["ts"], "session": r["session"],
                       "user_id": r["user_id"], "role": r["role"]}
                if r["speaker"] is not None:
                    rec["speaker"] = r["speaker"]
                if r["meta"] is not None:
                    rec["meta"] = r["meta"]
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Write the facts of a session-format file, or the messages of a chat transcript, all in one
    transaction."""
    from .session import is_transcript, load_session, load_transcript

    if is_transcript(args.file):
        messages = load_transcript(args.file)
        with _open(args) as mem:
            ids = mem.add_messages(messages, session=args.session)
        print(f"imported {len(ids)} turns into {args.store} for user {args.user!r}")
        return 0
    session = load_session(args.file)
    items = [{"text": f.text, "ts": f.ts, "session": f.session, "role": f.role, "speaker": f.speaker}
             for f in session.facts]
    with _open(args) as mem:
        ids = mem.write_many(items)
    print(f"imported {len(ids)} memories into {args.store} for user {args.user!r}")
    return 0


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e
    return parse


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the session-viability benchmark; print the table, write the JSON report and plot."""
    from .bench.viability import BenchConfig, format_table, plot, run, write_json

    session = args.session
    ns = args.n or {"seed": (10, 20), "dialogue": (100, 1000)}.get(session, (10, 20, 50, 100, 1000))
    cfg = BenchConfig(session=session, ns=ns, modes=args.modes, backbone=args.backbone, k=args.k,
                      max_new_tokens=args.max_new_tokens, seed=args.seed, queries=args.queries, split=args.split,
                      retrieval_only=args.retrieval_only, batch_size=args.batch_size, weights=args.weights,
                      store_config=args.store_config)
    report = run(cfg, progress=not args.quiet)
    print(format_table(report))
    if args.json:
        write_json(report, args.json)
        print(f"report: {args.json}")
    if args.plot:
        plot(report, args.plot)
        print(f"plot: {args.plot}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train the memory channel on the synthetic train split; validate on the held-out split."""
    from .train import MODES, ChannelTrainConfig, train_channel

    cfg = ChannelTrainConfig(backbone=args.backbone, salient_tokens=args.salient_tokens,
                             salient_memories=args.salient_memories, holder_weight=args.holder_weight,
                             salient_order=args.salient_order,
                             train_episodes=args.episodes, val_episodes=args.val_episodes,
                             facts=args.facts, queries=args.queries, k=args.k, modes=args.modes,
                             prefix_target=args.prefix_target, hybrid_target=args.hybrid_target, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, retrieval_weight=args.retrieval_weight,
                             eval_every=args.eval_every, eval_answers=args.eval_answers, seed=args.seed)
    history = train_channel(cfg, out_dir=args.out, progress=not args.quiet, store_check=not args.no_store_check)
    first, last = history["val"][0], history["val"][-1]
    store = history.get("store")
    for mode in MODES:  # both are validated, whichever are trained
        print(f"{mode:>7}: held-out NLL {first[f'{mode}_nll']:.3f} -> {last[f'{mode}_nll']:.3f}, "
              f"hit-rate {first[f'{mode}_hit']:.2f} -> {last[f'{mode}_hit']:.2f}"
              + (f", {store[f'{mode}_hit']:.2f} as a store answers" if store else ""))
    if "text_hit" in first:
        print(f"   text: hit-rate {first['text_hit']:.2f} (no prefix: what hybrid has to beat)"
              + (f", {store['text_hit']:.2f} as a store answers" if store else ""))
    if store:
        print(f"(as a store answers: {store['questions']} held-out questions, each user's facts in a fresh store "
              "with these weights and the default settings)")
    out = Path(args.out)
    print(f"weights: {out / 'channel.safetensors'}\ncurves: {out / 'curves.png'}\nhistory: {out / 'history.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ams", description="Long-term memory for chatbots that run their own LM.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_store(sp: argparse.ArgumentParser, positional: bool) -> None:
        if positional:
            sp.add_argument("store", help="path of the SQLite store")
        else:
            sp.add_argument("--store", required=True, help="path of the SQLite store")
        sp.add_argument("--user", default="default", help="user id whose memories to use (default: default)")

    d = sub.add_parser("demo", help="write the seed session, reopen the store, answer its questions")
    d.add_argument("--store", default=None, help="keep the demo store at this path (default: a temporary file)")
    d.add_argument("--mode", default="hybrid", help="injection mode (default: hybrid)")
    d.add_argument("--max-new-tokens", type=int, default=30)
    d.set_defaults(fn=cmd_demo)

    c = sub.add_parser("chat", help="chat with memory that persists across runs")
    with_store(c, positional=False)
    c.add_argument("--backbone", default=None, help="backbone name or path (default: the store's own)")
    c.add_argument("--mode", default=None,
                   help="injection mode (default: hybrid with trained channel weights, else text)")
    c.add_argument("--session", default=None, help="conversation id for this chat")
    c.add_argument("--max-new-tokens", type=int, default=64)
    c.set_defaults(fn=cmd_chat)

    i = sub.add_parser("inspect", help="show memories, bytes per memory, codec sets and backbone")
    with_store(i, positional=True)
    i.add_argument("--limit", type=int, default=20, help="memories to list")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(fn=cmd_inspect)

    e = sub.add_parser("export", help="export a user's memories as JSON Lines")
    with_store(e, positional=True)
    e.add_argument("-o", "--output", default=None, help="output file (default: stdout)")
    e.set_defaults(fn=cmd_export)

    m = sub.add_parser("import", help="import facts from a session file, or a chat transcript")
    with_store(m, positional=True)
    m.add_argument("file", help="JSON Lines in the session format, or a chat transcript: JSON Lines of "
                   "{role, content, name?, session?, ts?} messages, or a .json list of them")
    m.add_argument("--session", default=None,
                   help="conversation id for transcript messages without one (default: a new id)")
    m.add_argument("--backbone", default=None, help="backbone for a new store (default: smollm2-135m-instruct)")
    m.set_defaults(fn=cmd_import)

    t = sub.add_parser("train", help="train the memory channel (prefix mode) on synthetic users")
    t.add_argument("--out", required=True, help="run directory: checkpoints, weights, curves (resumes if present)")
    t.add_argument("--backbone", default="smollm2-135m-instruct")
    t.add_argument("--salient-tokens", type=int, default=12, help="salient-word tokens per memory in the prefix (0: off)")
    t.add_argument("--salient-memories", type=int, default=0,
                   help="train with the salient words of only the n memories the channel attends to most "
                   "(default 0: of all; answering, the store's own setting decides)")
    t.add_argument("--holder-weight", type=float, default=0.0,
                   help="the holder channel's weight when the examples' memories are retrieved (default 0, "
                   "as the shipped channel was trained; stores use RetrievalConfig.holder_weight)")
    t.add_argument("--salient-order", choices=("surprisal", "content_first"), default="surprisal",
                   help="how each memory's salient words are ranked when the examples are read (default surprisal, "
                   "as the shipped channel was trained; answering, stores use PrefixConfig.salient_order)")
    t.add_argument("--episodes", type=int, default=80, help="synthetic users of the train split")
    t.add_argument("--val-episodes", type=int, default=8, help="synthetic users of the held-out split")
    t.add_argument("--facts", type=_csv(int), default=(20, 50), help="facts per user, cycled (default: 20,50)")
    t.add_argument("--queries", type=int, default=20, help="questions per user")
    t.add_argument("--k", type=int, default=3, help="memories retrieved per question")
    t.add_argument("--modes", type=_csv(str), default=("prefix",),
                   help="modes trained, alternating by step (default: prefix; both are validated)")
    t.add_argument("--prefix-target", default="text", choices=("entity", "text"),
                   help="prefix steps' target: text mode's own answer where it was right (default), or the answer entity")
    t.add_argument("--hybrid-target", default="entity", choices=("entity", "text"),
                   help="hybrid steps' target: the answer entity, or text mode's own answer where it was right")
    t.add_argument("--steps", type=int, default=400)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--retrieval-weight", type=float, default=1.0, help="weight of the attention-toward-gold term")
    t.add_argument("--eval-every", type=int, default=100)
    t.add_argument("--eval-answers", type=int, default=60, help="held-out questions answered per validation")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-store-check", action="store_true",
                   help="skip answering the validation questions as a store does once trained")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(fn=cmd_train)

    b = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    v = b.add_parser("session-viability", help="every injection mode, swept over the number of facts N")
    v.add_argument("--session", default="synthetic",
                   help="seed, synthetic, dialogue (chat transcripts), or a JSONL session file (default: synthetic)")
    v.add_argument("--n", type=_csv(int), default=None, help="sizes to sweep (default: 10,20,50,100,1000; seed: 10,20; dialogue: 100,1000)")
    v.add_argument("--modes", type=_csv(str), default=("full", "prefix", "flat", "text", "hybrid", "none", "oracle"),
                   help="modes, comma-separated (default: all, with oracle)")
    v.add_argument("--backbone", default="smollm2-135m-instruct")
    v.add_argument("--weights", default=None, help="channel weights for prefix and hybrid: a file (`ams train`), or "
                   "untrained (default: the channel shipped for the backbone, if any)")
    v.add_argument("--store-config", type=json.loads, default=None,
                   help='MemoryConfig fields as JSON for the stores it writes, e.g. \'{"prefix": {"salient_tokens": 8}}\'')
    v.add_argument("--k", type=int, default=3, help="memories retrieved per question")
    v.add_argument("--max-new-tokens", type=int, default=30)
    v.add_argument("--seed", type=int, default=0, help="seed of the synthetic session")
    v.add_argument("--queries", type=int, default=20, help="questions per synthetic session")
    v.add_argument("--split", default="heldout", choices=["heldout", "train"], help="synthetic split")
    v.add_argument("--batch-size", type=int, default=8, help="questions generated together (default: 8)")
    v.add_argument("--retrieval-only", action="store_true", help="skip generation; recall, write and size only")
    v.add_argument("--json", default=None, help="write the full report (every answer) here")
    v.add_argument("--plot", default=None, help="write a PNG of hit-rate and prompt tokens against N")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(fn=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except AmsError as e:
        print(f"ams: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
