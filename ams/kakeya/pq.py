"""Product quantisation: the default codec of a large set, and the residual coder of Kakeya-PQ.

A `ProductQuantizer` codes a d-wide vector with m one-byte sub-quantisers over interleaved
coordinates: sub-quantiser j holds coordinates j, j + m, j + 2m, ... (the vector zero-padded to
m * ds, ds = ceil(d / m)) and has 256 centroids, trained by Lloyd k-means. Interleaving lets m be
any number of bytes up to d, not only a divisor of d, and spreads each vector's leading
coordinates over all sub-quantisers.

`PQCodec` is the plain codec: x is coded as PQ(x - mean), m bytes a vector. At equal bytes it
reconstructs the per-memory fields better than Kakeya-PQ, whose 6-byte coarse part (axis
coordinate, segment, position) takes bytes from the sub-quantisers and gives back less
(`benchmarks/codecs.py`, BENCHMARKS.md), so the registry trains it for large sets by default.
Encoding is the Kakeya encode kernel with an empty coarse part (a zero axis and one zero segment
centre): the Triton kernel on CUDA, its PyTorch reference elsewhere (`ams.kernels.kakeya_encode`).

Glossary: n vectors, d width, m sub-quantisers (bytes of a code), ds = ceil(d / m) their width.
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..errors import NotTrained, StoreCorrupted

N_CENTROIDS = 256  # one byte per sub-quantiser
DECODE_ROWS = 2048  # rows decoded at a time: 3 MB of 384-wide float32, within this CPU's L2 cache


class ProductQuantizer:
    """m sub-quantisers of 256 centroids over interleaved coordinates of d-wide vectors.

    Args:
        d: vector width.
        m: sub-quantisers, one byte of code each; 1 <= m <= d.
        seed: seed of the training sample and the initial centroids.
    """

    def __init__(self, d: int, m: int, *, seed: int = 0) -> None:
        if not 1 <= m <= d:
            raise ValueError(f"a product quantiser of width {d} takes 1 to {d} sub-quantisers, got {m}")
        self.d, self.m, self.seed = d, m, seed
        self.centroids: np.ndarray | None = None  # (m, 256, ds)

    @property
    def ds(self) -> int:
        return -(-self.d // self.m)

    @classmethod
    def from_centroids(cls, d: int, centroids: np.ndarray, *, seed: int = 0) -> ProductQuantizer:
        """A trained quantiser from stored centroids (m, 256, ds); StoreCorrupted if they do not fit d."""
        m = int(centroids.shape[0]) if centroids.ndim == 3 else 0
        if not 1 <= m <= d or centroids.shape != (m, N_CENTROIDS, -(-d // m)) or centroids.dtype != np.float32:
            raise StoreCorrupted(f"PQ centroids {centroids.shape} {centroids.dtype} do not fit width {d}")
        pq = cls(d, m, seed=seed)
        pq.centroids = centroids
        return pq

    def interleave(self, x: np.ndarray) -> np.ndarray:
        """(n, d) vectors -> (n, m, ds) sub-vectors; sub-quantiser j holds coordinates j + i m."""
        pad = np.zeros((len(x), self.m * self.ds), dtype=np.float32)
        pad[:, : self.d] = x
        return np.ascontiguousarray(pad.reshape(len(x), self.ds, self.m).transpose(0, 2, 1))

    def train(self, x: np.ndarray, *, max_points: int = 4096, n_iter: int = 8) -> ProductQuantizer:
        """Lloyd k-means in every sub-quantiser's space on a seeded sample of at most `max_points`
        of `x` (n, d) (16 per centroid).

        Written out rather than FAISS's `ProductQuantizer.train`: deterministic, and at 8 steps on
        4,096 points within 0.004 of FAISS's PQ in median error on the four stored fields
        (`benchmarks/codecs.py`, BENCHMARKS.md)."""
        rng = np.random.default_rng(self.seed)
        x = np.asarray(x, dtype=np.float32)
        if len(x) > max_points:
            x = x[np.sort(rng.choice(len(x), max_points, replace=False))]
        sub = self.interleave(x).transpose(1, 0, 2).copy()  # (m, n, ds)
        m, n, ds = sub.shape
        k = N_CENTROIDS
        c = sub[:, rng.choice(n, k, replace=n < k)].copy()  # (m, k, ds)
        for _ in range(n_iter):
            assign = np.stack([((c[j] ** 2).sum(-1)[None] - 2.0 * (sub[j] @ c[j].T)).argmin(1)
                               for j in range(m)])  # (m, n)
            flat = (assign + (np.arange(m) * k)[:, None]).ravel()
            counts = np.bincount(flat, minlength=m * k)
            xs = sub.reshape(-1, ds)
            sums = np.stack([np.bincount(flat, weights=xs[:, i], minlength=m * k) for i in range(ds)], axis=1)
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c.reshape(-1, ds))
            c = new.reshape(m, k, ds).astype(np.float32)  # an empty cluster keeps its centre
        self.centroids = c
        return self

    def add_decoded(self, out: np.ndarray, codes: np.ndarray) -> None:
        """out (n, d) += the vectors that codes (n, m) name. Gathered straight into the vectors'
        coordinates, one centroid dimension at a time (coordinates i m .. i m + m - 1 are dimension i
        of sub-quantisers 0 .. m - 1, the layout `interleave` makes): gathering (n, m, ds)
        sub-vectors and transposing them back took as long as the rest of decoding at 10^5 rows.
        Rows go `DECODE_ROWS` at a time, so the ds passes over them stay in cache and the gather
        indices are a small array, not an (n, m) int64 one (56 MB at 10^5 rows of 70 bytes)."""
        m = self.m
        offsets = (np.arange(m) * N_CENTROIDS).astype(np.int32)  # sub-quantiser j's rows of a (m * 256,) table
        tables = [np.ascontiguousarray(self.centroids[:, :, i]).ravel() for i in range(self.ds)]
        for a in range(0, len(codes), DECODE_ROWS):
            flat = codes[a : a + DECODE_ROWS].astype(np.int32)
            flat += offsets
            rows = out[a : a + DECODE_ROWS]
            for i, table in enumerate(tables):
                lo, hi = i * m, min((i + 1) * m, self.d)
                if lo >= hi:
                    break
                rows[:, lo:hi] += np.take(table, flat[:, : hi - lo])


class PQCodec:
    """Mean-centred product quantisation: m bytes a vector.

    Args:
        d: vector width.
        pq_bytes: m, the sub-quantisers and the bytes of a code; 1 <= m <= d.
        seed: seed of the PQ clustering.
    """

    kind = "pq"

    def __init__(self, d: int, *, pq_bytes: int, seed: int = 0) -> None:
        self.d, self.pq_bytes, self.seed = d, pq_bytes, seed
        self.pq = ProductQuantizer(d, pq_bytes, seed=seed)
        self.mean: np.ndarray | None = None  # (d,)

    @property
    def is_trained(self) -> bool:
        return self.mean is not None

    @property
    def code_size(self) -> int:
        return self.pq_bytes

    def train(self, xt: np.ndarray, axis: np.ndarray | None = None) -> PQCodec:
        """Learn the mean and the sub-quantisers from `xt` (n >= 2, d). `axis` is accepted and
        unused, so either codec trains through the same call."""
        xt = np.asarray(xt, dtype=np.float32)
        if xt.ndim != 2 or xt.shape[1] != self.d or xt.shape[0] < 2:
            raise ValueError(f"train expects (n >= 2, {self.d}) vectors, got {xt.shape}")
        mean = xt.astype(np.float64).mean(0).astype(np.float32)
        self.pq.train(xt - mean)
        self.mean = mean
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes of vectors `x` (n, d) as uint8 rows (n, m)."""
        from ams.kernels import kakeya_encode

        self._check()
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1, self.d))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        arrays = (x, self.mean, np.zeros(self.d, np.float32), np.zeros((1, self.d), np.float32), self.pq.centroids)
        codes = kakeya_encode(*(torch.from_numpy(a).to(device) for a in arrays))[3]  # no coarse part
        return np.ascontiguousarray(codes.cpu().numpy())

    def decode(self, codes: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Vectors (n, d) float32 from codes (n, m), written into `out` when given (an (n, d)
        float32 array, C-contiguous rows); every byte names a centroid, so any code decodes."""
        self._check()
        codes = np.asarray(codes, dtype=np.uint8).reshape(-1, self.code_size)
        out = output_array(out, len(codes), self.d)
        out[:] = self.mean
        self.pq.add_decoded(out, codes)
        return out

    def to_bytes(self) -> bytes:
        self._check()
        meta = np.array([self.d, self.pq_bytes, self.seed], dtype=np.int64)
        return st_save({"mean": self.mean, "pq_centroids": self.pq.centroids, "meta": meta})

    @classmethod
    def from_bytes(cls, data: bytes) -> PQCodec:
        try:
            t = st_load(data)
            d, m, seed = (int(v) for v in t["meta"])
            codec = cls(d, pq_bytes=m, seed=seed)
            mean, centroids = t["mean"], t["pq_centroids"]
        except Exception as e:  # safetensors raises several types on bad bytes; a bad width ValueError
            raise StoreCorrupted(f"unreadable PQ codec: {e}") from e
        if mean.shape != (d,) or mean.dtype != np.float32:
            raise StoreCorrupted("PQ codec mean does not match its width")
        codec.pq = ProductQuantizer.from_centroids(d, centroids, seed=seed)
        if codec.pq.m != m:
            raise StoreCorrupted("PQ codec centroids do not match its code size")
        codec.mean = mean
        return codec

    def _check(self) -> None:
        if self.mean is None:
            raise NotTrained("PQCodec used before train()")


def output_array(out: np.ndarray | None, n: int, d: int) -> np.ndarray:
    """A decoder's result array: `out` checked, or a new (n, d) float32 one."""
    if out is None:
        return np.empty((n, d), dtype=np.float32)
    if out.shape != (n, d) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous ({n}, {d}) float32 array, got {out.shape} {out.dtype}")
    return out
