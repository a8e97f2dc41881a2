"""How long FAISS product quantisation takes to train here, by route and Lloyd steps, at equal error.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pq_training.py [--json PATH]

`benchmarks/codecs.py` trains FAISS PQ through `index_factory("PQ64")` (an `IndexPQ`), which took
51-212 s a codec on one thread. This trains the same 64-byte PQ of the `content` field (MiniLM
keys of 4,096 train-split memories, scored on 1,000 held-out ones, as codecs.py builds them) once
that way and then as a bare `faiss.ProductQuantizer` with 25, 10 and 5 Lloyd steps, and reports
each one's training time and median relative error, to say whether training cost is a reason to
prefer Kakeya-PQ (about 1 s) over FAISS PQ.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import faiss
import numpy as np

from ams.embedder import SentenceEncoder

_spec = importlib.util.spec_from_file_location("codecs_bench", Path(__file__).with_name("codecs.py"))
codecs_bench = importlib.util.module_from_spec(_spec)  # "codecs" alone is the standard library's
_spec.loader.exec_module(codecs_bench)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    emb = SentenceEncoder.shipped()
    train, _ = codecs_bench.corpus("train", 4096)
    test, _ = codecs_bench.corpus("heldout", 1000)
    xt, xs = (emb.encode([f["text"] for f in facts]).numpy() for facts in (train, test))

    def error(dec: np.ndarray) -> float:
        return round(float(np.median(np.linalg.norm(dec - xs, axis=1) / np.linalg.norm(xs, axis=1))), 4)

    rows = []
    index = faiss.index_factory(384, "PQ64")
    t = time.time()
    index.train(xt)
    rows.append({"route": "index_factory PQ64 (IndexPQ)", "niter": int(index.pq.cp.niter),
                 "train_s": round(time.time() - t, 2), "median_rel_error": error(index.sa_decode(index.sa_encode(xs)))})
    print(rows[-1], flush=True)
    for niter in (25, 10, 5):
        pq = faiss.ProductQuantizer(384, 64, 8)
        pq.cp.niter = niter
        t = time.time()
        pq.train(xt)
        rows.append({"route": "ProductQuantizer", "niter": niter, "train_s": round(time.time() - t, 2),
                     "median_rel_error": error(pq.decode(pq.compute_codes(xs)))})
        print(rows[-1], flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": "OMP_NUM_THREADS=1 python benchmarks/pq_training.py",
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
