"""The Kakeya codec: one set's compression of one kind of per-memory vector.

A vector x (d,) is coded in a learned frame:
    z      = R (x - mean)                 R (d, d): PCA directions by variance, completed to a basis
    alpha  = <z, t_dir>                   along t_dir, the owning bundle's axis, within the top-r PCA
                                          directions that keep `variance` of the training energy
    z_perp = z - alpha t_dir
    seg    = argmax_s <z_perp, c_s>       spherical k-means segment of the perpendicular part
    t      = <z_perp, c_seg>              position along the segment's centre line
    res    = z_perp - t c_seg             all d coordinates, coded one of two ways (below)
and decoded as mean + R^T (alpha t_dir + t c_seg + res). One vector's code is, with a dense residual,
    alpha fp16 | t fp16 | scale fp16 | seg uint16 | res int8[d]          (code_size = d + 8 bytes)
or, with a product-quantised residual of m sub-quantisers (`pq_bytes = m`),
    alpha fp16 | t fp16 | seg uint16 | res uint8[m]                      (code_size = m + 6 bytes)
The PQ residual is quantised in the vectors' own coordinates, R^T res = (x - mean) - R^T (alpha t_dir
+ t c_seg), padded to m * ceil(d / m) coordinates, sub-quantiser j taking coordinates j, j + m, ...
(Quantising it in the PCA frame instead, where a few leading coordinates carry most of the energy,
measured worse at 96 and 128 bytes than plain PQ; in the original coordinates the coarse part
only removes energy.) Encoding then needs no rotation at all: alpha, the segment and t are inner
products of x - mean with R^T t_dir and R^T c_s.
Each sub-quantiser has 256 centroids (`ProductQuantizer`, ams/kakeya/pq.py).

The dense residual is for small training sets (a bounded error whatever the size, about 0.01): it
is what every set trains first. Once a version trains on enough vectors for 256 centroids per
sub-quantiser (`KakeyaConfig.pq_min_train`) the registry trains a compact codec, which is what
keeps large stores small: plain PQ by default (`PQCodec`), which at equal bytes reconstructs the
stored fields better than this codec's PQ residual, or Kakeya-PQ with `KakeyaConfig.codec`.

Why a dense residual and not a top-k sparse one: sentence embeddings are close to isotropic, and on
846 held-out MiniLM sentence vectors a top-k int8 residual in the PCA subspace gave a median relative
error of 0.67 (PCA trained on 64 vectors) and 0.25 (on 600, k = 128): energy outside a subspace
learnt from few vectors is simply lost. Completing the PCA basis keeps that energy, and one scale
per vector bounds the error whatever the training size (about 0.01 at 8 bits).

FAISS-style API: `train(xt)`, `encode(x) -> uint8 (n, code_size)`, `decode(codes) -> (n, d)`,
`code_size`; using a codec before `train` raises `NotTrained`. A codec serialises itself to
safetensors bytes (`to_bytes` / `from_bytes`).
Glossary: n vectors, d width, r kept PCA rank, S segments, m PQ sub-quantisers, ds their width.
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..config import KAKEYA_HEADER
from ..errors import NotTrained, StoreCorrupted
from .kmeans import SphericalKMeans, normalize_rows
from .pq import ProductQuantizer, output_array


class KakeyaCodec:
    """PCA frame + axis-aligned direction + segments + int8 residual, one codec per set version.

    Args:
        d: vector width.
        variance: share of the training energy the top-r PCA directions keep (t_dir and the
            segments live in those r directions; the residual covers all d).
        n_segments: spherical k-means segments of the perpendicular part.
        seed: seed of the segment and PQ clustering.
        pq_bytes: 0 for the dense int8 residual; m > 0 for a residual product-quantised by m
            sub-quantisers of one byte each.
    """

    kind = "kakeya"

    def __init__(self, d: int, *, variance: float = 0.99, n_segments: int = 16, seed: int = 0,
                 pq_bytes: int = 0) -> None:
        if pq_bytes < 0 or pq_bytes > d:
            raise ValueError(f"pq_bytes must be between 0 and d = {d}, got {pq_bytes}")
        self.d = d
        self.variance = variance
        self.n_segments = n_segments
        self.seed = seed
        self.pq_bytes = pq_bytes
        self.pq = ProductQuantizer(d, pq_bytes, seed=seed) if pq_bytes else None  # the residual's coder
        self.mean: np.ndarray | None = None  # (d,)
        self.rotation: np.ndarray | None = None  # (d, d), orthonormal rows, PCA order
        self.rank: int = 0  # r
        self.t_dir: np.ndarray | None = None  # (d,), unit, zero beyond r
        self.centres: np.ndarray | None = None  # (S, d), unit, orthogonal to t_dir, zero beyond r

    @property
    def is_trained(self) -> bool:
        return self.rotation is not None

    @property
    def code_size(self) -> int:
        return self.pq_bytes + KAKEYA_HEADER if self.pq_bytes else self.d + 8

    def train(self, xt: np.ndarray, axis: np.ndarray | None = None) -> KakeyaCodec:
        """Learn the frame from training vectors `xt` (n, d).

        Args:
            xt: training vectors, n >= 2.
            axis: (d,) the owning bundle's axis, a direction in this field's space; t_dir is its image on
                the top-r PCA directions. None takes the first principal direction.
        """
        xt = np.asarray(xt, dtype=np.float64)
        if xt.ndim != 2 or xt.shape[1] != self.d or xt.shape[0] < 2:
            raise ValueError(f"train expects (n >= 2, {self.d}) vectors, got {xt.shape}")
        mean = xt.mean(0)
        xc = xt - mean
        # vt (d, d): a complete basis. With n >= d the thin SVD already gives d directions; a full
        # one would also build U (n, n), 2 GB at n = 16,384.
        _, s, vt = np.linalg.svd(xc, full_matrices=len(xc) < self.d)
        energy = np.cumsum(s**2) / max(float((s**2).sum()), 1e-30)
        r = max(1, min(int(np.searchsorted(energy, self.variance)) + 1, len(s)))
        t = vt @ axis if axis is not None else np.eye(self.d)[0]
        t[r:] = 0.0
        if np.linalg.norm(t) < 1e-9:
            t = np.eye(self.d)[0]
        t_dir = t / np.linalg.norm(t)
        z = xc @ vt.T  # (n, d)
        zp = z - np.outer(z @ t_dir, t_dir)
        zp[:, r:] = 0.0
        cent = SphericalKMeans(self.n_segments, seed=self.seed).train(zp).centroids.astype(np.float64)
        cent = normalize_rows(cent - np.outer(cent @ t_dir, t_dir))
        self.mean, self.rotation, self.rank = mean.astype(np.float32), vt.astype(np.float32), r
        self.t_dir, self.centres = t_dir.astype(np.float32), cent.astype(np.float32)
        if self.pq_bytes:
            z32 = z.astype(np.float32)
            alpha, _, seg, t = self._coarse(z32)
            self.pq.train(xc.astype(np.float32) - self._coarse_vectors(alpha.astype(np.float32), t, seg))
        return self

    def _coarse_vectors(self, alpha: np.ndarray, t: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """alpha t_dir + t c_seg mapped back to the vectors' coordinates (n, d) fp32, mean excluded.
        Built in place in one (n, d) array: decoding 10^5 rows is memory-bound, and numpy's
        outer-plus-gather made four of them."""
        out = torch.from_numpy(np.ascontiguousarray(self.centres @ self.rotation))[torch.from_numpy(seg)]
        out.mul_(torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32))[:, None])
        out.addr_(torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32)),
                  torch.from_numpy(np.ascontiguousarray(self.t_dir @ self.rotation)))
        return out.numpy()

    def _coarse(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(alpha fp16, t fp16, seg, t as fp32) of frame coordinates z (n, d): the coarse part."""
        alpha = z @ self.t_dir  # (n,)
        zp = z - np.outer(alpha, self.t_dir)
        seg = np.argmax(zp @ self.centres.T, axis=1)  # (n,)
        t = np.einsum("nd,nd->n", zp, self.centres[seg]).astype(np.float16)
        return alpha.astype(np.float16), t, seg, t.astype(np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes of vectors `x` (n, d) as uint8 rows (n, code_size)."""
        self._check()
        x = np.asarray(x, dtype=np.float32).reshape(-1, self.d)
        n = x.shape[0]
        if self.pq_bytes:
            return self._encode_pq(x)
        z = (x - self.mean) @ self.rotation.T  # (n, d)
        alpha, t, seg, t32 = self._coarse(z)  # fp16 values: code what decode will see
        res = z - np.outer(alpha.astype(np.float32), self.t_dir) - t32[:, None] * self.centres[seg]
        seg_b = seg.astype(np.uint16).reshape(n, 1).view(np.uint8)
        scale = (np.abs(res).max(axis=1) / 127.0).astype(np.float16)
        safe = np.where(scale > 0, scale.astype(np.float32), 1.0)
        q = np.clip(np.rint(res / safe[:, None]), -127, 127).astype(np.int8)  # (n, d)
        head = np.stack([alpha, t, scale], axis=1).view(np.uint8).reshape(n, 6)
        return np.ascontiguousarray(np.concatenate([head, seg_b, q.view(np.uint8)], axis=1))

    def _encode_pq(self, x: np.ndarray) -> np.ndarray:
        """Codes of (n, d) vectors with the PQ residual: the fused Triton kernel on a GPU, its
        PyTorch reference elsewhere (`ams.kernels.kakeya_encode`)."""
        from ams.kernels import kakeya_encode

        device = "cuda" if torch.cuda.is_available() else "cpu"
        # in the vectors' own coordinates: <z, t_dir> = <x - mean, R^T t_dir>, and so for the centres
        arrays = (x, self.mean, self.t_dir @ self.rotation, self.centres @ self.rotation, self.pq.centroids)
        alpha, t, seg, res = (a.cpu().numpy() for a in kakeya_encode(
            *(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays)))
        head = np.stack([alpha, t], axis=1).view(np.uint8).reshape(len(x), 4)
        seg_b = seg.astype(np.uint16).reshape(len(x), 1).view(np.uint8)
        return np.ascontiguousarray(np.concatenate([head, seg_b, res], axis=1))

    def decode(self, codes: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Vectors (n, d) float32 from codes (n, code_size), copied into `out` when given."""
        x = self._decode(codes)
        if out is None:
            return x
        output_array(out, len(x), self.d)[:] = x
        return out

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        self._check()
        codes = np.ascontiguousarray(np.asarray(codes, dtype=np.uint8).reshape(-1, self.code_size))
        if self.pq_bytes:
            head = codes[:, :4].copy().view(np.float16).astype(np.float32)  # (n, 2)
            alpha, t = head[:, 0], head[:, 1]
            seg = codes[:, 4:6].copy().view(np.uint16)[:, 0].astype(np.int64)
        else:
            head = codes[:, :6].copy().view(np.float16).astype(np.float32)  # (n, 3)
            alpha, t, scale = head[:, 0], head[:, 1], head[:, 2]
            seg = codes[:, 6:8].copy().view(np.uint16)[:, 0].astype(np.int64)
        if seg.size and seg.max() >= len(self.centres):
            raise StoreCorrupted("a Kakeya code names a segment its codec does not have")
        if self.pq_bytes:
            out = self._coarse_vectors(alpha, t, seg)
            out += self.mean
            self.pq.add_decoded(out, codes[:, 6:])
            return out
        res = codes[:, 8:].view(np.int8).astype(np.float32) * scale[:, None]  # (n, d)
        z = np.outer(alpha, self.t_dir) + t[:, None] * self.centres[seg] + res
        return (z @ self.rotation + self.mean).astype(np.float32)

    # -- persistence ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        self._check()
        meta = np.array([self.d, self.rank, self.n_segments, self.seed, self.pq_bytes], dtype=np.int64)
        arrays = {"mean": self.mean, "rotation": self.rotation, "t_dir": self.t_dir,
                  "centres": self.centres, "meta": meta, "variance": np.array([self.variance], dtype=np.float64)}
        if self.pq_bytes:
            arrays["pq_centroids"] = self.pq.centroids
        return st_save(arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> KakeyaCodec:
        try:
            t = st_load(data)
            d, rank, n_seg, seed, *rest = (int(v) for v in t["meta"])  # codecs before PQ: 4 fields
            codec = cls(d, variance=float(t["variance"][0]), n_segments=n_seg, seed=seed,
                        pq_bytes=rest[0] if rest else 0)
            codec.mean, codec.rotation, codec.t_dir, codec.centres = (
                t["mean"], t["rotation"], t["t_dir"], t["centres"]
            )
            codec.rank = rank
        except Exception as e:  # safetensors raises several types on bad bytes
            raise StoreCorrupted(f"unreadable Kakeya codec: {e}") from e
        if codec.rotation.shape != (d, d) or codec.mean.shape != (d,) or codec.t_dir.shape != (d,):
            raise StoreCorrupted("Kakeya codec arrays do not match its width")
        if codec.pq_bytes:
            if "pq_centroids" not in t:
                raise StoreCorrupted("Kakeya codec has PQ codes but no PQ centroids")
            codec.pq = ProductQuantizer.from_centroids(d, t["pq_centroids"], seed=seed)
            if codec.pq.m != codec.pq_bytes:
                raise StoreCorrupted("Kakeya codec PQ centroids do not match its code size")
        return codec

    def _check(self) -> None:
        if self.rotation is None:
            raise NotTrained("KakeyaCodec used before train()")
