"""Scale: write throughput, retrieval latency and recall, bytes per memory, reopen time, peak RSS.

    .venv/bin/python benchmarks/scale.py --n 10000 [--backbone smollm2-135m-instruct] [--batch 500]
    .venv/bin/python benchmarks/scale.py --n 100000 --index-only
    .venv/bin/python benchmarks/scale.py --n 1000000 --backbone tiny --batch 2000 --store PATH

Store mode builds a real store with `Memory.write_many` (batches of --batch) from the synthetic
generator's train-split facts (sessions of 10,000 facts, several seeds, one session id per day),
then measures (torch is set to one thread for the retrieval part; numpy's BLAS keeps its default,
2 threads on this machine):
- write throughput, memories/s, and the batches during which a codec set retrained;
- retrieval: `fuse` over the three bundles' indexes (what `search` runs, query embedding excluded)
  against the same fusion scored exactly over every row, p50/p95 ms and recall@10 (rows tied with
  the exact 10th count: duplicate memories have identical keys), for the generator's questions;
  end-to-end `Memory.search` p50 (query embedding included);
- bytes per memory: vector data by coded/raw, text, and the whole SQLite file;
- reopen: `Memory.open` plus the first answered `search` (models already loaded in the process),
  twice: the first reads the rows (and stores a snapshot past 10^4 memories), the second opens
  from that snapshot;
- peak RSS of the process.
--store grows the store at PATH (or creates it) up to N: facts already in it are the generator's
first ones, so a store built by `benchmarks/reopen.py` can be carried on from. --backbone tiny
writes with the 2-layer, 64-wide random Llama that `reopen.py` uses (kept beside the store):
retrieval keys are MiniLM's either way, and SmolLM2 would take about six hours to encode 10^6
memories here. Every tenth batch records its time and the process's resident memory.
--pq-early codes every vector with the PQ residual from 1,024 vectors on (`min_entries` =
`pq_min_train` = 1024), which is the regime a default store reaches past about 10,000 memories
(its sets then train on at least 4,096 vectors, and the first PQ version re-codes every earlier row):
it measures that regime's bytes and recall at a size this CPU can encode.
--index-only skips the store (encoding 10^5 memories with SmolLM2 takes over an hour on 2 cores)
and measures the retrieval part alone, on one thread, on the real MiniLM vectors of N generated
facts: on the topic bundle, the coded scan (by rerank) and the direction tree (by beam) against
FAISS exact search; then `fuse` over all three bundles with either first stage (context keys
mixed over sessions as fact lists are, temporal phases of the write times) against the exact
fusion; p50/p95, recall@10, build times. Run it as
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --n 100000 --index-only
so numpy's BLAS also keeps to one thread (the MiniLM encoding is set back to every core).
--tile T (with --index-only) encodes only N/T facts and makes the rest of the N keys from them:
copy c of a key is the key plus Gaussian noise of 0.01 a dimension (cosine about 0.98 to it),
renormalised, so the store holds T near-paraphrases of each fact, as a large store of one user's
chat would hold repeats. It reaches N = 10^6 where encoding a million facts (about 45 minutes of
MiniLM on this CPU) is out of reach; its figures measure the index at that size, not MiniLM's
spread over a million distinct texts. --no-tree skips the direction tree (slow to build at 10^6).
Results go to benchmarks/results/scale_<n>.json (scale_<n>_index_tile<T>.json with --tile).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import ams
from ams.bench.synthetic import generate_session
from ams.bench.tiny import tiny_llama
from ams.retrieval import FlatIndex, fuse


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
    t = time.perf_counter()
    fuse(index, points[0], weights, k=10, candidates=rc.candidates)  # starts the scans' builds, in the background
    for bundle_index in index.values():
        bundle_index.wait()  # time searches on the scans, not on the exact answers given while they build
    build_s = time.perf_counter() - t
    tree_s, found = [], []
    for p in points:  # the searches first, then their exact references: a reference's passes over
        t = time.perf_counter()  # every key evicted the caches a search after it would have used
        found.append(fuse(index, p, weights, k=10, candidates=rc.candidates)[1])
        tree_s.append(time.perf_counter() - t)
    exact_s, recall = [], []
    dead = ~index["topic"].alive
    for p, rows in zip(points, found):
        t = time.perf_counter()
        total = sum(w * (index[b].x @ p[b]) for b, w in weights.items())
        total[dead] = -np.inf
        kth = -np.partition(-total, 9)[9]
        exact_s.append(time.perf_counter() - t)
        recall.append(tie_recall(rows, total, kth))
    e2e = []
    for q in questions[:50]:
        t = time.perf_counter()
        mem.search(q, k=5, now=now)
        e2e.append(time.perf_counter() - t)
    return {"scans_built_s": round(build_s, 2), "fused": pct(tree_s), "fused_exact_scan": pct(exact_s),
            "recall_at_10": float(np.mean(recall)), "search_end_to_end": pct(e2e)}


def rss_mb() -> float:
    """The process's resident memory now (not its peak), MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def store_mode(n: int, backbone: str, batch: int, pq_early: bool, store: Path | None = None) -> dict:
    items, questions = facts_and_questions(n)
    path = store or Path(tempfile.mkdtemp()) / "scale.db"
    bb = tiny_llama(path.parent / "tiny-backbone") if backbone == "tiny" else backbone
    out: dict = {"n": n, "backbone": backbone, "batch": batch, "pq_early": pq_early, "retrain_batches": [], "batches": []}
    config = ams.MemoryConfig(kakeya=ams.KakeyaConfig(min_entries=1024, pq_min_train=1024)) if pq_early else None
    with ams.Memory.open(path, backbone=bb, config=config) as mem:
        if len(mem) == 0:
            mem.write_many(items[:8])  # load the models before the clock starts
        start = out["grown_from"] = len(mem)
        times, codecs = [], {(s, v) for s, v, *_ in mem.store.codecs()}
        t0 = time.time()
        for i in range(start, n, batch):
            t = time.perf_counter()
            mem.write_many(items[i : i + batch])
            times.append(time.perf_counter() - t)
            done = min(i + batch, n)
            trained = {(s, v) for s, v, *_ in mem.store.codecs()} - codecs
            if trained:
                codecs |= trained
                out["retrain_batches"].append({"memories": done, "seconds": round(times[-1], 2),
                                               "sets": sorted(s for s, _ in trained)})
            if trained or len(times) % 10 == 0 or done == n:
                out["batches"].append({"memories": done, "seconds": round(times[-1], 2), "rss_mb": round(rss_mb())})
            print(f"{done}/{n} memories, {(done - i) / times[-1]:.1f}/s, rss {rss_mb():.0f} MB", flush=True)
        if times:  # none when the store held N already: the run measures the rest only
            out["write_memories_per_s"] = round((n - start) / (time.time() - t0), 2)
            out["write_median_batch_s"] = round(float(np.median(times)), 2)
        db = mem.store.db
        out["bytes_per_memory"] = {
            "vectors_coded": db.execute("SELECT sum(length(data)) FROM vectors WHERE version > 0").fetchone()[0] / n,
            "vectors_raw": (db.execute("SELECT sum(length(data)) FROM vectors WHERE version = 0").fetchone()[0] or 0) / n,
            "text": db.execute("SELECT sum(length(CAST(text AS BLOB))) FROM memories").fetchone()[0] / n,
            "codec_frames": db.execute("SELECT sum(length(data)) FROM codecs").fetchone()[0] / n,
            "tables": {k: v / n for k, v in mem.store.bytes_by_table().items()},
        }
        out["codecs"] = [{"set": s, "version": v, "kind": k, "trained_on": t} for s, v, t, k, _ in mem.store.codecs()]
        now = items[-1]["ts"] + 86400
        torch.set_num_threads(1)
        out["retrieval"] = retrieval(mem, questions[:200], now)
    out["file_bytes_per_memory"] = (path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))) / n
    con = sqlite3.connect(path, isolation_level=None)  # a grown store's snapshot may still be current:
    con.execute("DELETE FROM snapshots")  # the first reopen reads the rows
    con.close()
    for how in ("reopen_to_first_search_s", "reopen_from_snapshot_to_first_search_s"):
        t = time.perf_counter()  # the first open reads the rows (and stores a snapshot past 10^4)
        with ams.Memory.open(path, backbone=bb) as mem:
            mem.search(questions[0], k=5, now=now)
            out[how] = round(time.perf_counter() - t, 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def session_context(x: np.ndarray, items: list[dict], m: int) -> np.ndarray:
    """Each fact's context key as `Memory._context_points` makes it for fact lists: its own vector
    mixed with the mean of its session's last m earlier facts and of all of them."""
    out = np.empty_like(x)
    earlier: dict[str, list[np.ndarray]] = {}
    for i, it in enumerate(items):
        seen = earlier.setdefault(it["session"], [])
        prev = np.mean(seen[-m:], axis=0) if seen and m else np.zeros_like(x[i])
        summary = np.mean(seen[-256:], axis=0) if seen else np.zeros_like(x[i])  # sessions here are short
        v = x[i] + prev + summary
        out[i] = v / np.linalg.norm(v)
        seen.append(x[i])
    return out


def tie_recall(found: np.ndarray, scores: np.ndarray, kth: float) -> float:
    """Share of `found` rows whose exact score reaches the exact k-th best: rows tied with it
    (duplicate memories have identical keys) count, whichever of them a search returns."""
    return float(np.sum(scores[found] >= kth - 1e-5) / len(found))


def index_mode(n: int, tile: int = 1, with_tree: bool = True) -> dict:
    """Retrieval alone on real MiniLM keys: each first stage on the topic bundle, then `fuse` over
    all three bundles (topic, a session-mixed context key, temporal phases) as `search` runs it."""
    import faiss

    from ams.bundles import TemporalBundle
    from ams.memory import _shared_embedder
    from ams.retrieval import BundleIndex

    items, questions = facts_and_questions(n)
    emb = _shared_embedder()
    torch.set_num_threads(os.cpu_count() or 1)
    t = time.time()
    texts = [it["text"] for it in items]
    m = -(-n // tile)  # the facts encoded
    xb = np.concatenate([emb.encode(texts[i : i + 512]).numpy() for i in range(0, m, 512)])
    encode_s = time.time() - t
    if tile > 1:
        rng = np.random.default_rng(0)
        copies = [xb] + [xb + rng.normal(0, 0.01, xb.shape).astype(np.float32) for _ in range(tile - 1)]
        xb = np.concatenate(copies)[:n]
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        del copies
    xq = emb.encode(questions[:200]).numpy()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    cfg = ams.MemoryConfig()
    rc = cfg.retrieval
    out = {"n": n, "tile": tile, "minilm_encode_per_s": round(m / encode_s, 1), "topic": [], "threads": 1}

    exact_d, exact = FlatIndex(xb).search(xq, 10)

    def measure(name: str, search, **extra) -> None:
        lat, rec = [], []
        for i, q in enumerate(xq):
            t = time.perf_counter()
            rows = search(q)
            lat.append(time.perf_counter() - t)
            rec.append(tie_recall(rows, xb @ q, exact_d[i, -1]))
        out["topic"].append({"first_stage": name, **extra, **pct(lat), "recall_at_10": round(float(np.mean(rec)), 4)})
        print(out["topic"][-1], flush=True)

    flat = FlatIndex(xb)
    measure("faiss exact", lambda q: flat.search(q, 10)[1][0])
    scan = BundleIndex(xb.shape[1], exact_below=rc.exact_below, method="scan", rerank=rc.rerank)
    scan.add(xb)
    t = time.time()
    scan.candidates(xq[0], 10)
    out["scan_build_s"] = round(time.time() - t, 2)
    out["scan_bytes_per_row"] = scan.scan.pq.code_size
    for rerank in sorted({32, 64, rc.rerank, 2 * rc.rerank, 4 * rc.rerank}):
        scan.rerank = rerank
        measure("scan", lambda q: scan.candidates(q, 10), rerank=rerank)
    scan.rerank = rc.rerank
    tree = None if not with_tree else BundleIndex(xb.shape[1], exact_below=rc.exact_below, method="tree", branching=rc.branching,
                       leaf_size=rc.leaf_size, beam=rc.beam)
    if tree is not None:
        tree.add(xb)
        t = time.time()
        tree.candidates(xq[0], 10)
        out["tree_build_s"] = round(time.time() - t, 2)
        for beam in (rc.beam, 2 * rc.beam, 4 * rc.beam, 8 * rc.beam):
            tree.tree.beam = beam
            measure("tree", lambda q: tree.candidates(q, 10), beam=beam,
                    rows_scanned_median=int(np.median([len(tree.tree.reach(q)) for q in xq[:50]])))

    temporal = TemporalBundle(cfg.temporal)
    ts = np.array([it["ts"] for it in items])
    keys = {"topic": xb, "context": session_context(xb, items, cfg.context_turns),
            "temporal": temporal.encode(ts, now=0.0, access_count=np.zeros(n)).dirn.numpy()}
    now = float(ts[-1]) + 86400
    tq = temporal.query(now).numpy()
    points = [{"topic": q, "context": q, "temporal": tq} for q in xq]  # no session: context point = own
    weights = {"topic": rc.topic_weight, "context": rc.context_weight, "temporal": rc.temporal_weight}
    out["fused"] = []
    stages = [("scan", rc.candidates), ("scan", rc.dialogue_candidates)] + ([("tree", rc.candidates)] if with_tree else [])
    for method, candidates in stages:
        index = {b: BundleIndex(k.shape[1], exact_below=rc.exact_below, method=method, rerank=rc.rerank,
                                branching=rc.branching, leaf_size=rc.leaf_size, beam=rc.beam) for b, k in keys.items()}
        for b, k in keys.items():
            index[b].add(k)
        t = time.time()
        fuse(index, points[0], weights, k=10, candidates=candidates)
        build_s = time.time() - t
        lat, rec, exact_lat = [], [], []
        for p in points:
            t = time.perf_counter()
            _, rows, _ = fuse(index, p, weights, k=10, candidates=candidates)
            lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            total = sum(w * (keys[b] @ p[b]) for b, w in weights.items())
            kth = np.partition(-total, 9)[9]
            exact_lat.append(time.perf_counter() - t)
            rec.append(tie_recall(rows, total, -kth))
        out["fused"].append({"first_stage": method, "candidates": candidates, "build_s": round(build_s, 2), **pct(lat),
                             "recall_at_10": round(float(np.mean(rec)), 4), "exact_numpy": pct(exact_lat)})
        print(out["fused"][-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--backbone", default="smollm2-135m-instruct",
                    help="a backbone name or directory, or 'tiny': a 2-layer, 64-wide random Llama (beside the store)")
    ap.add_argument("--json", type=Path, help="where the results go (default benchmarks/results/scale_<n>[_tag].json)")
    ap.add_argument("--store", type=Path, help="store mode: grow (or create) the store at this path up to N")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--index-only", action="store_true")
    ap.add_argument("--pq-early", action="store_true")
    ap.add_argument("--tile", type=int, default=1, help="with --index-only: encode N/T facts, jitter T copies")
    ap.add_argument("--no-tree", action="store_true", help="with --index-only: leave out the direction tree")
    args = ap.parse_args()
    if (args.tile != 1 or args.no_tree) and not args.index_only:
        ap.error("--tile and --no-tree go with --index-only")
    t = time.time()
    out = (index_mode(args.n, args.tile, not args.no_tree) if args.index_only
           else store_mode(args.n, args.backbone, args.batch, args.pq_early, args.store))
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ]
    out["command"] = " ".join(env + ["python benchmarks/scale.py"]) + " " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items() if v is not False and v is not None)
    out["wall_s"] = round(time.time() - t, 1)
    tag = ("_index" + (f"_tile{args.tile}" if args.tile > 1 else "")) if args.index_only else "_pq" if args.pq_early else ""
    tag += "_tiny" if args.backbone == "tiny" and not args.index_only else ""
    path = args.json or Path("benchmarks/results") / f"scale_{args.n}{tag}.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
