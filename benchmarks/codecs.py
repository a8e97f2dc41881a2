"""The shipped codecs against PCA truncation and FAISS product quantisation, at equal bytes per vector.

    .venv/bin/python benchmarks/codecs.py [--train 8192] [--test 2000] [--codecs ...] [--fields ...] [--budgets 32,64]
        [--out benchmarks/results/codecs]

The vectors are the four a memory stores, made from the synthetic generator's sentences: `content`
(MiniLM, 384), `context` (its session mixture, 384), `salient` and `hidden` (SmolLM2, 576). Codecs
train on the train split and are scored on held-out-split sentences, at budgets of 32 to 128 bytes:

    pca-fp16    the top B/2 PCA coordinates as fp16 (FAISS PCAMatrix-style truncation)
    pq          FAISS ProductQuantizer with B one-byte sub-quantisers (d zero-padded to a multiple of B)
    opq-pq      FAISS OPQ rotation + PQ, B bytes (at 64 bytes only: its training is slow)
    ams-pq      the shipped default compact codec (`PQCodec`): B sub-quantisers on x - mean, our trainer
    kakeya-pq   Kakeya with a PQ residual (`codec="kakeya-pq"`): 6 bytes of coarse part + B - 6 sub-quantisers
    kakeya-int8 the shipped small-store codec, d + 8 bytes (one point, for reference)

Scores: median relative L2 error ||x - x'|| / ||x||, and for the retrieval keys (content, context)
recall@10 of exact search over the decoded test vectors against exact search over the raw ones,
for 200 held-out questions. Results go to <out>.json and a plot to <out>.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from ams.backbone import load_backbone
from ams.bench.synthetic import generate_session
from ams.embedder import SentenceEncoder
from ams.kakeya import KakeyaCodec, PQCodec, canonical_axis
from ams.kakeya.kmeans import normalize_rows
from ams.memory import Memory

BUDGETS = (32, 48, 64, 96, 128)


def corpus(split: str, n: int) -> tuple[list[dict], list[str]]:
    facts, questions, seed = [], [], 0
    while len(facts) < n:
        s = generate_session(10_000, seed=seed, split=split)
        facts += [{"text": f.text, "session": f.session} for f in s.facts]
        questions += [q.text for q in s.queries]
        seed += 1
    return facts[:n], questions


def vectors(facts: list[dict], emb: SentenceEncoder, bb) -> dict[str, np.ndarray]:
    texts = [f["text"] for f in facts]
    content = np.concatenate([emb.encode(texts[i : i + 512]).numpy() for i in range(0, len(texts), 512)])
    context, seen = np.zeros_like(content), {}
    for i, f in enumerate(facts):  # the context bundle's mixture, as Memory writes it
        earlier = seen.setdefault(f["session"], [])
        context[i] = Memory._mix(content[i], earlier, 3)
        earlier.append(content[i])
    enc = bb.encode(texts, batch_size=32)
    return {"content": content, "context": context, "salient": enc.salient.numpy(), "hidden": enc.hidden.numpy()}


class _Pca:
    def __init__(self, nbytes: int) -> None:
        self.r = nbytes // 2

    def train(self, xt):
        self.mean = xt.mean(0)
        self.vt = np.linalg.svd(xt - self.mean, full_matrices=False)[2][: self.r]
        return self

    def roundtrip(self, x):
        z = ((x - self.mean) @ self.vt.T).astype(np.float16).astype(np.float32)
        return z @ self.vt + self.mean


class _Faiss:
    def __init__(self, d: int, nbytes: int, opq: bool) -> None:
        self.d, self.dp = d, -(-d // nbytes) * nbytes
        self.index = faiss.index_factory(self.dp, (f"OPQ{nbytes}," if opq else "") + f"PQ{nbytes}")

    def _pad(self, x):
        out = np.zeros((len(x), self.dp), dtype=np.float32)
        out[:, : self.d] = x
        return out

    def train(self, xt):
        self.index.train(self._pad(xt))
        return self

    def roundtrip(self, x):
        return self.index.sa_decode(self.index.sa_encode(self._pad(x)))[:, : self.d]


class _Shipped:
    def __init__(self, codec: KakeyaCodec | PQCodec) -> None:
        self.codec = codec

    def train(self, xt):
        self.codec.train(xt, axis=canonical_axis(xt))
        return self

    def roundtrip(self, x):
        return self.codec.decode(self.codec.encode(x))


def make(name: str, d: int, nbytes: int):
    if name == "pca-fp16":
        return _Pca(nbytes)
    if name in ("pq", "opq-pq"):
        return _Faiss(d, nbytes, opq=name == "opq-pq")
    if name == "ams-pq":
        return _Shipped(PQCodec(d, pq_bytes=nbytes))
    if name == "kakeya-pq":
        return _Shipped(KakeyaCodec(d, pq_bytes=nbytes - 6))
    return _Shipped(KakeyaCodec(d))


def recall_at_10(raw: np.ndarray, dec: np.ndarray, queries: np.ndarray) -> float:
    want = np.argsort(-(queries @ normalize_rows(raw).T), axis=1)[:, :10]
    got = np.argsort(-(queries @ normalize_rows(dec).T), axis=1)[:, :10]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=8192)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results/codecs")
    ap.add_argument("--codecs", default="pca-fp16,pq,opq-pq,ams-pq,kakeya-pq,kakeya-int8",
                    help="comma-separated subset of the codecs above")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="comma-separated bytes per vector")
    ap.add_argument("--fields", default="content,context,salient,hidden",
                    help="comma-separated subset of the four fields (FAISS trains on one thread: two runs of two "
                         "fields each use both cores of a 2-core machine)")
    args = ap.parse_args()
    if unknown := set(args.fields.split(",")) - {"content", "context", "salient", "hidden"}:
        ap.error(f"unknown fields: {sorted(unknown)}")
    faiss.omp_set_num_threads(1)  # FAISS k-means threads spin-wait badly on a shared 2-core machine
    emb, bb = SentenceEncoder.shipped(), load_backbone("smollm2-135m-instruct")
    t0 = time.time()
    train_facts, _ = corpus("train", args.train)
    test_facts, questions = corpus("heldout", args.test)
    xt, xs = vectors(train_facts, emb, bb), vectors(test_facts, emb, bb)
    xq = emb.encode(questions[:200]).numpy()
    print(f"encoded {args.train} + {args.test} memories in {time.time() - t0:.0f} s", flush=True)
    rows = []
    for field in args.fields.split(","):
        d = xt[field].shape[1]
        for name in args.codecs.split(","):
            budgets = {"kakeya-int8": (d + 8,), "opq-pq": (64,)}.get(name, tuple(map(int, args.budgets.split(","))))
            for nbytes in budgets:
                t = time.time()
                codec = make(name, d, nbytes).train(xt[field])
                train_s = time.time() - t
                dec = codec.roundtrip(xs[field])
                err = np.linalg.norm(dec - xs[field], axis=1) / np.linalg.norm(xs[field], axis=1)
                row = {"field": field, "codec": name, "bytes": nbytes, "median_rel_error": float(np.median(err)),
                       "train_s": round(train_s, 2)}
                if field in ("content", "context"):
                    row["recall_at_10"] = recall_at_10(xs[field], dec, xq)
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"command": "python benchmarks/codecs.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
         "train": args.train, "test": args.test, "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = [f for f in ("content", "context", "salient", "hidden") if any(r["field"] == f for r in rows)]
    fig, axes = plt.subplots(1, len(fields), figsize=(4 * len(fields), 3.6), squeeze=False)
    axes = axes[0]
    for ax, field in zip(axes, fields):
        for name in ("pca-fp16", "pq", "opq-pq", "ams-pq", "kakeya-pq"):
            pts = [(r["bytes"], r["median_rel_error"]) for r in rows if r["field"] == field and r["codec"] == name]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_title(field)
        ax.set_xlabel("bytes per vector")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("median relative error (held-out)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
