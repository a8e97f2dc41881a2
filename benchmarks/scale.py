"""Scale: write throughput, retrieval latency and recall, bytes per memory, reopen time, peak RSS.

    .venv/bin/python benchmarks/scale.py --n 10000 [--backbone smollm2-135m-instruct] [--batch 500]
    .venv/bin/python benchmarks/scale.py --n 100000 --index-only

Store mode builds a real store with `Memory.write_many` (batches of --batch) from the synthetic
generator's train-split facts (sessions of 10,000 facts, several seeds, one session id per day),
then measures (torch is set to one thread for the retrieval part; numpy's BLAS keeps its default,
2 threads on this machine):
- write throughput, memories/s, and the batches during which a codec set retrained;
- retrieval: `fuse` over the three bundles' trees (what `search` runs, query embedding excluded)
  against the same fusion scored exactly over every row, p50/p95 ms and recall@10, for the
  generator's questions; end-to-end `Memory.search` p50 (query embedding included);
- bytes per memory: vector data by coded/raw, text, and the whole SQLite file;
- reopen: `Memory.open` plus the first answered `search` (models already loaded in the process);
- peak RSS of the process.
--pq-early codes every vector with the PQ residual from 1,024 vectors on (`min_entries` =
`pq_min_train` = 1024), which is the regime a default store reaches past about 10,000 memories
(its sets then train on at least 4,096 vectors, and the first PQ version re-codes every earlier row):
it measures that regime's bytes and recall at a size this CPU can encode.
--index-only skips the store (encoding 10^5 memories with SmolLM2 takes over an hour on 2 cores)
and measures the retrieval part alone on the real MiniLM vectors of N generated facts: the topic
tree against FAISS exact search, p50/p95 and recall@10, and the tree's build time.
Results go to benchmarks/results/scale_<n>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import ams
from ams.bench.synthetic import generate_session
from ams.retrieval import DirectionTree, FlatIndex, fuse


def facts_and_questions(n: int) -> tuple[list[dict], list[str]]:
    items, questions, seed = [], [], 0
    while len(items) < n:
        s = generate_session(10_000, seed=seed, split="train")
        shift = seed * 300 * 86400.0  # each seed's nine months follow the previous ones
        items += [{"text": f.text, "ts": f.ts + shift, "session": f"s{seed}-{f.session}"} for f in s.facts]
        questions += [q.text for q in s.queries]
        seed += 1
    return items[:n], questions


def pct(xs: list[float]) -> dict:
    return {"p50_ms": round(1000 * float(np.median(xs)), 3), "p95_ms": round(1000 * float(np.percentile(xs, 95)), 3)}


def retrieval(mem: ams.Memory, questions: list[str], now: float) -> dict:
    points = [mem._query_points(q, None, now) for q in questions]  # embedding excluded from the timing
    rc = mem.config.retrieval
    weights = {"topic": rc.topic_weight, "context": rc.context_weight, "temporal": rc.temporal_weight}
    index = mem._index
    fuse(index, points[0], weights, k=10, candidates=rc.candidates)  # builds the trees
    tree_s, exact_s, recall = [], [], []
    for p in points:
        t = time.perf_counter()
        _, rows, _ = fuse(index, p, weights, k=10, candidates=rc.candidates)
        tree_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        alive = np.flatnonzero(index["topic"].alive)
        total = sum(w * (index[b].x[alive] @ p[b]) for b, w in weights.items())
        exact = alive[np.argsort(-total, kind="stable")[:10]]
        exact_s.append(time.perf_counter() - t)
        recall.append(len(set(rows.tolist()) & set(exact.tolist())) / 10)
    e2e = []
    for q in questions[:50]:
        t = time.perf_counter()
        mem.search(q, k=5, now=now)
        e2e.append(time.perf_counter() - t)
    return {"fused_tree": pct(tree_s), "fused_exact_scan": pct(exact_s), "recall_at_10": float(np.mean(recall)),
            "search_end_to_end": pct(e2e)}


def store_mode(n: int, backbone: str, batch: int, pq_early: bool) -> dict:
    items, questions = facts_and_questions(n)
    path = Path(tempfile.mkdtemp()) / "scale.db"
    out: dict = {"n": n, "backbone": backbone, "batch": batch, "pq_early": pq_early, "retrain_batches": []}
    config = ams.MemoryConfig(kakeya=ams.KakeyaConfig(min_entries=1024, pq_min_train=1024)) if pq_early else None
    with ams.Memory.open(path, backbone=backbone, config=config) as mem:
        mem.write_many(items[:8])  # load the models before the clock starts
        times, codecs = [], len(mem.store.codecs())
        t0 = time.time()
        for i in range(8, n, batch):
            t = time.perf_counter()
            mem.write_many(items[i : i + batch])
            times.append(time.perf_counter() - t)
            if len(mem.store.codecs()) != codecs:
                codecs = len(mem.store.codecs())
                out["retrain_batches"].append({"memories": min(i + batch, n), "seconds": round(times[-1], 2)})
            print(f"{min(i + batch, n)}/{n} memories, {batch / times[-1]:.1f}/s", flush=True)
        wall = time.time() - t0
        out["write_memories_per_s"] = round((n - 8) / wall, 2)
        out["write_median_batch_s"] = round(float(np.median(times)), 2)
        db = mem.store.db
        out["bytes_per_memory"] = {
            "vectors_coded": db.execute("SELECT sum(length(data)) FROM vectors WHERE version > 0").fetchone()[0] / n,
            "vectors_raw": (db.execute("SELECT sum(length(data)) FROM vectors WHERE version = 0").fetchone()[0] or 0) / n,
            "text": db.execute("SELECT sum(length(CAST(text AS BLOB))) FROM memories").fetchone()[0] / n,
            "codec_frames": db.execute("SELECT sum(length(data)) FROM codecs").fetchone()[0] / n,
            "tables": {k: v / n for k, v in mem.store.bytes_by_table().items()},
        }
        out["codecs"] = [{"set": s, "version": v, "trained_on": t} for s, v, t, _ in mem.store.codecs()]
        now = items[-1]["ts"] + 86400
        torch.set_num_threads(1)
        out["retrieval"] = retrieval(mem, questions[:200], now)
    out["file_bytes_per_memory"] = (path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob("scale.db-*"))) / n
    t = time.perf_counter()
    with ams.Memory.open(path, backbone=backbone) as mem:
        mem.search(questions[0], k=5, now=now)
        out["reopen_to_first_search_s"] = round(time.perf_counter() - t, 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def index_mode(n: int) -> dict:
    from ams.memory import _shared_embedder

    items, questions = facts_and_questions(n)
    emb = _shared_embedder()
    t = time.time()
    texts = [it["text"] for it in items]
    xb = np.concatenate([emb.encode(texts[i : i + 512]).numpy() for i in range(0, n, 512)])
    encode_s = time.time() - t
    xq = emb.encode(questions[:200]).numpy()
    torch.set_num_threads(1)
    _, exact = FlatIndex(xb).search(xq, 10)
    rc = ams.RetrievalConfig()
    t = time.time()
    tree = DirectionTree(branching=rc.branching, leaf_size=rc.leaf_size, beam=rc.beam).build(xb)
    out = {"n": n, "minilm_encode_per_s": round(n / encode_s, 1), "tree_build_s": round(time.time() - t, 2),
           "tree_nodes": len(tree.centroids), "beams": []}
    for beam in (rc.beam, 2 * rc.beam, 4 * rc.beam, 8 * rc.beam):
        tree.beam = beam
        lat, rec, scanned = [], [], []
        for i, q in enumerate(xq):
            t = time.perf_counter()
            _, rows = tree.search(q, 10)
            lat.append(time.perf_counter() - t)
            rec.append(len(set(rows.tolist()) & set(exact[i].tolist())) / 10)
            scanned.append(len(tree.reach(q)))
        out["beams"].append({"beam": beam, **pct(lat), "recall_at_10": float(np.mean(rec)),
                             "rows_scanned_median": int(np.median(scanned))})
        print(out["beams"][-1], flush=True)
    index = FlatIndex(xb)
    lat = []
    for q in xq:
        t = time.perf_counter()
        index.search(q, 10)
        lat.append(time.perf_counter() - t)
    out["faiss_exact"] = pct(lat)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--backbone", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--index-only", action="store_true")
    ap.add_argument("--pq-early", action="store_true")
    args = ap.parse_args()
    t = time.time()
    out = index_mode(args.n) if args.index_only else store_mode(args.n, args.backbone, args.batch, args.pq_early)
    out["command"] = "python benchmarks/scale.py " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items() if v is not False)
    out["wall_s"] = round(time.time() - t, 1)
    tag = "_index" if args.index_only else "_pq" if args.pq_early else ""
    path = Path("benchmarks/results") / f"scale_{args.n}{tag}.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
