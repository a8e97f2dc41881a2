"""Spherical k-means: the clustering under the Kakeya codec's segments and the direction trees.

FAISS-style names: `train(x)` learns `centroids` (k, d) of unit norm; `assign(x) -> (D, I)` gives
each row's best cosine and centroid index.
"""

from __future__ import annotations

import numpy as np


def normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


class SphericalKMeans:
    """k-means on the unit sphere (cosine similarity), seeded k-means++ initialisation.

    Args:
        k: number of centroids (fewer when there are fewer distinct points).
        n_iter: Lloyd iterations.
        seed: seed of the initialisation; equal seeds and data give equal centroids.
        init: "k-means++" (greedy, costs about k x n x d x (2 + log k)) or "random" (k distinct
            rows; what the direction trees use, where k-means++ dominated the build time).
    """

    def __init__(self, k: int, *, n_iter: int = 20, seed: int = 0, init: str = "k-means++") -> None:
        if init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++' or 'random', got {init!r}")
        self.k = k
        self.n_iter = n_iter
        self.seed = seed
        self.init = init
        self.centroids: np.ndarray | None = None

    def train(self, x: np.ndarray) -> SphericalKMeans:
        x = normalize_rows(np.asarray(x, dtype=np.float32))
        n = x.shape[0]
        k = min(self.k, n)
        rng = np.random.default_rng(self.seed)
        if self.init == "random":
            return self._lloyd(x, x[np.sort(rng.choice(n, k, replace=False))])
        # greedy k-means++ on cosine distance (1 - cos = half the squared chord): each step draws
        # 2 + log k candidates and keeps the one that lowers the potential most, as scikit-learn does
        trials = 2 + int(np.log(max(k, 1)))
        c = [x[rng.integers(n)]]
        best = 1.0 - x @ c[0]
        for _ in range(1, k):
            p = np.maximum(best, 0)
            if p.sum() <= 0:
                break
            cand = rng.choice(n, size=trials, p=p / p.sum())
            dists = np.minimum(best[None, :], 1.0 - x[cand] @ x.T)  # (trials, n)
            pick = int(np.argmin(np.maximum(dists, 0).sum(1)))
            c.append(x[cand[pick]])
            best = dists[pick]
        return self._lloyd(x, np.stack(c))

    def _lloyd(self, x: np.ndarray, cent: np.ndarray) -> SphericalKMeans:
        for _ in range(self.n_iter):
            assign = np.argmax(x @ cent.T, axis=1)
            onehot = np.zeros((len(cent), len(x)), dtype=np.float32)
            onehot[assign, np.arange(len(x))] = 1.0
            new = onehot @ x  # (k, d) sums of each cluster's rows
            empty = np.linalg.norm(new, axis=1) < 1e-9
            new[empty] = cent[empty]  # an empty cluster keeps its centre
            new = normalize_rows(new)
            if np.allclose(new, cent, atol=1e-6):
                cent = new
                break
            cent = new
        self.centroids = cent.astype(np.float32)
        return self

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best cosine D (n,) and centroid index I (n,) of each row of `x` (n, d)."""
        if self.centroids is None:
            from ..errors import NotTrained

            raise NotTrained("SphericalKMeans.assign called before train")
        sims = normalize_rows(np.asarray(x, dtype=np.float32)) @ self.centroids.T  # (n, k)
        idx = np.argmax(sims, axis=1)
        return sims[np.arange(len(idx)), idx], idx
