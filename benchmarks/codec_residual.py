"""Why the Kakeya residual is dense int8: relative reconstruction error on held-out MiniLM vectors.

    .venv/bin/python benchmarks/codec_residual.py                 # templated sentences
    .venv/bin/python benchmarks/codec_residual.py --corpus docs   # prose from installed packages' docs

Sentences come from a seeded template generator (900 distinct sentences about many relations; low
rank), or from the English prose in the installed packages' markdown files and transformers' model docstrings (diverse; the set
depends on the installed versions).
Compared, at several training sizes: the shipped codec (completed PCA frame, int8 residual over all
d coordinates) and the alternative a top-k sparse residual inside the top-r PCA subspace would give
(k int8 values + uint16 indices), both with the same alpha / segment / t coarse part.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import random
import re
import sys
from pathlib import Path

import numpy as np

from ams.embedder import SentenceEncoder
from ams.kakeya import KakeyaCodec


def sentences(n: int, seed: int = 0) -> list[str]:
    people = ["my sister", "my brother", "my boss", "my neighbour", "my son", "my aunt", "my friend Lea", "I"]
    verbs = ["loves", "hates", "collects", "studies", "writes about", "is learning", "dreams of", "sells"]
    things = ["jazz records", "Thai food", "old maps", "marine biology", "chess openings", "sourdough", "Mandarin",
              "vintage cars", "orchids", "tax law", "mountain bikes", "Greek myths", "beekeeping", "watercolours"]
    when = ["every weekend", "since 2019", "after work", "in the winter", "on holidays", "with friends"]
    rows = [f"{p.capitalize()} {v} {t} {w}." for p, v, t, w in itertools.product(people, verbs, things, when)]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def doc_sentences(n: int, seed: int = 0) -> list[str]:
    site = Path(np.__file__).parents[1]
    found: set[str] = set()
    files = glob.glob(str(site / "**" / "*.md"), recursive=True)
    files += glob.glob(str(site / "transformers" / "models" / "*" / "modeling_*.py"))  # docstrings
    for f in sorted(files):
        for s in re.split(r"(?<=[.!?])\s+", Path(f).read_text(errors="ignore")):
            s = " ".join(s.split())
            if 40 < len(s) < 160 and re.match(r"^[A-Z][a-z ,']+", s) and not re.search(r"[`_=(){}\[\]<>#|*\\]", s):
                found.add(s)
    rows = sorted(found)
    random.Random(seed).shuffle(rows)
    return rows[:n]


def sparse_error(codec: KakeyaCodec, x: np.ndarray, k: int) -> np.ndarray:
    """Error of keeping only the top-k residual coordinates inside the top-r PCA directions."""
    z = (x - codec.mean) @ codec.rotation.T
    alpha = z @ codec.t_dir
    zp = z - np.outer(alpha, codec.t_dir)
    seg = np.argmax(zp @ codec.centres.T, axis=1)
    t = np.einsum("nd,nd->n", zp, codec.centres[seg])
    res = (zp - t[:, None] * codec.centres[seg])[:, : codec.rank]
    keep = np.argsort(-np.abs(res), axis=1)[:, :k]
    sparse = np.zeros_like(z)
    np.put_along_axis(sparse, keep, np.take_along_axis(res, keep, axis=1), axis=1)
    z_hat = np.outer(alpha, codec.t_dir) + t[:, None] * codec.centres[seg] + sparse
    x_hat = z_hat @ codec.rotation + codec.mean
    return np.linalg.norm(x_hat - x, axis=1) / np.linalg.norm(x, axis=1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", choices=["templates", "docs"], default="templates")
    corpus = p.parse_args().corpus
    texts = sentences(900) if corpus == "templates" else doc_sentences(900)
    if len(texts) < 300:
        sys.exit(f"only {len(texts)} sentences found")
    x = SentenceEncoder.shipped().encode(texts).numpy()
    test = x[-200:]
    print(f"corpus {corpus}: {len(texts)} sentences, the last 200 held out")
    print(f"{'train n':>7} {'rank r':>6} | {'dense int8':>10} {'bytes':>5} | "
          + " | ".join(f"top-{k} sparse  bytes" for k in (32, 64, 128)))
    for n in sorted({64, 256, len(texts) - 200}):
        codec = KakeyaCodec(x.shape[1]).train(x[:n])
        dense = np.linalg.norm(codec.decode(codec.encode(test)) - test, axis=1) / np.linalg.norm(test, axis=1)
        cells = [f"{np.median(sparse_error(codec, test, k)):>11.3f}  {8 + 3 * min(k, codec.rank):>5}" for k in (32, 64, 128)]
        print(f"{n:>7} {codec.rank:>6} | {np.median(dense):>10.4f} {codec.code_size:>5} | " + " | ".join(cells))
    print("(median relative error on 200 held-out sentences; raw fp32 is 1536 bytes, fp16 768)")


if __name__ == "__main__":
    main()
